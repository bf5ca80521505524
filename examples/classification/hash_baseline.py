"""Exercise (1): a hash-table baseline on BBC News.

Every word is hashed into one of 2^bits buckets; a (class x bucket) table counts the
words of each class in the training articles. An article is given the class with the
highest summed smoothed log-count plus log prior: multinomial naive Bayes by hashing
(the formula is in minilm.classify.HashNaiveBayes). One pass over the data, no
training loop; the smoothing alpha is chosen on the validation split unless given.

    python examples/classification/hash_baseline.py [--bits 18] [--alpha A]
"""

import argparse
import time

from minilm.classify import HashNaiveBayes
from minilm.data import load_bbc_news
from minilm.train.classification_metrics import classification_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=18, help="log2 of the number of buckets")
    ap.add_argument("--alpha", type=float, default=None,
                    help="add-alpha smoothing (default: chosen on the validation split)")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--group-duplicates", action="store_true")
    args = ap.parse_args()
    if not 1 <= args.bits <= 26:
        ap.error(f"--bits must be in [1, 26], got {args.bits}")
    if args.alpha is not None and not args.alpha > 0:
        ap.error(f"--alpha must be > 0, got {args.alpha}")

    bbc = load_bbc_news(split_seed=args.split_seed, group_duplicates=args.group_duplicates)
    x_train, y_train = bbc.subset("train")
    x_test, y_test = bbc.subset("test")
    t0 = time.perf_counter()
    nb = HashNaiveBayes(len(bbc.label_names), args.bits,
                        1.0 if args.alpha is None else args.alpha).fit(x_train, y_train)
    if args.alpha is None:
        nb.select_alpha(*bbc.subset("val"))
    scores = nb.scores(x_test)
    m = classification_metrics(y_test, scores.argmax(1), label_names=bbc.label_names)
    print(f"hash naive Bayes (2^{args.bits} buckets, alpha {nb.alpha:g}), "
          f"{len(x_train)} train / {len(x_test)} test articles, {time.perf_counter() - t0:.1f} s")
    print(f"test accuracy {m['accuracy']:.4f}  macro-F1 {m['macro']['f1']:.4f}")


if __name__ == "__main__":
    main()
