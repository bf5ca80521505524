"""A character-level LSTM language model on the built-in corpus, trained with truncated
backpropagation through time (docs/recurrent.md).

    python examples/lstm_language_model.py [--steps 200] [--hidden 128] [--layers 1]
                                           [--batch 32] [--bptt 32] [--sample 200]

The training text is cut into ``--batch`` contiguous streams read side by side, ``--bptt``
characters at a time; the LSTM state at the end of one chunk is the initial state of
the next, detached (``nn.detach_state``), so the model sees the whole stream while the
gradient stops at each chunk boundary. Prints the training loss, the validation loss and
perplexity before and after training, and a sample.
"""

import argparse
import math
import time

import numpy as np

import minilm as ml
import minilm.functional as F
from minilm import nn, optim
from minilm.data import CharTokenizer, load_corpus


class CharLSTM(nn.Module):
    """ids (B, T) → embedding → LSTM → next-character logits (B, T, V)."""

    def __init__(self, vocab_size: int, embed: int, hidden: int, layers: int,
                 dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True,
                            dropout=dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, ids, state=None):
        out, state = self.lstm(self.embed(ids), state)
        return self.head(out), state


def streams(tokens: np.ndarray, batch: int) -> np.ndarray:
    """(batch, n): the tokens cut into ``batch`` contiguous streams of equal length."""
    n = len(tokens) // batch
    return tokens[:n * batch].reshape(batch, n)


def chunk_loss(model, data, start, bptt, state):
    x = ml.tensor(data[:, start:start + bptt])
    y = ml.tensor(data[:, start + 1:start + bptt + 1])
    logits, state = model(x, state)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    return loss, state


def evaluate(model, data, bptt, max_chunks=8) -> float:
    """Mean loss over the first chunks of the validation streams, state carried over."""
    model.eval()
    total, state = [], None
    with ml.no_grad():
        for start in range(0, min(data.shape[1] - 1 - bptt, max_chunks * bptt) + 1, bptt):
            loss, state = chunk_loss(model, data, start, bptt, state)
            total.append(loss.item())
    model.train()
    return float(np.mean(total))


def sample(model, tok, prompt: str, n: int, temperature: float, rng) -> str:
    """Feed ``prompt``, then draw ``n`` characters one at a time, carrying the state."""
    model.eval()
    ids = tok.encode(prompt)
    with ml.no_grad():
        logits, state = model(ml.tensor(np.asarray([ids], dtype=np.int64)))
        for _ in range(n):
            z = logits.numpy()[0, -1].astype(np.float64) / temperature
            p = np.exp(z - z.max())
            nxt = int(rng.choice(len(p), p=p / p.sum()))
            ids.append(nxt)
            logits, state = model(ml.tensor(np.asarray([[nxt]], dtype=np.int64)), state)
    model.train()
    return tok.decode(ids)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="training chunks (optimizer steps)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--embed", type=int, default=32)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.0, help="between LSTM layers")
    p.add_argument("--batch", type=int, default=32, help="parallel streams")
    p.add_argument("--bptt", type=int, default=32, help="characters per chunk")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--sample", type=int, default=200, help="characters to generate")
    args = p.parse_args()

    text = load_corpus()
    tok = CharTokenizer.train(text)
    tokens = np.asarray(tok.encode(text), dtype=np.int64)
    split = int(0.95 * len(tokens))
    train_data = streams(tokens[:split], args.batch)
    val_data = streams(tokens[split:], args.batch)

    ml.manual_seed(0)
    model = CharLSTM(tok.vocab_size, args.embed, args.hidden, args.layers, args.dropout)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    print(f"vocab {tok.vocab_size}, {model.num_parameters():,} parameters, "
          f"{args.batch} streams of {train_data.shape[1]:,} characters")
    before = evaluate(model, val_data, args.bptt)

    t0, state, start = time.perf_counter(), None, 0
    for step in range(1, args.steps + 1):
        if start + args.bptt + 1 > train_data.shape[1]:
            start, state = 0, None  # the end of the streams: start over
        loss, state = chunk_loss(model, train_data, start, args.bptt, state)
        state = nn.detach_state(state)  # truncated BPTT: keep the value, cut the graph
        start += args.bptt
        loss.backward()
        optim.clip_grad_norm_(list(model.parameters()), 1.0)
        opt.step()
        opt.zero_grad()
        if step % max(1, args.steps // 10) == 0 or step == args.steps:
            print(f"step {step:5d}  train loss {loss.item():.3f}  "
                  f"({(time.perf_counter() - t0) / step * 1e3:.0f} ms/step)")

    after = evaluate(model, val_data, args.bptt)
    print(f"validation loss {before:.3f} -> {after:.3f}  "
          f"(perplexity {math.exp(before):.1f} -> {math.exp(after):.1f})")
    if args.sample:
        print("sample:", repr(sample(model, tok, "The ", args.sample, 0.8,
                                     np.random.default_rng(0))))


if __name__ == "__main__":
    main()
