"""``minilm classify``: train a text classifier on BBC News, evaluate it, save the run,
and predict with it.

Models (``--model``):

- ``hash``: multinomial naive Bayes by feature hashing (exercise (1)),
  :class:`HashNaiveBayes`; counted in one pass, no iterations; the smoothing alpha is
  chosen on the validation split.
- ``tfidf-logreg``: TF-IDF features (:class:`~minilm.data.text.TfidfVectorizer`, fitted
  on the training split only) into a multinomial logistic regression,
  :class:`SoftmaxRegression`, trained with AdamW on mini-batches of the sparse rows and
  stopped early on the validation split.
- ``lstm``, ``gru``, ``textcnn``, ``transformer``: neural models on word ids
  (:class:`~minilm.train.text_classifier.NeuralTextClassifier`): a word vocabulary of
  the training split, articles truncated to the model's ``max_len`` words (256), AdamW,
  early stopping on the validation loss.

Predicting: ``--predict TEXT`` prints the label and the class probabilities;
``--predict-file FILE`` classifies every line of FILE (one article per line), and when
the lines are ``label<TAB>text`` also reports the accuracy against those labels (a
label the run does not know is refused, naming it and its line). A text longer than a
neural model's ``max_len`` words is classified from its first ``max_len`` words, with
a warning on stderr saying so (the model was trained on texts cut the same way).

A run directory holds ``model.safetensors`` (weights + JSON metadata: model kind,
hyperparameters, vectorizer, label names; written atomically by
:func:`~minilm.train.checkpoint.save_checkpoint`), ``metrics.json`` (test metrics),
``confusion.png``, and for iterative models ``log.jsonl`` (one row per epoch) and
``loss.png``. ``minilm classify --out-dir RUN --predict TEXT`` reloads it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from . import functional as F
from . import optim
from .data import load_bbc_news
from .data.text import CSRMatrix, TfidfVectorizer, clean_text, tokenize
from .functional.sparse import sparse_matmul
from .nn.module import Module, Parameter
from .tensor import Tensor
from .train.checkpoint import load_checkpoint, save_checkpoint
from .train.classification_metrics import classification_metrics, classification_report, plot_confusion
from .train.early_stopping import EarlyStopping
from .train.encoder_classifier import EncoderTextClassifier
from .train.text_classifier import NEURAL_MODELS, NeuralTextClassifier
from .train.trainer import plot_losses

__all__ = ["MODELS", "HashNaiveBayes", "SoftmaxRegression", "TfidfLogReg",
           "load_classifier", "predict_run", "read_predict_file", "stratified_limit",
           "train_classifier"]

MODELS = ("hash", "tfidf-logreg", "lstm", "gru", "textcnn", "transformer", "encoder")
MODEL_FILE = "model.safetensors"


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _softmax(z: np.ndarray) -> np.ndarray:
    return np.exp(_log_softmax(z))


def _words(text: str) -> list[str]:
    return tokenize(clean_text(text, lowercase=True))


# =========================================================================== hash NB
class HashNaiveBayes:
    """Multinomial naive Bayes over hashed words (exercise (1): a word -> class-count table).

    Each word w of a text is sent to bucket ``h(w) = crc32(utf-8 of w) mod 2^bits`` (a
    stable hash: the same bucket in every process). ``fit`` counts, per class c,
    ``N[c, b]`` = occurrences of words of bucket b in the training texts of class c, and
    ``n_c`` = texts of class c. With B = 2^bits buckets and smoothing ``alpha``:

        theta[c, b] = (N[c, b] + alpha) / (sum_b' N[c, b'] + alpha B)
        score_c(d)  = log(n_c / n) + sum_b count_b(d) log theta[c, b]

    and the prediction is ``argmax_c score_c(d)`` (the summed smoothed log-counts plus
    the log prior); ``predict_proba`` is ``softmax_c score_c(d)``. With no collisions
    this is exactly multinomial naive Bayes on the word vocabulary.
    """

    kind = "hash"

    def __init__(self, n_classes: int, bits: int = 18, alpha: float = 0.1) -> None:
        if not 1 <= bits <= 26:
            raise ValueError(f"HashNaiveBayes: bits must be in [1, 26], got {bits}")
        if not alpha > 0:
            raise ValueError(f"HashNaiveBayes: alpha must be > 0, got {alpha}")
        self.n_classes, self.bits, self.alpha = int(n_classes), int(bits), float(alpha)
        self.counts = np.zeros((self.n_classes, 1 << self.bits), dtype=np.float64)
        self.class_counts = np.zeros(self.n_classes, dtype=np.float64)

    def bucket(self, word: str) -> int:
        return zlib.crc32(word.encode("utf-8")) & ((1 << self.bits) - 1)

    def featurize(self, texts: list[str]) -> CSRMatrix:
        """Bucket counts of each text as a CSR matrix (n_texts, 2^bits)."""
        data, indices, indptr = [], [], [0]
        for t in texts:
            b, c = np.unique(np.array([self.bucket(w) for w in _words(t)], dtype=np.int64),
                             return_counts=True)
            data.append(c.astype(np.float64))
            indices.append(b)
            indptr.append(indptr[-1] + len(b))
        return CSRMatrix(np.concatenate([np.zeros(0), *data]),
                         np.concatenate([np.zeros(0, np.int64), *indices]),
                         np.array(indptr), (len(texts), 1 << self.bits))

    def fit(self, texts: list[str], labels: Any) -> HashNaiveBayes:
        y = np.asarray(labels, dtype=np.int64)
        if len(texts) != len(y) or len(y) == 0:
            raise ValueError(f"HashNaiveBayes.fit: {len(texts)} texts and {len(y)} labels")
        x = self.featurize(texts)
        rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
        np.add.at(self.counts, (y[rows], x.indices), x.data)
        self.class_counts += np.bincount(y, minlength=self.n_classes)
        return self

    def log_theta(self) -> np.ndarray:
        b = self.counts.shape[1]
        return np.log(self.counts + self.alpha) - \
            np.log(self.counts.sum(axis=1, keepdims=True) + self.alpha * b)

    def scores(self, texts: list[str]) -> np.ndarray:
        """``score_c(d)`` for every text and class, (n_texts, n_classes)."""
        return self.scores_of(self.featurize(texts))

    def scores_of(self, x: CSRMatrix) -> np.ndarray:
        """``score_c(d)`` of bucket counts from :meth:`featurize`."""
        prior = np.log(np.maximum(self.class_counts, 1e-300) / self.class_counts.sum())
        return x @ self.log_theta().T + prior

    def select_alpha(self, texts: list[str], labels: Any,
                     grid: tuple = (1.0, 0.3, 0.1, 0.03, 0.01)) -> list[dict]:
        """Set ``alpha`` to the grid value with the highest accuracy on held-out
        ``texts`` (ties: the lower mean negative log-likelihood, then the grid order);
        the counts do not depend on alpha, so nothing is refitted. Returns one row per
        value (``alpha``, ``val_accuracy``, ``val_loss``)."""
        y = np.asarray(labels, dtype=np.int64)
        x = self.featurize(texts)
        rows = []
        for a in grid:
            self.alpha = float(a)
            logp = _log_softmax(self.scores_of(x))
            rows.append({"alpha": self.alpha, "val_accuracy": float(np.mean(logp.argmax(1) == y)),
                         "val_loss": float(-logp[np.arange(len(y)), y].mean())})
        best = max(rows, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
        self.alpha = best["alpha"]
        return rows

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return _softmax(self.scores(texts))

    def state(self) -> tuple[dict, dict]:
        return ({"counts": self.counts.astype(np.float32), "class_counts": self.class_counts},
                {"bits": self.bits, "alpha": self.alpha})

    @classmethod
    def from_state(cls, tensors: dict, meta: dict, n_classes: int) -> HashNaiveBayes:
        m = cls(n_classes, meta["bits"], meta["alpha"])
        m.counts = np.asarray(tensors["counts"], dtype=np.float64)
        m.class_counts = np.asarray(tensors["class_counts"], dtype=np.float64)
        return m


# =========================================================================== TF-IDF + LR
class SoftmaxRegression(Module):
    """Multinomial logistic regression on CSR rows: ``logits = X W + b`` with
    ``W`` (n_features, n_classes) and ``b`` (n_classes,); ``X W`` is
    :func:`minilm.functional.sparse_matmul` (gradient ``dW = X^T G``)."""

    def __init__(self, n_features: int, n_classes: int, dtype: str = "float32") -> None:
        super().__init__()
        self.W = Parameter(np.zeros((n_features, n_classes), dtype=dtype))
        self.b = Parameter(np.zeros(n_classes, dtype=dtype))

    def forward(self, x: Any) -> Tensor:
        return sparse_matmul(x, self.W) + self.b


class TfidfLogReg:
    """TF-IDF (sublinear tf, min_df 2, fitted on the training texts) into
    :class:`SoftmaxRegression`, trained to minimise the mean softmax cross-entropy

        L = -(1/|B|) sum_{i in B} log softmax(x_i W + b)[y_i]

    with AdamW (decoupled weight decay ``lr * weight_decay * W`` on W, not on b) over
    shuffled mini-batches; after each epoch the validation loss is measured and the
    weights of the best epoch are kept; training stops after ``patience`` epochs
    without improvement."""

    kind = "tfidf-logreg"

    def __init__(self, n_classes: int, lr: float = 0.05, weight_decay: float = 1e-4,
                 batch_size: int = 64, min_df: int = 2) -> None:
        self.n_classes, self.lr, self.weight_decay = int(n_classes), float(lr), float(weight_decay)
        self.batch_size, self.min_df = int(batch_size), int(min_df)
        self.vectorizer = TfidfVectorizer(min_df=min_df, sublinear_tf=True)
        self.model: SoftmaxRegression | None = None

    def fit(self, texts: list[str], labels: Any, val_texts: list[str], val_labels: Any,
            epochs: int = 100, patience: int = 5, seed: int = 0, log: Any = None) -> list[dict]:
        """Train; returns one row per epoch (``epoch``, ``step``, ``loss``, ``val_loss``,
        ``val_accuracy``); ``log(row)`` is called after each epoch."""
        y = np.asarray(labels, dtype=np.int64)
        yv = np.asarray(val_labels, dtype=np.int64)
        x = self.vectorizer.fit_transform(texts)
        xv = self.vectorizer.transform(val_texts)
        if x.shape[1] == 0:
            raise ValueError("tfidf-logreg: the training texts give no features "
                             f"(no word occurs in >= min_df={self.min_df} texts)")
        self.model = m = SoftmaxRegression(x.shape[1], self.n_classes)
        opt = optim.AdamW([{"params": [m.W], "weight_decay": self.weight_decay},
                           {"params": [m.b], "weight_decay": 0.0}], lr=self.lr)
        rng = np.random.default_rng(seed)
        stopper = EarlyStopping(patience, snapshot=lambda: (m.W.data.copy(), m.b.data.copy()), log=log)
        step = 0
        for epoch in range(1, epochs + 1):
            order = rng.permutation(len(y))
            total = 0.0
            for s in range(0, len(y), self.batch_size):
                idx = order[s:s + self.batch_size]
                loss = F.cross_entropy(m(x[idx]), Tensor(y[idx]))
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                total += float(loss.item()) * len(idx)
            val_logits = self.logits_of(xv)
            val_loss = float(np.mean(-np.log(np.maximum(
                _softmax(val_logits)[np.arange(len(yv)), yv], 1e-300))))
            row = {"epoch": epoch, "step": step, "loss": total / len(y), "val_loss": val_loss,
                   "val_accuracy": float(np.mean(val_logits.argmax(1) == yv))}
            if stopper.update(row):
                break
        if stopper.best_state is not None:
            m.W.data[...], m.b.data[...] = stopper.best_state
        return stopper.history

    def logits_of(self, x: CSRMatrix) -> np.ndarray:
        m = self.model
        return (x @ m.W.data.astype(np.float64)) + m.b.data.astype(np.float64)

    def scores(self, texts: list[str]) -> np.ndarray:
        return self.logits_of(self.vectorizer.transform(texts))

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return _softmax(self.scores(texts))

    def state(self) -> tuple[dict, dict]:
        return ({"W": self.model.W.data, "b": self.model.b.data},
                {"lr": self.lr, "weight_decay": self.weight_decay, "batch_size": self.batch_size,
                 "min_df": self.min_df, "vectorizer": self.vectorizer.to_dict()})

    @classmethod
    def from_state(cls, tensors: dict, meta: dict, n_classes: int) -> TfidfLogReg:
        c = cls(n_classes, meta["lr"], meta["weight_decay"], meta["batch_size"], meta["min_df"])
        c.vectorizer = TfidfVectorizer.from_dict(meta["vectorizer"])
        w = np.asarray(tensors["W"])
        if w.shape != (len(c.vectorizer.vocabulary_), n_classes):
            raise ValueError(f"tfidf-logreg: weights of shape {w.shape} do not match "
                             f"{len(c.vectorizer.vocabulary_)} features x {n_classes} classes")
        c.model = SoftmaxRegression(*w.shape)
        c.model.W.data[...] = w
        c.model.b.data[...] = tensors["b"]
        return c


_KINDS = {"hash": HashNaiveBayes, "tfidf-logreg": TfidfLogReg, "encoder": EncoderTextClassifier,
          **{k: NeuralTextClassifier for k in NEURAL_MODELS}}


# =========================================================================== the workflow
def stratified_limit(labels: np.ndarray, idx: np.ndarray, limit: int) -> np.ndarray:
    """The first ``limit`` indices of each label in the sorted index array ``idx``."""
    keep = [idx[labels[idx] == c][:limit] for c in np.unique(labels[idx])]
    return np.sort(np.concatenate(keep))


def _check_args(model: str, epochs: int, lr: float | None, limit: int | None) -> None:
    if model not in MODELS:
        raise ValueError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"--lr must be a positive number, got {lr}")
    if limit is not None and limit < 2:
        raise ValueError(f"--limit must be >= 2 (articles per label and split), got {limit}")


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def train_classifier(model: str, out_dir: str | os.PathLike, epochs: int | None = None,
                     lr: float | None = None, seed: int = 0, split_seed: int = 0,
                     group_duplicates: bool = False, overwrite: bool = False,
                     limit: int | None = None, print_fn: Any = print,
                     progress: bool = False, init: str = "all-MiniLM-L6-v2",
                     finetune: str = "full", max_len: int | None = None) -> dict:
    """Train ``model`` on the BBC News training split (early stopping on val where the
    model iterates), evaluate on the test split, write the run to ``out_dir`` and
    return the test metrics. ``limit`` keeps the first ``limit`` articles of each label
    in each split (a quick stratified subset, for tests). Refuses, before anything is
    written, a run directory that already holds a model (unless ``overwrite``).
    ``progress`` shows a bar over the epochs (iterative models), the epoch lines
    printed above it. ``model="encoder"``: a pretrained encoder (``init``: a model's
    name or folder, or a ``minilm pretrain-mlm`` run) with a new head, trained as
    ``finetune`` says (probe, full, llrd; see minilm/train/encoder_classifier.py);
    ``epochs`` defaults to 4 for full/llrd fine-tuning and 100 otherwise."""
    if epochs is None:
        epochs = 4 if model == "encoder" and finetune != "probe" else 100
    _check_args(model, epochs, lr, limit)
    if max_len is not None and max_len < 3:
        raise ValueError(f"--max-len must be >= 3, got {max_len}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out-dir {str(out)!r} exists and is not a directory")
    if (out / MODEL_FILE).exists() and not overwrite:
        raise ValueError(f"{out / MODEL_FILE} exists (a trained classifier); choose another "
                         "--out-dir or pass --overwrite")
    bbc = load_bbc_news(split_seed=split_seed, group_duplicates=group_duplicates)
    encoder = None
    if model == "encoder":  # a bad --init fails here, before the run directory exists
        encoder = EncoderTextClassifier(len(bbc.label_names), init=init, mode=finetune, lr=lr,
                                        **({} if max_len is None else {"max_len": max_len}))
        encoder.load()
    splits = dict(bbc.splits)
    if limit is not None:
        splits = {k: stratified_limit(bbc.labels, v, limit) for k, v in splits.items()}
    data = {k: ([bbc.texts[i] for i in v], bbc.labels[v]) for k, v in splits.items()}
    k = len(bbc.label_names)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out-dir {str(out)!r}: cannot create it ({exc.strerror or exc})") \
            from None
    t0 = time.perf_counter()
    history: list[dict] = []
    search: list[dict] = []
    if model == "hash":
        clf: Any = HashNaiveBayes(k).fit(*data["train"])
        search = clf.select_alpha(*data["val"])
        for r in search:
            print_fn(f"alpha {r['alpha']:<5g} val_acc {r['val_accuracy']:.4f}  "
                     f"val_loss {r['val_loss']:.4f}")
        print_fn(f"alpha {clf.alpha:g} chosen on the validation split")
    else:
        if model == "tfidf-logreg":
            clf = TfidfLogReg(k, lr=lr if lr is not None else 0.05)
        elif model == "encoder":
            clf = encoder
        else:
            clf = NeuralTextClassifier(model, k, lr=lr if lr is not None else 2e-3)
        log_path = out / "log.jsonl"
        log_path.write_text("")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=epochs, desc=model, unit="epoch", dynamic_ncols=True)

        def log(row: dict) -> None:
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            line = (f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  val_loss "
                    f"{row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}")
            if bar is None:
                print_fn(line)
            else:
                bar.write(line)
                bar.set_postfix(val_acc=f"{row['val_accuracy']:.4f}")
                bar.update(1)

        try:
            patience = {"tfidf-logreg": {}, "encoder": {"patience": 2}}.get(model, {"patience": 3})
            history = clf.fit(*data["train"], *data["val"], epochs=epochs, seed=seed, log=log,
                              **patience)
        finally:
            if bar is not None:
                bar.close()
        plot_losses(log_path, out / "loss.png")
    train_s = time.perf_counter() - t0
    test_texts, y_test = data["test"]
    # log-probabilities: comparable across texts (raw naive Bayes scores grow with the
    # text's length) and, unlike probabilities, not rounded to 0 or 1
    logp = _log_softmax(clf.scores(test_texts))
    m = classification_metrics(y_test, logp.argmax(1), logp, bbc.label_names)
    m.update({"model": model, "train_seconds": train_s, "epochs_run": len(history),
              "split_seed": split_seed, "group_duplicates": group_duplicates, "limit": limit,
              "sizes": {s: len(v) for s, v in splits.items()}})
    if search:
        m["alpha_search"] = search
    tensors, params = clf.state()
    meta = {"kind": "minilm-classifier", "model": model, "label_names": bbc.label_names,
            "params": params, "seed": seed, "split_seed": split_seed,
            "group_duplicates": group_duplicates, "limit": limit}
    save_checkpoint(out / MODEL_FILE, tensors, meta)
    _write_json(out / "metrics.json", m)
    plot_confusion(np.asarray(m["confusion"]), bbc.label_names, out / "confusion.png",
                   title=f"{model}: BBC News test")
    print_fn(f"{model}: test on {m['n']} articles ({train_s:.1f} s training)")
    print_fn(classification_report(m))
    print_fn(f"wrote {out / MODEL_FILE}, {out / 'metrics.json'}, {out / 'confusion.png'}"
             + (f", {out / 'log.jsonl'}, {out / 'loss.png'}" if history else ""))
    return m


def load_classifier(out_dir: str | os.PathLike) -> tuple[Any, list[str]]:
    """``(classifier, label_names)`` of a run written by :func:`train_classifier`."""
    path = Path(out_dir) / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: no classifier run in {out_dir} "
                                "(train one with minilm classify --model ... --out-dir)")
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != "minilm-classifier" or meta.get("model") not in _KINDS:
        raise ValueError(f"{path} is not a classifier run of minilm classify (model kind "
                         f"{meta.get('model', meta.get('kind'))!r})")
    names = list(meta["label_names"])
    return _KINDS[meta["model"]].from_state(tensors, meta["params"], len(names)), names


def predict_run(out_dir: str | os.PathLike, texts: list[str],
                warn: Any = None) -> list[dict]:
    """For each text: ``{"label": name, "probabilities": {name: p}}``. An empty (or
    whitespace-only) text is refused. A text longer than the model's ``max_len`` words
    (neural models) is classified from its first ``max_len`` words; ``warn(message)``
    (default: print to stderr) is told which texts were cut."""
    for i, t in enumerate(texts):
        if not _words(t):
            where = "the text" if len(texts) == 1 else f"text {i + 1}"
            raise ValueError(f"--predict: {where} has no words to classify")
    clf, names = load_classifier(out_dir)
    max_len = getattr(clf, "max_len", None)
    if max_len is not None:
        long = [(i, n) for i, n in enumerate(len(_words(t)) for t in texts) if n > max_len]
        if long:
            what = ", ".join(f"text {i + 1} ({n} words)" for i, n in long[:5])
            more = f" and {len(long) - 5} more" if len(long) > 5 else ""
            (warn or (lambda m: print(m, file=sys.stderr)))(
                f"warning: {what}{more} longer than the model's max_len {max_len}: "
                f"classified from the first {max_len} words")
    probs = clf.predict_proba(list(texts))
    return [{"label": names[int(p.argmax())],
             "probabilities": {n: float(v) for n, v in zip(names, p)}} for p in probs]


def read_predict_file(path: str | os.PathLike, label_names: list[str]) -> tuple:
    """``(texts, labels or None)`` from a file of one article per line, or of
    ``label<TAB>text`` lines (every line then needs a label the run knows). Blank lines
    are skipped; a labelled file with an unlabelled line, or an unknown label, is
    refused with the line number."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--predict-file {str(p)!r} does not exist or is not a file")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"--predict-file {str(p)!r} is not UTF-8 text ({exc.reason} at "
                         f"byte {exc.start})") from None
    rows = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if not rows:
        raise ValueError(f"--predict-file {str(p)!r} has no text lines")
    labelled = "\t" in rows[0][1]
    texts, labels = [], []
    for n, line in rows:
        if labelled:
            if "\t" not in line:
                raise ValueError(f"--predict-file {p}:{n}: no label<TAB>text (the first line "
                                 "has a label, so every line needs one)")
            label, text = line.split("\t", 1)
            if label.strip() not in label_names:
                raise ValueError(f"--predict-file {p}:{n}: unknown label {label.strip()!r}; "
                                 f"the run's labels are {', '.join(label_names)}")
            labels.append(label_names.index(label.strip()))
            line = text
        if not _words(line):
            raise ValueError(f"--predict-file {p}:{n}: the text has no words to classify")
        texts.append(line)
    return texts, (np.array(labels) if labelled else None)


