"""The autograd graph behind a tensor, as Graphviz DOT (DeZero's ``plot_dot_graph``).

minilm records no intermediate tensors in the graph, only nodes: a Tensor's ``grad_fn``
is the :class:`~minilm.autograd.Node` of the op that made it, and each Node's
``next_edges`` holds one ``(node, output_nr)`` (or ``None``) per input, pointing at the
producer of that input: another op's Node, or the :class:`~minilm.autograd.AccumulateGrad`
of a leaf (which keeps the leaf in ``.tensor``). ``out_meta[i]`` is the (shape, dtype) of
output ``i``. So a tensor of the picture is an ``(op, output_nr)`` pair, or a leaf.

The walk only reads these attributes: it runs no backward, frees nothing, and changes
no node, so ``loss.backward()`` works exactly as before afterwards.

Drawn: op nodes (boxes, labelled with the Function's name), tensor nodes (ellipses,
labelled with shape and dtype, and a leaf's parameter name when ``params`` is given),
edges input tensor -> op -> output tensor. Each node appears once however often it is
used (the graph is a DAG, not a tree), numbered in the order of a depth-first walk from
the output that follows ``next_edges`` in argument order, so the text is deterministic.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..autograd import AccumulateGrad
from ..tensor import Tensor

__all__ = ["GraphvizNotFoundError", "graph_structure", "save_graph", "to_dot"]

_FORMATS = ("dot", "svg", "png", "pdf")


class GraphvizNotFoundError(FileNotFoundError):
    """The ``dot`` program (Debian package ``graphviz``) is not installed."""


def _param_names(params: Any) -> dict[int, str]:
    """id(tensor) -> name, from a dict name -> Tensor, a Module, or (name, tensor) pairs."""
    if params is None:
        return {}
    if hasattr(params, "named_parameters") and callable(params.named_parameters):
        items = list(params.named_parameters())
    elif isinstance(params, Mapping):
        items = list(params.items())
    else:
        items = list(params)
    names: dict[int, str] = {}
    for name, t in items:
        if not isinstance(t, Tensor):
            raise ValueError(f"to_dot: params[{name!r}] is a {type(t).__name__}, not a Tensor")
        names.setdefault(id(t), str(name))  # tied weights: the first name
    return names


def _fmt_meta(shape: Any, dtype: Any) -> str:
    return f"{tuple(shape)} {dtype}"


def graph_structure(tensor: Tensor, params: Any = None) -> tuple[list[dict], list[tuple]]:
    """The graph of ``tensor`` as (nodes, edges): each node a dict with ``id`` ("t<i>"
    for tensors, "op<i>" for ops), ``kind`` ("tensor" | "op") and ``label`` (plus
    ``shape``, ``dtype``, ``name`` for tensors; ``role`` is "output", "param", "leaf"
    or "intermediate", "op" for ops); each edge an (from_id, to_id) pair, inputs -> op -> output."""
    if not isinstance(tensor, Tensor):
        raise ValueError(f"to_dot: expected a Tensor, got {type(tensor).__name__}")
    names = _param_names(params)
    nodes: list[dict] = []
    edges: list[tuple] = []
    tensor_ids: dict[tuple, str] = {}   # (id(node), output_nr) or ("leaf", id(tensor))
    op_ids: dict[int, str] = {}
    keep: list = []  # keep walked objects alive so that their ids stay unique
    counts = {"t": 0, "op": 0}

    def leaf_label(t: Tensor) -> tuple[str, str]:
        if id(t) in names:
            return names[id(t)], "param"
        return ("input" if names else "leaf"), "leaf"

    def add_tensor(key: tuple, shape: Any, dtype: Any, name: str, role: str) -> str:
        tid = f"t{counts['t']}"
        counts["t"] += 1
        tensor_ids[key] = tid
        meta = _fmt_meta(shape, dtype)
        nodes.append({"id": tid, "kind": "tensor", "label": f"{name}\n{meta}" if name else meta,
                      "shape": tuple(shape), "dtype": str(dtype), "name": name, "role": role})
        return tid

    def tensor_of_edge(node: Any, nr: int) -> tuple[str, bool]:
        """The tensor node an edge (node, nr) stands for; True when it is new."""
        if isinstance(node, AccumulateGrad):
            key: tuple = ("leaf", id(node.tensor))
            if key in tensor_ids:
                return tensor_ids[key], False
            keep.append(node)
            name, role = leaf_label(node.tensor)
            return add_tensor(key, node.tensor.shape, node.tensor.dtype, name, role), True
        key = (id(node), nr)
        if key in tensor_ids:
            return tensor_ids[key], False
        keep.append(node)
        shape, dtype = node.out_meta[nr]
        return add_tensor(key, shape, dtype, "", "intermediate"), True

    def add_op(node: Any) -> tuple[str, bool]:
        if id(node) in op_ids:
            return op_ids[id(node)], False
        keep.append(node)
        oid = f"op{counts['op']}"
        counts["op"] += 1
        op_ids[id(node)] = oid
        nodes.append({"id": oid, "kind": "op", "role": "op",
                      "label": getattr(node, "name", type(node).__name__)})
        return oid, True

    root = tensor.grad_fn
    if root is None:
        name, role = leaf_label(tensor)
        add_tensor(("leaf", id(tensor)), tensor.shape, tensor.dtype, name, role)
        return nodes, edges
    out_id = add_tensor((id(root), tensor._output_nr), tensor.shape, tensor.dtype,
                        names.get(id(tensor), "output"), "output")
    keep.append(root)
    stack: list = [(root, out_id)]  # (op node, one of its output tensor ids) to expand
    while stack:
        node, produced = stack.pop()
        oid, new = add_op(node)
        edges.append((oid, produced))
        if not new:
            continue
        pending = []
        for edge in getattr(node, "next_edges", ()):
            if edge is None:
                continue
            src, nr = edge
            tid, tnew = tensor_of_edge(src, nr)
            edges.append((tid, oid))
            if tnew and not isinstance(src, AccumulateGrad):
                pending.append((src, tid))
        stack.extend(reversed(pending))  # depth first, arguments in order
    # an edge op -> tensor may be added twice when two outputs of one op are used
    seen: set = set()
    unique = [e for e in edges if not (e in seen or seen.add(e))]
    return nodes, unique


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_STYLE = {
    "op": 'shape=box, style=filled, fillcolor="#a8d8ea"',
    "output": 'shape=ellipse, style=filled, fillcolor="#f6c177"',
    "param": 'shape=ellipse, style=filled, fillcolor="#c3e6cb"',
    "leaf": 'shape=ellipse, style=filled, fillcolor="#e2e2e2"',
    "intermediate": 'shape=ellipse, style=filled, fillcolor="#fdf3c4"',
}


def to_dot(tensor: Tensor, params: Any = None, rankdir: str = "TB") -> str:
    """The autograd graph that produced ``tensor`` as Graphviz DOT text.

    ``params``: a dict name -> Tensor, a Module (its ``named_parameters``), or (name,
    tensor) pairs; leaves found there are labelled with their name, other leaves
    "input" ("leaf" when no params are given). The graph is read, never changed."""
    if rankdir not in ("TB", "LR", "BT", "RL"):
        raise ValueError(f"to_dot: rankdir must be TB, LR, BT or RL, got {rankdir!r}")
    nodes, edges = graph_structure(tensor, params)
    lines = ["digraph autograd {", f"  rankdir={rankdir};", '  node [fontname="Helvetica"];']
    for n in nodes:
        style = _STYLE["op"] if n["kind"] == "op" else _STYLE[n["role"]]
        lines.append(f"  {n['id']} [label={_quote(n['label'])}, {style}];")
    for a, b in edges:
        lines.append(f"  {a} -> {b};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _suffix(path: Path) -> str:
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in _FORMATS:
        raise ValueError(f"save_graph: {str(path)!r} must end with one of "
                         f"{', '.join('.' + f for f in _FORMATS)}")
    return fmt


def render_dot(dot_text: str, path: str | Path, timeout: float = 60.0) -> Path:
    """Render DOT text to ``path`` (.svg, .png or .pdf) with Graphviz's ``dot``."""
    path = Path(path)
    fmt = _suffix(path)
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizNotFoundError(
            f"cannot write {path.name}: the Graphviz 'dot' program is not installed "
            "(Debian/Ubuntu: sudo apt-get install graphviz); write a .dot file instead")
    try:
        proc = subprocess.run([exe, f"-T{fmt}", "-o", str(path)], input=dot_text.encode(),
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"dot -T{fmt} took more than {timeout:g}s; the graph may be too "
                           "large, write a .dot file instead") from None
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"dot -T{fmt} failed ({proc.returncode}): {msg[0] if msg else ''}")
    return path


def save_graph(tensor: Tensor, path: str | Path, params: Any = None, timeout: float = 60.0) -> list[Path]:
    """Write the graph of ``tensor``: ``x.dot`` writes DOT; ``x.svg`` / ``x.png`` /
    ``x.pdf`` writes ``x.dot`` beside it, then renders it with ``dot`` (a
    GraphvizNotFoundError naming the ``graphviz`` package when ``dot`` is missing; the
    .dot file is written first either way). Returns the paths written."""
    path = Path(path)
    fmt = _suffix(path)
    text = to_dot(tensor, params)
    dot_path = path.with_suffix(".dot")
    if dot_path.parent != Path(""):
        dot_path.parent.mkdir(parents=True, exist_ok=True)
    dot_path.write_text(text)
    if fmt == "dot":
        return [dot_path]
    return [dot_path, render_dot(text, path, timeout)]
