"""The package's import structure: no import cycles between minilm's modules, and no
package importing a package above it (docs: /DESIGN.md, "Conventions").

Every module of minilm (``pkgutil.walk_packages``) is parsed with ``ast``, not
imported, and each of its imports of a minilm module becomes an edge of the module
graph: absolute (``import minilm.nn``, ``from minilm.train import trainer``) and
relative (``from ..parallel import world``, ``from . import comm``), ``from X import
name`` counting as an edge to ``X.name`` when that is a module and to ``X`` otherwise.

Imports inside functions (lazy imports) count like the ones at the top of a file, for
both checks. A lazy import only moves *when* a module is loaded, not the dependency:
a cycle closed by one is still two modules that need each other (the usual way such a
cycle hides), and a lazy import going up the layering is still a lower layer knowing
about a higher one. Imports under ``if TYPE_CHECKING:`` count too: an annotation that
names a higher layer's class is the same dependency.

The root package ``minilm/__init__.py`` is the facade that gathers the public API
(``import minilm as ml; ml.nn``): its own imports are not edges, and a module importing
it (``import minilm``) imports the top layer, which only the commands may. Known
exceptions outside this rule are listed, each with its reason, in KNOWN_EXCEPTIONS.

Layers, top to bottom (a module may import its own layer and any layer below)::

    cli / run / __main__ / minilm  the commands behind ``python -m minilm``, the facade
    train                         Trainer, checkpoints, metrics, generation
    parallel                      MPI, data / tensor / pipeline parallelism, engine
    nn, optim, data, amp, models, quant, search
    functional, creation
    tensor
    autograd
    backends

(``amp``, ``models``, ``quant`` and ``search`` sit beside ``nn``; those that do not
exist yet are simply absent.)
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import minilm

ROOT = "minilm"

# Each package (or top-level module) of minilm -> its layer; higher numbers are above.
LAYERS = {
    "backends": 0,
    "autograd": 1, "cuda": 1,
    "tensor": 2, "finite_diff": 2,
    "functional": 3, "creation": 3,
    "nn": 4, "optim": 4, "data": 4, "amp": 4, "models": 4, "quant": 4, "search": 4,
    "configs": 4,
    "parallel": 5,
    "train": 6,
    "run": 7, "cli": 7, "__main__": 7, "compress": 7, "classify": 7, "pretrain": 7,
    "tune": 7,
    "techniques": 7,
    "viz": 7,
    "": 7,  # the root package minilm/__init__.py: the facade, beside the commands
}

# Known exceptions, each with its reason; an entry that no longer occurs fails
# test_known_exceptions_still_exist, so the list only shrinks.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    """Every module of minilm: dotted name -> source file."""
    found = {ROOT: Path(minilm.__file__)}
    for info in pkgutil.walk_packages(minilm.__path__, prefix=ROOT + "."):
        spec = importlib.util.find_spec(info.name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            found[info.name] = Path(spec.origin)
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(importer: str, node: ast.AST) -> list[tuple[str, int]]:
    """The minilm modules an import statement in ``importer`` names, with its line."""
    out = []
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        assert isinstance(node, ast.ImportFrom)
        if node.level:
            base = importer if _is_package(importer) else importer.rpartition(".")[0]
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = f"{base}.{node.module}" if node.module else base
        else:
            module = node.module or ""
        targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module
                   for alias in node.names]
    for target in targets:
        if target != ROOT and not target.startswith(ROOT + "."):
            continue
        while target not in MODULES and "." in target:  # `import minilm.nn.module.X`
            target = target.rpartition(".")[0]
        if target in MODULES and target != importer:
            out.append((target, node.lineno))
    return out


def _graph(exceptions: bool = False) -> dict[str, dict[str, int]]:
    """importer -> {imported module: line of the first such import}, without the
    KNOWN_EXCEPTIONS edges unless ``exceptions``."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in MODULES.items():
        edges: dict[str, int] = {}
        if name != ROOT:  # the facade's imports are not dependencies of anything
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for target, line in _resolve(name, node):
                        if exceptions or (name, target) not in KNOWN_EXCEPTIONS:
                            edges.setdefault(target, line)
        graph[name] = edges
    return graph


GRAPH = _graph()
FULL_GRAPH = _graph(exceptions=True)


def _layer_of(module: str) -> tuple[str, int]:
    part = module.split(".")[1] if "." in module else ""
    if part not in LAYERS:
        raise AssertionError(f"{module}: its package {part!r} has no layer in "
                             "tests/test_imports.py LAYERS; add it there (and to DESIGN.md)")
    return part, LAYERS[part]


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as
    one cycle through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, set(c)) for c in comps]


def _one_cycle(graph: dict[str, dict[str, int]], comp: set[str]) -> list[str]:
    """A cycle inside a strongly connected component: walk from its smallest module
    until a module repeats."""
    path = [min(comp)]
    while True:
        nxt = min(w for w in graph[path[-1]] if w in comp)
        if nxt in path:
            return path[path.index(nxt):] + [nxt]
        path.append(nxt)


def test_every_module_is_seen():
    for name in ("minilm.tensor", "minilm.autograd", "minilm.train.trainer", "minilm.cli",
                 "minilm.parallel.engine", "minilm.run"):
        assert name in MODULES, name
    assert MODULES["minilm.cli"].name == "cli.py"


def test_relative_and_lazy_imports_are_edges():
    # `from .checkpoint import …` (relative, top of file) and `from ..data import
    # iter_windows` (inside a method) are both edges
    assert "minilm.train.checkpoint" in GRAPH["minilm.train.training_state"]
    assert "minilm.data" in GRAPH["minilm.train.trainer"]
    # `from .. import optim` names the module minilm.optim, not the root package
    assert "minilm.optim" in GRAPH["minilm.train.trainer"]


def test_known_exceptions_still_exist():
    for (importer, target), why in KNOWN_EXCEPTIONS.items():
        assert target in FULL_GRAPH.get(importer, {}), (
            f"{importer} no longer imports {target}: remove the exception ({why})")


def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    lines = []
    for cyc in cycles:
        hops = [f"{a} (line {GRAPH[a][b]}) -> {b}" for a, b in zip(cyc, cyc[1:])]
        lines.append("cycle: " + "; ".join(hops))
    assert not cycles, "import cycles in minilm:\n" + "\n".join(lines)


@pytest.mark.parametrize("importer", sorted(m for m in MODULES if m != ROOT))
def test_no_package_imports_a_layer_above_it(importer):
    name, layer = _layer_of(importer)
    bad = []
    for target, line in GRAPH[importer].items():
        tname, tlayer = _layer_of(target)
        if tlayer > layer:
            bad.append(f"{importer} (line {line}) imports {target}: layer "
                       f"{tname or 'minilm (root)'!r} ({tlayer}) is above {name!r} ({layer})")
    assert not bad, "\n".join(bad)


def test_the_checks_catch_a_planted_cycle_and_an_upward_import():
    assert _cycles({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}) \
        == [["a", "b", "c", "a"]]
    # a lazy `from ..train import trainer` inside a function of minilm.parallel.engine
    tree = ast.parse("def f():\n    from ..train import trainer\n")
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    (target, line), = _resolve("minilm.parallel.engine", node)
    assert target == "minilm.train.trainer" and line == 2
    assert _layer_of(target)[1] > _layer_of("minilm.parallel.engine")[1]
