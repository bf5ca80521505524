"""The date-normalisation task: human-written dates -> ISO 8601 (a seq2seq toy task).

Each example is a calendar day d between ``start`` and ``end`` written in one of
:data:`DATE_FORMATS` (built with ``datetime`` and ``calendar``: weekday and month names
and abbreviations, ordinals, numeric day/month orders with an explicit marker, two-digit
years), paired with ``d.isoformat()``::

    "Tuesday 3rd of March 1998" -> "1998-03-03"
    "03.03.98"                  -> "1998-03-03"

Two-digit years are read in the 100-year window of the default range: 50..99 -> 19yy,
00..49 -> 20yy, so every source names exactly one day. The held-out split is a set of
days (a seeded permutation of all days in the range), never seen in training in any
format. Characters are the tokens (:class:`CharVocab`, with <pad>=0, <bos>=1, <eos>=2).
"""

from __future__ import annotations

import calendar
import datetime as _dt
import string
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["DATE_FORMATS", "CharVocab", "date_pairs", "date_splits", "date_vocabularies",
           "encode_pairs", "format_date", "ordinal"]


def ordinal(n: int) -> str:
    """1 -> '1st', 2 -> '2nd', 3 -> '3rd', 11..13 -> '11th'.., 22 -> '22nd'."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _day(d: _dt.date) -> str:
    return calendar.day_name[d.weekday()]


def _month(d: _dt.date) -> str:
    return calendar.month_name[d.month]


def _mon(d: _dt.date) -> str:
    return calendar.month_abbr[d.month]


# name -> writer; a dozen ways people write a date (English names from ``calendar``)
DATE_FORMATS: dict[str, Callable[[_dt.date], str]] = {
    "weekday_ordinal_of": lambda d: f"{_day(d)} {ordinal(d.day)} of {_month(d)} {d.year}",
    "day_month_year": lambda d: f"{d.day} {_month(d)} {d.year}",
    "month_day_comma_year": lambda d: f"{_month(d)} {d.day}, {d.year}",
    "abbr_month_day_year": lambda d: f"{_mon(d)} {d.day} {d.year}",
    "abbr_weekday_day_abbr_month": lambda d: f"{_day(d)[:3]}, {d.day} {_mon(d)} {d.year}",
    "the_ordinal_of_month": lambda d: f"the {ordinal(d.day)} of {_month(d)}, {d.year}",
    "upper_weekday_month_day": lambda d: f"{_day(d)}, {_month(d)} {d.day}, {d.year}".upper(),
    "lower_month_ordinal": lambda d: f"{_month(d).lower()} {ordinal(d.day)} {d.year}",
    "ordinal_abbr_month_short_year": lambda d: f"{ordinal(d.day)} {_mon(d)} '{d.year % 100:02d}",
    "dotted_dmy_short": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year % 100:02d}",
    "slash_dmy_marked": lambda d: f"{d.day}/{d.month}/{d.year} (d/m/y)",
    "slash_mdy_marked": lambda d: f"{d.month}/{d.day}/{d.year} (m/d/y)",
    "year_slash_month_day": lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",
}


def format_date(d: _dt.date, fmt: str) -> str:
    """``d`` written in format ``fmt`` (a key of DATE_FORMATS)."""
    if fmt not in DATE_FORMATS:
        raise ValueError(f"format_date: unknown format {fmt!r}; known: {sorted(DATE_FORMATS)}")
    return DATE_FORMATS[fmt](d)


class CharVocab:
    """Characters -> ids, with <pad> = 0, <bos> = 1, <eos> = 2 and the characters after."""

    specials = ("<pad>", "<bos>", "<eos>")
    pad_id, bos_id, eos_id = 0, 1, 2

    def __init__(self, chars: str) -> None:
        chars = "".join(dict.fromkeys(chars))  # unique, in order
        self.itos = list(self.specials) + list(chars)
        self.stoi = {c: i for i, c in enumerate(self.itos) if i >= len(self.specials)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Ids of the characters of ``text`` (optionally behind <bos> / before <eos>)."""
        try:
            ids = [self.stoi[c] for c in text]
        except KeyError as e:
            raise ValueError(f"CharVocab.encode: character {e.args[0]!r} is not in the "
                             "vocabulary") from None
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` up to the first <eos>; <pad> and <bos> are skipped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i >= len(self.specials):
                out.append(self.itos[i])
        return "".join(out)


def date_vocabularies() -> tuple[CharVocab, CharVocab]:
    """(source vocabulary: letters, digits and the punctuation of the formats; target
    vocabulary: digits and '-')."""
    return CharVocab(string.ascii_letters + string.digits + " ,.'/()"), \
        CharVocab(string.digits + "-")


def date_pairs(days: Sequence[_dt.date], n: int, rng: np.random.Generator,
               formats: Sequence[str] | None = None, replace: bool = True) -> list:
    """``n`` (source, target) pairs: a day drawn from ``days`` and a format drawn from
    ``formats`` (all of DATE_FORMATS by default), uniformly."""
    formats = list(DATE_FORMATS) if formats is None else list(formats)
    for f in formats:
        if f not in DATE_FORMATS:
            raise ValueError(f"date_pairs: unknown format {f!r}; known: {sorted(DATE_FORMATS)}")
    if not replace and n > len(days):
        raise ValueError(f"date_pairs: {n} distinct days asked, only {len(days)} available")
    which = rng.choice(len(days), size=n, replace=replace)
    fmts = rng.integers(0, len(formats), size=n)
    return [(format_date(days[i], formats[f]), days[i].isoformat())
            for i, f in zip(which, fmts)]


def date_splits(n_train: int, n_test: int, seed: int = 0, formats: Sequence[str] | None = None,
                start: _dt.date = _dt.date(1950, 1, 1), end: _dt.date = _dt.date(2049, 12, 31),
                test_fraction: float = 0.2) -> tuple[list, list]:
    """(train, held_out) lists of (source, ISO target) pairs. The days of the range are
    permuted with ``seed``; the first ``test_fraction`` of them are held out (each
    held-out pair a distinct day), the others are drawn (with replacement) for training,
    so no day of the held-out set appears in training in any format."""
    if end < start:
        raise ValueError(f"date_splits: end {end} is before start {start}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"date_splits: test_fraction must be in (0, 1), got {test_fraction}")
    n_days = (end - start).days + 1
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_days)
    n_held = max(1, int(round(test_fraction * n_days)))
    held = [start + _dt.timedelta(days=int(i)) for i in order[:n_held]]
    train = [start + _dt.timedelta(days=int(i)) for i in order[n_held:]]
    return (date_pairs(train, n_train, rng, formats),
            date_pairs(held, n_test, rng, formats, replace=False))


def encode_pairs(pairs: Sequence[tuple[str, str]], src_vocab: CharVocab,
                 tgt_vocab: CharVocab) -> dict[str, Any]:
    """A padded batch: ``src`` (B, S) ids and ``src_mask`` (B, S) True at real
    characters; ``tgt_in`` = [<bos>, y] and ``tgt_out`` = [y, <eos>] (B, T), tgt_in
    padded with <pad>, tgt_out with -100 (ignored by the cross-entropy)."""
    src = [src_vocab.encode(s) for s, _ in pairs]
    tgt = [tgt_vocab.encode(t) for _, t in pairs]
    B, S, T = len(pairs), max(map(len, src)), max(map(len, tgt)) + 1
    out = {"src": np.full((B, S), src_vocab.pad_id, dtype=np.int64),
           "tgt_in": np.full((B, T), tgt_vocab.pad_id, dtype=np.int64),
           "tgt_out": np.full((B, T), -100, dtype=np.int64)}
    for b, (s, t) in enumerate(zip(src, tgt)):
        out["src"][b, :len(s)] = s
        out["tgt_in"][b, :len(t) + 1] = [tgt_vocab.bos_id] + t
        out["tgt_out"][b, :len(t) + 1] = t + [tgt_vocab.eos_id]
    out["src_mask"] = out["src"] != src_vocab.pad_id
    return out
