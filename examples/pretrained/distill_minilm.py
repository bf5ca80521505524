"""Distil all-MiniLM-L6-v2 (6 layers) into a 3- or 2-layer sentence encoder.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python examples/pretrained/distill_minilm.py \
        [--layers 3] [--steps 1000] [--out runs/minilm-l3] [--quick]

The sentences are the built-in corpus (Python's pydoc topics) cut by the rule-based
splitter of minilm.train.encoder_distill.split_sentences, deduped, with a seeded 10%
held out. The student copies the teacher's embeddings and ``--layers`` of its blocks
(layer dropping: the first, the last and evenly spaced ones between) and is trained
with AdamW on L = w_mse ||e_s - e_t||^2 + w_cos (1 - cos(e_s, e_t)) + w_hid (hidden
MSE of the mapped layers) against teacher targets computed once. Printed: the held-out
cosine (mean / min) and nearest-neighbour agreement of the untrained and the trained
student, and the sentences/s of teacher and student measured side by side (same held-out
sentences, same batch size, median of ``--rounds`` alternating rounds). The student is
saved as a folder that ``minilm.models.load_pretrained(folder)`` and ``minilm embed
--model folder`` read. ``--quick`` (CI, under a minute): 160 training sentences, 20
steps of 16, 64 held-out sentences, one timing round.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from minilm.data.corpus import builtin_corpus  # noqa: E402
from minilm.models import load_pretrained  # noqa: E402
from minilm.train.encoder_distill import (  # noqa: E402
    DistillConfig,
    evaluate_student,
    holdout_split,
    layer_dropped_student,
    narrow_student,
    save_pretrained,
    split_sentences,
    time_encoders,
    train_student,
)


def parse_args(argv: list | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=3, help="student blocks (of the teacher's 6)")
    p.add_argument("--student", choices=("dropped", "narrow"), default="dropped",
                   help="dropped: teacher blocks copied (saved as a folder); narrow: a fresh "
                        "encoder of width --width with a projection to 384 (not saved)")
    p.add_argument("--width", type=int, default=192, help="width of a narrow student")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--w-mse", type=float, default=1.0)
    p.add_argument("--w-cos", type=float, default=1.0)
    p.add_argument("--w-hid", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=5, help="timing rounds (median)")
    p.add_argument("--out", default="runs/minilm-distilled", help="folder for the student")
    p.add_argument("--quick", action="store_true", help="a reduced run for CI (< 60 s)")
    a = p.parse_args(argv)
    for flag, value, low in (("--layers", a.layers, 1), ("--steps", a.steps, 1),
                             ("--batch-size", a.batch_size, 1), ("--rounds", a.rounds, 1)):
        if value < low:
            p.error(f"{flag} {value}: must be >= {low}")
    if a.student == "dropped" and a.layers > 6:
        p.error(f"--layers {a.layers}: the teacher has 6 blocks, keep 1 to 6")
    if a.student == "narrow" and (a.width < 32 or a.width % 32):
        p.error(f"--width {a.width}: must be a positive multiple of 32 (heads of 32 units)")
    return a


def main(argv: list | None = None) -> dict:
    a = parse_args(argv)
    t_start = time.perf_counter()
    sentences = split_sentences(builtin_corpus())
    train, held = holdout_split(sentences, 0.1, seed=a.seed)
    steps, batch, rounds = a.steps, a.batch_size, a.rounds
    if a.quick:
        train, held = train[:160], held[:48]
        steps, batch, rounds = 20, 16, 1
    print(f"{len(sentences)} sentences: {len(train)} for training, {len(held)} held out")
    teacher, tokenizer = load_pretrained("all-MiniLM-L6-v2")
    if a.student == "dropped":
        student = layer_dropped_student(teacher, a.layers)
    else:
        student = narrow_student(teacher, a.layers, a.width, num_heads=max(1, a.width // 32),
                                 seed=a.seed)
    print(f"student: {a.student}, {a.layers} layers, {student.encoder.bert.num_parameters():,} "
          f"encoder parameters (teacher {teacher.bert.num_parameters():,}); hidden map "
          f"student->teacher layer {student.layer_map}")
    teacher_emb = teacher.encode(held, batch_size=batch)
    before = evaluate_student(student, teacher, held, batch, teacher_emb)
    print(f"untrained student: held-out cosine mean {before['cos_mean']:.4f} min "
          f"{before['cos_min']:.4f}, nearest-neighbour agreement {before['retrieval']:.3f}")
    cfg = DistillConfig(steps=steps, batch_size=batch, lr=a.lr, w_mse=a.w_mse, w_cos=a.w_cos,
                        w_hid=a.w_hid, seed=a.seed, log_every=max(1, steps // 10))
    t0 = time.perf_counter()
    losses = train_student(student, teacher, train, cfg)
    train_s = time.perf_counter() - t0
    after = evaluate_student(student, teacher, held, batch, teacher_emb)
    print(f"trained student ({steps} steps, {train_s:.0f} s): held-out cosine mean "
          f"{after['cos_mean']:.4f} min {after['cos_min']:.4f}, nearest-neighbour agreement "
          f"{after['retrieval']:.3f} (n = {after['n']})")
    speed = time_encoders({"teacher": teacher, "student": student}, held, batch, rounds)
    speedup = speed["student"] / speed["teacher"]
    print(f"sentences/s (batch {batch}, median of {rounds}): teacher {speed['teacher']:.1f}, "
          f"student {speed['student']:.1f}, speed-up {speedup:.2f}x")
    saved = None
    if a.student == "dropped":
        saved = save_pretrained(student, tokenizer, a.out)
        print(f"saved the student to {saved} (load_pretrained({str(saved)!r}))")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return {"before": before, "after": after, "speed": speed, "speedup": speedup,
            "losses": losses, "folder": saved, "student": student, "held": held}


if __name__ == "__main__":
    main()
