"""Sentences/s of minilm's SentenceEncoder.encode vs sentence-transformers on PyTorch CPU.

    .venv/bin/python bench/embed_speed.py [--threads 1 2] [--batch-sizes 1 32] [--n 512]
        [--rounds 5] [--torch-python /tmp/torchvenv/bin/python] [--model all-MiniLM-L6-v2]
        [--profile]

The texts are ``--n`` sentences of the built-in corpus (a seeded sample of
minilm.train.encoder_distill.split_sentences). Each engine runs in its own worker
process started with the same thread count (OPENBLAS / OMP / MKL / NUMBA_NUM_THREADS =
T, and ``torch.set_num_threads(T)``): minilm on the numba backend, minilm on the numpy
backend, and, when ``--torch-python`` exists, sentence-transformers (PyTorch CPU) on the
same model folder in that interpreter (minilm never imports torch). Every worker loads
the model and encodes once to warm up; then, in each of ``--rounds`` rounds, the
workers encode all texts in turn (``encode(texts, batch_size=B)``, tokenisation
included, as ``minilm embed`` does), so that load from other users of the machine falls
on all alike. The table gives the median sentences/s and the ratio minilm / torch; the
min cosine between minilm's and torch's embeddings checks that they compute the same
thing. ``--profile`` adds a cProfile of one minilm encode call per backend and batch
size (the functions with the largest own time).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

TORCH_WORKER = r"""
import sys, json, time
import numpy as np
threads, model_dir, texts_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
import torch
torch.set_num_threads(threads)
from sentence_transformers import SentenceTransformer
texts = json.load(open(texts_path))
model = SentenceTransformer(model_dir, device="cpu")
def enc(b):
    with torch.inference_mode():
        return model.encode(texts, batch_size=b, convert_to_numpy=True, show_progress_bar=False)
