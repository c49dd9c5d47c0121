"""Train an MLP on the 8x8 handwritten digits (scikit-learn's copy, no download).

    pip install -e ".[examples]"
    python examples/mlp_digits.py              # about 97% validation accuracy
    python examples/mlp_digits.py --checkpoint # same run, activations recomputed in backward
"""
import argparse
import time

import distgrad as dg
import distgrad.nn.functional as F
from distgrad.data import DataLoader
from distgrad.data.datasets import digits
from distgrad.train.models import MLP


def evaluate(model, loader):
    model.eval()
    correct = total = 0
    with dg.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    model.train()
    return correct / total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", action="store_true", help="checkpoint each hidden block")
    args = ap.parse_args()

    dg.manual_seed(args.seed)
    train, val = digits("train"), digits("val")
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True,
                        generator=dg.Generator().manual_seed(args.seed))
    val_loader = DataLoader(val, batch_size=512)
    model = MLP(64, 10, width=256, layers=2, dropout=0.1, checkpoint_blocks=args.checkpoint)
    opt = dg.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = dg.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(loader))

    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        total = 0.0
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(y)
        if epoch % 5 == 0 or epoch == args.epochs:
            print(f"epoch {epoch:3d}  train loss {total / len(train):.4f}  "
                  f"val accuracy {evaluate(model, val_loader):.2%}")
    print(f"{len(train)} train / {len(val)} val images, {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