# ---------------------------------------------------------------------------- the command


def add_classify_parser(sub: Any) -> None:
    """The classify subcommand of ``minilm`` (minilm/cli.py)."""
    p = sub.add_parser("classify", help="train a text classifier on BBC News (test metrics, "
                                        "confusion PNG, saved run), or --predict with a run")
    p.add_argument("--model", choices=MODELS, default=None,
                   help="hash (naive Bayes by hashing), tfidf-logreg, or a neural model "
                        "on word ids: lstm, gru (bidirectional, mean-pooled), textcnn, "
                        "transformer (encoder, mean-pooled)")
    p.add_argument("--out-dir", required=True, help="the run directory")
    p.add_argument("--predict", default=None, metavar="TEXT",
                   help="classify TEXT with the run in --out-dir instead of training")
    p.add_argument("--predict-file", default=None, metavar="FILE",
                   help="classify every line of FILE (one article per line; with "
                        "label<TAB>text lines, also report the accuracy)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--epochs", type=int, default=None,
                   help="most epochs (iterative models; early stopping on val; default 100, "
                        "encoder fine-tuning 4)")
    p.add_argument("--init", default="all-MiniLM-L6-v2",
                   help="--model encoder: the pretrained encoder (a name, a folder, or a "
                        "minilm pretrain-mlm run)")
    p.add_argument("--finetune", choices=("probe", "full", "llrd"), default="full",
                   help="--model encoder: linear probe (frozen encoder), full fine-tuning, "
                        "or layer-wise learning-rate decay")
    p.add_argument("--max-len", type=int, default=None,
                   help="--model encoder: tokens per article (default 128)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (tfidf-logreg: 0.05)")
    p.add_argument("--seed", type=int, default=0, help="shuffling seed")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split")
    p.add_argument("--group-duplicates", action="store_true",
                   help="keep exact and near-duplicate articles inside one split")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the classifier already in --out-dir")
    p.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_classify)


