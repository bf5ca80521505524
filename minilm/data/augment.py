"""Text augmentation: random insertion, deletion and swap, synonym replacement (EDA, Wei &
Zou 2019), synonyms from embedding neighbours, and Gaussian noise on embeddings.

Every operation is a function ``op(tokens, ..., rng)`` on a list of word tokens with an
explicit ``np.random.Generator``, and a seeded callable class (``RandomDeletion(p=0.1,
seed=0)``) that accepts a token list, a whitespace-separated string (returned as a
string), or an ``(x, label)`` pair (the label is passed through unchanged). A call may
pass ``rng=`` to override the object's own generator.

Using them with the DataLoader: ``DataLoader`` has no transform hook, so wrap the
map-style dataset instead. ``AugmentedDataset(dataset, transform, seed)`` applies
``transform`` in ``__getitem__`` with a generator seeded by ``(seed, epoch, index)``: an
item's augmentation depends only on those three numbers, never on the order items are
read in (prefetch thread, resume), and ``set_epoch(e)`` draws new ones each epoch. The
transform must end in fixed-shape arrays for the loader to stack them, e.g.

    encode = lambda ex: (pad_sequences([vocab.encode(ex[0])], 128)[0][0], ex[1])
    aug = Compose([SynonymReplacement(2), RandomSwap(1), RandomDeletion(0.1), encode])
    loader = DataLoader(AugmentedDataset(train_examples, aug, seed=0), batch_size=32,
                        shuffle=True, as_tensor=False)

or apply a transform to ready batches: ``map(aug.batch, batches)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..backends import to_host
from ..functional.math import add
from ..tensor import Tensor

__all__ = ["SYNONYMS", "AugmentedDataset", "Compose", "EmbeddingNeighbours", "EmbeddingNoise",
           "RandomDeletion", "RandomInsertion", "RandomSwap", "SynonymReplacement",
           "embedding_noise", "random_deletion", "random_insertion", "random_swap",
           "synonym_replacement"]

# A small hand-written table of common English words (lower case) and near-synonyms.
SYNONYMS: dict[str, list[str]] = {
    "big": ["large", "huge", "major"], "large": ["big", "huge", "sizeable"],
    "small": ["little", "minor", "modest"], "little": ["small", "slight"],
    "good": ["fine", "solid", "positive"], "bad": ["poor", "weak", "negative"],
    "great": ["excellent", "superb", "major"], "new": ["fresh", "latest", "recent"],
    "old": ["former", "previous", "aged"], "high": ["elevated", "strong"],
    "low": ["weak", "modest", "reduced"], "fast": ["quick", "rapid", "swift"],
    "quick": ["fast", "rapid", "swift"], "slow": ["sluggish", "gradual"],
    "important": ["significant", "key", "crucial"], "key": ["main", "crucial", "central"],
    "main": ["chief", "principal", "key"], "major": ["big", "significant", "leading"],
    "strong": ["robust", "solid", "powerful"], "weak": ["feeble", "poor", "fragile"],
    "early": ["initial", "first"], "late": ["delayed", "final"],
    "hard": ["difficult", "tough"], "difficult": ["hard", "tough", "tricky"],
    "easy": ["simple", "straightforward"], "simple": ["easy", "plain", "basic"],
    "happy": ["glad", "pleased", "delighted"], "sad": ["unhappy", "upset"],
    "angry": ["furious", "annoyed"], "rich": ["wealthy", "affluent"],
    "poor": ["weak", "needy", "inferior"], "top": ["leading", "best", "highest"],
    "best": ["finest", "top", "greatest"], "worst": ["poorest", "weakest"],
    "many": ["numerous", "several", "lots of"], "few": ["several", "a handful of"],
    "most": ["the majority of"], "often": ["frequently", "regularly"],
    "rarely": ["seldom", "infrequently"], "recently": ["lately", "newly"],
    "also": ["too", "as well"], "very": ["really", "extremely", "highly"],
    "about": ["around", "roughly", "approximately"], "nearly": ["almost", "close to"],
    "almost": ["nearly", "practically"], "said": ["stated", "told", "noted"],
    "say": ["state", "claim", "tell"], "says": ["states", "claims", "notes"],
    "told": ["informed", "said to"], "tell": ["inform", "say to"],
    "show": ["reveal", "display", "demonstrate"], "shows": ["reveals", "indicates"],
    "make": ["create", "produce", "build"], "made": ["created", "produced", "built"],
    "get": ["obtain", "receive", "gain"], "got": ["obtained", "received"],
    "give": ["provide", "offer", "grant"], "take": ["grab", "seize", "accept"],
    "buy": ["purchase", "acquire"], "sell": ["market", "trade"],
    "use": ["employ", "utilise"], "help": ["assist", "aid", "support"],
    "start": ["begin", "launch", "open"], "begin": ["start", "commence"],
    "end": ["finish", "close", "conclude"], "stop": ["halt", "end", "cease"],
    "win": ["triumph", "succeed", "prevail"], "won": ["triumphed", "secured"],
    "lose": ["forfeit", "miss"], "lost": ["forfeited", "missed"],
    "beat": ["defeat", "overcome"], "play": ["compete", "perform"],
    "rise": ["increase", "climb", "grow"], "rose": ["increased", "climbed", "grew"],
    "fall": ["drop", "decline", "slide"], "fell": ["dropped", "declined", "slid"],
    "increase": ["rise", "growth", "boost"], "decrease": ["drop", "reduction", "decline"],
    "grow": ["expand", "increase"], "cut": ["reduce", "trim", "lower"],
    "want": ["wish", "desire", "seek"], "need": ["require", "must have"],
    "think": ["believe", "reckon", "consider"], "believe": ["think", "feel"],
    "see": ["notice", "observe", "view"], "look": ["glance", "appear", "seem"],
    "find": ["discover", "locate", "uncover"], "try": ["attempt", "seek"],
    "plan": ["scheme", "proposal", "strategy"], "company": ["firm", "business", "group"],
    "firm": ["company", "business"], "business": ["company", "firm", "trade"],
    "market": ["marketplace", "sector"], "money": ["cash", "funds"],
    "profit": ["earnings", "gain"], "price": ["cost", "charge"],
    "job": ["post", "role", "position"], "work": ["labour", "job", "employment"],
    "people": ["individuals", "persons", "citizens"], "government": ["administration", "state"],
    "minister": ["secretary", "official"], "leader": ["head", "chief"],
    "country": ["nation", "state"], "world": ["globe", "planet"],
    "city": ["town", "metropolis"], "game": ["match", "contest"],
    "match": ["game", "fixture", "contest"], "team": ["side", "squad"],
    "player": ["athlete", "competitor"], "coach": ["manager", "trainer"],
    "film": ["movie", "picture"], "movie": ["film", "picture"],
    "music": ["songs", "tunes"], "song": ["track", "tune"], "star": ["celebrity", "actor"],
    "technology": ["tech", "engineering"],
    "computer": ["pc", "machine"], "phone": ["handset", "mobile"],
    "users": ["customers", "consumers"], "problem": ["issue", "difficulty", "trouble"],
    "issue": ["matter", "problem", "question"], "way": ["method", "manner", "means"],
    "idea": ["notion", "concept", "thought"], "change": ["alter", "shift", "modify"],
    "year": ["twelve months"], "week": ["seven days"], "quickly": ["rapidly", "swiftly"],
    "however": ["but", "yet", "still"], "because": ["since", "as"],
}

Tokens = list[str]


def _check_prob(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: p must be in [0, 1], got {p}")


def _check_count(name: str, n: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{name}: n must be a non-negative integer, got {n!r}")


def random_deletion(tokens: Sequence[str], p: float, rng: np.random.Generator) -> Tokens:
    """Delete each token independently with probability ``p``; if every token would go,
    keep one chosen uniformly (a text never becomes empty unless it was)."""
    _check_prob("random_deletion", p)
    if not tokens:
        return []
    keep = rng.random(len(tokens)) >= p
    if not keep.any():
        return [tokens[int(rng.integers(len(tokens)))]]
    return [t for t, k in zip(tokens, keep) if k]


def random_swap(tokens: Sequence[str], n: int, rng: np.random.Generator) -> Tokens:
    """Swap the tokens at two uniformly drawn distinct positions, ``n`` times."""
    _check_count("random_swap", n)
    out = list(tokens)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = rng.choice(len(out), size=2, replace=False)
        out[i], out[j] = out[j], out[i]
    return out


def _synonyms_of(word: str, synonyms: Mapping[str, Sequence[str]]) -> Sequence[str]:
    found = synonyms.get(word)
    if found is None and word.lower() != word:
        found = synonyms.get(word.lower())
    return found or ()


def _match_case(word: str, replacement: str) -> str:
    return replacement[:1].upper() + replacement[1:] if word[:1].isupper() else replacement


def synonym_replacement(tokens: Sequence[str], n: int, rng: np.random.Generator,
                        synonyms: Mapping[str, Sequence[str]] = SYNONYMS) -> Tokens:
    """Replace up to ``n`` distinct words that have synonyms (looked up as written, then
    lower-cased) by one of their synonyms drawn uniformly; a capitalised word gets a
    capitalised synonym. A multi-word synonym ("lots of") becomes several tokens."""
    _check_count("synonym_replacement", n)
    candidates = [i for i, t in enumerate(tokens) if _synonyms_of(t, synonyms)]
    chosen = set(rng.permutation(candidates)[:n].tolist()) if candidates else set()
    out: Tokens = []
    for i, t in enumerate(tokens):
        if i in chosen:
            options = _synonyms_of(t, synonyms)
            out.extend(_match_case(t, options[int(rng.integers(len(options)))]).split())
        else:
            out.append(t)
    return out


def random_insertion(tokens: Sequence[str], n: int, rng: np.random.Generator,
                     synonyms: Mapping[str, Sequence[str]] = SYNONYMS,
                     words: Sequence[str] | None = None) -> Tokens:
    """Insert ``n`` words, each at a uniformly drawn position (0 … len). With ``words``,
    each inserted word is drawn uniformly from it; otherwise (EDA) it is a random synonym
    of a random token that has synonyms (nothing is inserted if none has)."""
    _check_count("random_insertion", n)
    out = list(tokens)
    for _ in range(n):
        if words is not None:
            if len(words) == 0:
                raise ValueError("random_insertion: words is empty")
            new = [words[int(rng.integers(len(words)))]]
        else:
            candidates = [t for t in out if _synonyms_of(t, synonyms)]
            if not candidates:
                break
            options = _synonyms_of(candidates[int(rng.integers(len(candidates)))], synonyms)
            new = options[int(rng.integers(len(options)))].split()
        pos = int(rng.integers(len(out) + 1))
        out[pos:pos] = new
    return out


class EmbeddingNeighbours(Mapping):
    """Synonyms from an embedding matrix: ``neighbours[word]`` is the list of the ``k``
    words whose rows have the highest cosine similarity cos(u, v) = u·v / (|u| |v|) with
    ``word``'s row (the word itself, ``<pad>``/``<unk>``, words in ``exclude`` and
    neighbours under ``min_similarity`` left out; an unknown word has none). ``vocab`` is
    a :class:`~minilm.data.text.Vocab` or a list of words in row order. Usable wherever a
    synonym table is (``SynonymReplacement(2, synonyms=EmbeddingNeighbours(E, vocab))``)."""

    def __init__(self, embeddings: Any, vocab: Any, k: int = 5, min_similarity: float = -1.0,
                 exclude: Sequence[str] = ("<pad>", "<unk>")) -> None:
        # a host copy (the table may be a device model's embedding weight)
        e = to_host(embeddings
                    ).astype(np.float64)
        words = list(getattr(vocab, "itos", vocab))
        if e.ndim != 2 or e.shape[0] != len(words):
            raise ValueError(f"EmbeddingNeighbours: embeddings of shape {e.shape} do not match "
                             f"a vocabulary of {len(words)} words")
        norms = np.linalg.norm(e, axis=1, keepdims=True)
        self.unit = e / np.where(norms == 0, 1.0, norms)
        self.words, self.index = words, {w: i for i, w in enumerate(words)}
        self.k, self.min_similarity, self.exclude = k, min_similarity, set(exclude)
        self._cache: dict[str, list[str]] = {}

    def __getitem__(self, word: str) -> list[str]:
        if word not in self._cache:
            i = self.index.get(word)
            if i is None or word in self.exclude:
                return []
            sims = self.unit @ self.unit[i]
            found = []
            for j in np.argsort(-sims, kind="stable"):
                if len(found) == self.k or sims[j] < self.min_similarity:
                    break
                if j != i and self.words[j] not in self.exclude:
                    found.append(self.words[j])
            self._cache[word] = found
        return self._cache[word]

    def get(self, word: str, default: Any = None) -> Any:
        return self[word] or default

    def __iter__(self):
        return iter(self.words)

    def __len__(self) -> int:
        return len(self.words)


def embedding_noise(x: Any, std: float, rng: np.random.Generator, mask: Any = None) -> Any:
    """``x + std * ε`` with ε ~ N(0, 1) i.i.d. of x's shape (embedding vectors along the
    last axis). ``mask`` (x's shape without the last axis, True = real token) leaves the
    masked-out positions unchanged. A NumPy array gives an array; a Tensor gives
    ``x + noise`` through minilm's ``add``, so gradients flow to x unchanged."""
    if std < 0:
        raise ValueError(f"embedding_noise: std must be >= 0, got {std}")
    arr = x.data if isinstance(x, Tensor) else np.asarray(x)
    noise = rng.standard_normal(arr.shape) * std
    if mask is not None:
        m = to_host(mask).astype(bool, copy=False)
        if m.shape != arr.shape[:-1]:
            raise ValueError(f"embedding_noise: mask shape {m.shape} does not match "
                             f"embeddings {arr.shape} without the last axis")
        noise = noise * m[..., None]
    if isinstance(x, Tensor):
        return add(x, Tensor(noise.astype(arr.dtype), backend=x.backend))
    return (arr + noise).astype(arr.dtype, copy=False)


# --------------------------------------------------------------------------- transforms

class _Transform:
    """A seeded token-list transform: ``t(tokens)``, ``t("a string")`` or ``t((x, y))``."""

    def __init__(self, seed: int | np.random.Generator | None = 0) -> None:
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def apply(self, tokens: Tokens, rng: np.random.Generator) -> Tokens:
        raise NotImplementedError

    def __call__(self, example: Any, rng: np.random.Generator | None = None) -> Any:
        rng = self.rng if rng is None else rng
        if isinstance(example, tuple):
            return (self(example[0], rng), *example[1:])
        if isinstance(example, str):
            return " ".join(self.apply(example.split(), rng))
        return self.apply(list(example), rng)


class RandomDeletion(_Transform):
    def __init__(self, p: float = 0.1, seed: Any = 0) -> None:
        _check_prob("RandomDeletion", p)
        super().__init__(seed)
        self.p = p

    def apply(self, tokens: Tokens, rng: np.random.Generator) -> Tokens:
        return random_deletion(tokens, self.p, rng)


class RandomSwap(_Transform):
    def __init__(self, n: int = 1, seed: Any = 0) -> None:
        _check_count("RandomSwap", n)
        super().__init__(seed)
        self.n = n

    def apply(self, tokens: Tokens, rng: np.random.Generator) -> Tokens:
        return random_swap(tokens, self.n, rng)


class RandomInsertion(_Transform):
    def __init__(self, n: int = 1, seed: Any = 0, synonyms: Mapping = SYNONYMS,
                 words: Sequence[str] | None = None) -> None:
        _check_count("RandomInsertion", n)
        super().__init__(seed)
        self.n, self.synonyms, self.words = n, synonyms, words

    def apply(self, tokens: Tokens, rng: np.random.Generator) -> Tokens:
        return random_insertion(tokens, self.n, rng, self.synonyms, self.words)


class SynonymReplacement(_Transform):
    def __init__(self, n: int = 1, seed: Any = 0, synonyms: Mapping = SYNONYMS) -> None:
        _check_count("SynonymReplacement", n)
        super().__init__(seed)
        self.n, self.synonyms = n, synonyms

    def apply(self, tokens: Tokens, rng: np.random.Generator) -> Tokens:
        return synonym_replacement(tokens, self.n, rng, self.synonyms)


class EmbeddingNoise:
    """Seeded :func:`embedding_noise` as a callable: ``EmbeddingNoise(0.1)(x, mask=m)``.
    Apply it in training only (it has no notion of train/eval mode)."""

    def __init__(self, std: float = 0.1, seed: Any = 0) -> None:
        if std < 0:
            raise ValueError(f"EmbeddingNoise: std must be >= 0, got {std}")
        self.std = std
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def __call__(self, x: Any, mask: Any = None, rng: np.random.Generator | None = None) -> Any:
        return embedding_noise(x, self.std, self.rng if rng is None else rng, mask)


class Compose:
    """Apply transforms in order. Steps with an ``rng`` keyword (the seeded transforms
    here) all receive the generator of this call (``rng=`` or the Compose's own, seeded
    by ``seed``); other callables (an encoder, padding) are called with the value only.
    ``batch(examples)`` maps the composition over a list of examples."""

    def __init__(self, transforms: Sequence[Callable], seed: Any = 0) -> None:
        self.transforms = list(transforms)
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def __call__(self, example: Any, rng: np.random.Generator | None = None) -> Any:
        rng = self.rng if rng is None else rng
        for t in self.transforms:
            seeded = isinstance(t, (_Transform, Compose, EmbeddingNoise))
            example = t(example, rng=rng) if seeded else t(example)
        return example

    def batch(self, examples: Sequence[Any], rng: np.random.Generator | None = None) -> list:
        return [self(ex, rng) for ex in examples]


class AugmentedDataset:
    """A map-style dataset whose item i is ``transform(dataset[i], rng=default_rng((seed,
    epoch, i)))`` (module docstring: why, and how to hand it to DataLoader)."""

    def __init__(self, dataset: Any, transform: Callable, seed: int = 0) -> None:
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        i = int(i)
        if i < 0:
            i += len(self)
        rng = np.random.default_rng((self.seed, self.epoch, i))
        if isinstance(self.transform, (_Transform, Compose, EmbeddingNoise)):
            return self.transform(self.dataset[i], rng=rng)
        return self.transform(self.dataset[i])
