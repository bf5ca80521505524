"""Command line: ``python -m minilm <command>`` (also the ``minilm`` console script).

Commands so far: ``info`` (versions, backends, threads) and ``demo`` (the main job).
"""

from __future__ import annotations

import argparse
import sys


def _info(args: argparse.Namespace) -> int:
    import numpy

    import minilm

    print(f"minilm {minilm.__version__}  (numpy {numpy.__version__}, python {sys.version.split()[0]})")
    print(f"current backend: {minilm.current_backend().name}")
    print(f"available backends: {', '.join(minilm.available_backends())}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    print(
        "minilm demo: the main job (train a small GPT on the built-in corpus and sample "
        "from it) is not built yet; it arrives with the GPT issue. The engine is ready: "
        "try `python -m minilm info` and `make test`."
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minilm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions and backends").set_defaults(func=_info)
    sub.add_parser("demo", help="the main job: train and sample a small GPT").set_defaults(
        func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