def _classify(args: argparse.Namespace) -> int:
    if args.predict is not None or args.predict_file is not None:
        flag = "--predict" if args.predict is not None else "--predict-file"
        if args.predict is not None and args.predict_file is not None:
            raise ValueError("give --predict TEXT or --predict-file FILE, not both")
        if args.model is not None:
            raise ValueError(f"{flag} uses the run's own model; drop --model")
        labels = None
        if args.predict is not None:
            texts = [args.predict]
        else:
            texts, labels = read_predict_file(args.predict_file, load_classifier(args.out_dir)[1])
        results = predict_run(args.out_dir, texts)
        for r in results:
            probs = "  ".join(f"{n} {p:.4f}" for n, p in r["probabilities"].items())
            print(f"{r['label']}\t({probs})")
        if labels is not None:
            names = list(results[0]["probabilities"])
            hits = sum(names.index(r["label"]) == y for r, y in zip(results, labels))
            print(f"accuracy {hits / len(labels):.4f} ({hits} of {len(labels)} lines)")
        return 0
    if args.model is None:
        raise ValueError("give --model to train (or --predict TEXT to use a trained run)")
    train_classifier(args.model, args.out_dir, epochs=args.epochs, lr=args.lr, seed=args.seed,
                     split_seed=args.split_seed, group_duplicates=args.group_duplicates,
                     overwrite=args.overwrite, limit=args.limit,
                     progress=not args.no_progress and sys.stderr.isatty(), init=args.init,
                     finetune=args.finetune, max_len=args.max_len)
    return 0
