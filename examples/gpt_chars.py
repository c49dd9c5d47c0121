"""Train a small GPT on the bytes of the Python standard library's source code.

    python examples/gpt_chars.py               # validation loss falls far below the unigram baseline
    python examples/gpt_chars.py --checkpoint  # recompute each block's activations in backward

The model (``distgrad.train.models.GPT``) is the usual decoder: token and position
embeddings, pre-LayerNorm blocks of causal self-attention and a GELU MLP, a final
LayerNorm and a linear head. It is trained with AdamW and a cosine learning-rate
schedule after a linear warm-up.
"""
import argparse
import math
import time

import distgrad as dg
import distgrad.nn.functional as F
from distgrad.data import DataLoader
from distgrad.data.datasets import CharCorpus
from distgrad.train.models import GPT


def evaluate(model, data, batches, batch_size, gen):
    model.eval()
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen)
    total, n = 0.0, 0
    with dg.no_grad():
        for (x, y), _ in zip(loader, range(batches)):
            logits = model(x)
            total += F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1)).item()
            n += 1
    model.train()
    return total / n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", action="store_true", help="checkpoint each transformer block")
    args = ap.parse_args()

    dg.manual_seed(args.seed)
    train = CharCorpus(args.context, "train")
    val = CharCorpus(args.context, "val")
    baseline = val.unigram_entropy()
    model = GPT(width=args.width, heads=args.heads, layers=args.layers, context=args.context,
                checkpoint_blocks=args.checkpoint)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"GPT with {n_params:,} parameters; {len(train.data):,} train bytes; "
          f"unigram baseline {baseline:.3f} nats/byte")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = dg.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                          {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    warm = dg.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=args.warmup)
    cos = dg.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps - args.warmup, eta_min=args.lr / 10)
    sched = dg.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[args.warmup])

    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True,
                        generator=dg.Generator().manual_seed(args.seed))
    batches = iter(loader)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, y = next(batches)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        opt.zero_grad()
        loss.backward()
        dg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps:
            tokens = step * args.batch_size * args.context
            print(f"step {step:5d}  train loss {loss.item():.3f}  lr {sched.get_last_lr()[0]:.2e}  "
                  f"{tokens / (time.perf_counter() - t0):,.0f} tokens/s")
    val_loss = evaluate(model, val, 20, 32, dg.Generator().manual_seed(1))
    print(f"validation loss {val_loss:.3f} nats/byte vs unigram baseline {baseline:.3f} "
          f"({math.exp(val_loss):.2f} vs {math.exp(baseline):.2f} perplexity)")

    prompt = dg.tensor(list(b"def "), dtype=dg.int64).unsqueeze(0)
    with dg.no_grad():
        model.eval()
        for _ in range(60):
            logits = model(prompt[:, -args.context:])[:, -1]
            nxt = dg.multinomial(F.softmax(logits / 0.8, -1), 1)
            prompt = dg.cat([prompt, nxt], 1)
    print("sample:", repr(val.decode(prompt[0])))


if __name__ == "__main__":
    main()
