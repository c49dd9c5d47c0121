"""Fit a small two-layer network to a noisy sine curve with distgrad's autograd.

Everything here is plain tensor code: the forward pass builds a graph, backward()
fills .grad, and a hand-written SGD step updates the leaves under no_grad — the
same loop PyTorch users write.
"""
import argparse
import math

import distgrad as dg


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    dg.manual_seed(args.seed)
    x = dg.linspace(-math.pi, math.pi, 256).unsqueeze(1)
    y = x.sin() + 0.05 * dg.randn(256, 1)

    w1 = (dg.randn(1, args.hidden) * 1.0).requires_grad_()
    b1 = dg.zeros(args.hidden, requires_grad=True)
    w2 = (dg.randn(args.hidden, 1) / math.sqrt(args.hidden)).requires_grad_()
    b2 = dg.zeros(1, requires_grad=True)
    params = [w1, b1, w2, b2]

    for step in range(args.steps + 1):
        pred = (x @ w1 + b1).tanh() @ w2 + b2
        loss = ((pred - y) ** 2).mean()
        for p in params:
            p.grad = None
        loss.backward()
        with dg.no_grad():
            for p in params:
                p.sub_(p.grad, alpha=args.lr)
        if step % (args.steps // 5) == 0:
            print(f"step {step:5d}  loss {loss.item():.5f}")
    print(f"final mean squared error {loss.item():.5f} (noise variance is {0.05 ** 2:.5f})")


if __name__ == "__main__":
    main()