print("ready " + torch.__version__, flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "quit":
        break
    if cmd[0] == "emb":
        np.save(cmd[2], enc(int(cmd[1])))
        print("ok", flush=True)
        continue
    b = int(cmd[1])
    t0 = time.perf_counter()
    enc(b)
    print(time.perf_counter() - t0, flush=True)
"""


def minilm_worker(backend: str, model: str, texts_path: str) -> None:
    """The minilm side of the protocol: 'warm B', 'run B' -> seconds, 'emb B path',
    'prof B' -> a cProfile table, 'quit'."""
    import numpy as np

    from minilm.backends import use_backend
    from minilm.models import load_pretrained

    use_backend(backend)
    with open(texts_path, encoding="utf-8") as f:
        texts = json.load(f)
    enc, _ = load_pretrained(model)
    print(f"ready {backend}", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "quit":
            break
        b = int(cmd[1])
        if cmd[0] == "emb":
            np.save(cmd[2], enc.encode(texts, batch_size=b))
            print("ok", flush=True)
        elif cmd[0] == "prof":
            import cProfile
            import io
            import pstats

            pr = cProfile.Profile()
            pr.enable()
            enc.encode(texts, batch_size=b)
            pr.disable()
            s = io.StringIO()
            st = pstats.Stats(pr, stream=s)
            st.sort_stats("tottime").print_stats(14)
            total = sum(v[2] for v in st.stats.values())
            print(json.dumps({"total": total, "table": s.getvalue()}), flush=True)
        else:
            t0 = time.perf_counter()
            enc.encode(texts, batch_size=b)
            print(time.perf_counter() - t0, flush=True)


class Worker:
    def __init__(self, name: str, argv: list, threads: int) -> None:
        env = dict(os.environ)
        for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                  "NUMBA_NUM_THREADS"):
            env[k] = str(threads)
        env.update(TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1",
                   TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.name = name
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                  text=True, cwd=ROOT)
        self.info = self._read()

    def _read(self) -> str:
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: the worker stopped (exit {self.p.wait()})")
        return line.strip()

    def ask(self, cmd: str) -> str:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
        except OSError:
            pass
        self.p.wait(timeout=60)


def corpus_texts(n: int, seed: int = 0) -> list:
    import numpy as np

    from minilm.data.corpus import builtin_corpus
    from minilm.train.encoder_distill import split_sentences

    s = split_sentences(builtin_corpus())
    idx = np.random.default_rng(seed).permutation(len(s))[:n]
    return [s[i] for i in sorted(idx)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    p.add_argument("--n", type=int, default=512, help="sentences per encode call")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--backends", nargs="+", default=["numba", "numpy"])
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--torch-python", default="/tmp/torchvenv/bin/python")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--texts", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        minilm_worker(a.worker, a.model, a.texts)
        return
    import numpy as np

    from minilm.models.pretrained import resolve_model_dir

    texts = corpus_texts(a.n)
    model_dir = str(resolve_model_dir(a.model))
    tmp = tempfile.mkdtemp(prefix="embed_speed_")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # texts and embeddings
    texts_path = os.path.join(tmp, "texts.json")
    with open(texts_path, "w", encoding="utf-8") as f:
        json.dump(texts, f)
    have_torch = bool(a.torch_python) and os.path.exists(a.torch_python)
    print(f"{len(texts)} sentences, model {a.model}, rounds {a.rounds}, torch "
          f"{'via ' + a.torch_python if have_torch else 'not available'}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs")
    rows = []
    for threads in a.threads:
        workers = {}
        try:
            for be in a.backends:
                workers[f"minilm {be}"] = Worker(
                    f"minilm {be}", [sys.executable, os.path.abspath(__file__), "--worker", be,
                                     "--texts", texts_path, "--model", a.model], threads)
            if have_torch:
                w = Worker("torch", [a.torch_python, "-c", TORCH_WORKER, str(threads),
                                     model_dir, texts_path], threads)
                workers["sentence-transformers (torch " + w.info.split()[1] + ")"] = w
            for b in a.batch_sizes:
                for w in workers.values():  # warm-up (Numba compiles, caches fill)
                    w.ask(f"run {b}")
                times: dict = {k: [] for k in workers}
                for _ in range(a.rounds):
                    for k, w in workers.items():
                        times[k].append(float(w.ask(f"run {b}")))
                embs = {}
                for k, w in workers.items():
                    path = os.path.join(tmp, f"{len(embs)}.npy")
                    w.ask(f"emb {b} {path}")
                    embs[k] = np.load(path)
                torch_key = next((k for k in workers if k.startswith("sentence")), None)
                for k in workers:
                    sps = len(texts) / statistics.median(times[k])
                    rows.append({"threads": threads, "batch": b, "engine": k, "sps": sps,
                                 "times": times[k]})
                    if torch_key and k != torch_key:
                        u, v = embs[k], embs[torch_key]
                        rows[-1]["min_cos"] = float(((u * v).sum(1) / (
                            np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))).min())
                if torch_key:
                    t_sps = next(r["sps"] for r in rows if r["threads"] == threads
                                 and r["batch"] == b and r["engine"] == torch_key)
                    for r in rows:
                        if r["threads"] == threads and r["batch"] == b:
                            r["ratio"] = r["sps"] / t_sps
                for r in rows[-len(workers):]:
                    print(f"  threads {threads} batch {b:3d}  {r['engine']:<38} "
                          f"{r['sps']:8.1f} sentences/s"
                          + (f"  x{r['ratio']:.2f}" if "ratio" in r else ""), flush=True)
            if a.profile:
                for be in a.backends:
                    for b in a.batch_sizes:
                        prof = json.loads(workers[f"minilm {be}"].ask(f"prof {b}"))
                        print(f"\n--- cProfile: minilm {be}, threads {threads}, batch {b} "
                              f"({prof['total']:.2f} s own time in all)")
                        print(prof["table"])
        finally:
            for w in workers.values():
                w.close()
    print("\n| threads | batch | engine | sentences/s | minilm / torch | min cos vs torch |")
    print("|---:|---:|---|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "n/a"
        mc = f"{r['min_cos']:.6f}" if "min_cos" in r else ""
        print(f"| {r['threads']} | {r['batch']} | {r['engine']} | {r['sps']:.1f} | {ratio} | "
              f"{mc} |")


if __name__ == "__main__":
    main()
