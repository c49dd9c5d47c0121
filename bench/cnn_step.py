"""One training step (forward, backward, optimizer) of two convolutional models,
distgrad against PyTorch on the CPU in the same run, and distgrad's convolution
forward against a hand-written numpy one.

- LeNet: batch 64, 1x28x28: conv 5x5 (6) - relu - max pool 2 - conv 5x5 (16) -
  relu - max pool 2 - linear 120 - relu - linear 84 - relu - linear 10,
  cross-entropy, SGD with momentum.
- ResNet block: batch 32, 64 channels, 16x16: x + conv3x3(relu(conv3x3(x))),
  then relu, average pool, linear 10; cross-entropy, SGD with momentum.

Both libraries run the same model code from the same initial weights, and the
first steps' losses are compared as a correctness check. Each library is timed in
processes of its own, one after the other round by round (see ``_isolated.py``
for why), keeping each one's best round; ``--threads`` sets both libraries'
threads (default: each one's own).
"""
from __future__ import annotations

import argparse

import numpy as np

import distgrad as dg

import _isolated

torch = _isolated.import_torch()  # None without PyTorch (the comparison is skipped) and in distgrad's processes

MODELS = ("LeNet", "ResNet block")


def make_lenet(lib):
    nn, F = lib.nn, lib.nn.functional

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 5)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.pool = nn.MaxPool2d(2)
            self.fc1 = nn.Linear(256, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x))).flatten(1)
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    return LeNet()


def make_resblock(lib, width=64):
    nn, F = lib.nn, lib.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(width, width, 3, padding=1)
            self.conv2 = nn.Conv2d(width, width, 3, padding=1)
            self.head = nn.Linear(width, 10)

        def forward(self, x):
            y = F.relu(x + self.conv2(F.relu(self.conv1(x))))
            return self.head(F.adaptive_avg_pool2d(y, 1).flatten(1))

    return Block()


class Job:
    def __init__(self, lib, model, x, y):
        self.lib, self.model, self.x, self.y = lib, model, x, y
        self.opt = lib.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(self):
        loss = self.lib.nn.functional.cross_entropy(self.model(self.x), self.y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()


def build(name):
    rng = np.random.default_rng(0)
    dg.manual_seed(0)
    if name == "LeNet":
        xs, make = rng.standard_normal((64, 1, 28, 28)).astype(np.float32), make_lenet
    else:
        xs, make = rng.standard_normal((32, 64, 16, 16)).astype(np.float32), make_resblock
    ys = rng.integers(0, 10, xs.shape[0])
    model = make(dg)
    jobs = {"distgrad": Job(dg, model, dg.tensor(xs), dg.tensor(ys))}
    if torch is not None:
        tmodel = make(torch)
        tmodel.load_state_dict({k: torch.tensor(v.numpy()) for k, v in model.state_dict().items()})
        jobs["torch"] = Job(torch, tmodel, torch.tensor(xs), torch.tensor(ys))
    return jobs


def numpy_conv(x, w, b, pad):
    """A hand-written im2col convolution (stride 1): the floor distgrad's forward is held to."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))  # n c oh ow kh kw
    cols = np.ascontiguousarray(win.transpose(1, 4, 5, 0, 2, 3)).reshape(c * kh * kw, n * oh * ow)
    y = (w.reshape(o, -1) @ cols).reshape(o, n, oh, ow).transpose(1, 0, 2, 3)
    return y + b[:, None, None]


def conv_forward_times(lib, rounds, steps) -> dict:
    """conv2d forward (no graph) on the ResNet block's shape: distgrad's and the
    hand-written numpy_conv (checked against each other first), or PyTorch's."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 64, 16, 16)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    if lib == "torch":
        tx, tw, tb = torch.tensor(x), torch.tensor(w), torch.tensor(b)
        with torch.no_grad():
            return {"conv2d forward": _isolated.best_of(lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=1),
                                              rounds, steps)}
    tx, tw, tb = dg.tensor(x), dg.tensor(w), dg.tensor(b)
    F = dg.nn.functional
    assert np.allclose(F.conv2d(tx, tw, tb, padding=1).numpy(), numpy_conv(x, w, b, 1), rtol=1e-4, atol=1e-3)
    return {"conv2d forward": _isolated.best_of(lambda: F.conv2d(tx, tw, tb, padding=1), rounds, steps),
            "numpy im2col": _isolated.best_of(lambda: numpy_conv(x, w, b, 1), rounds, steps)}


def child(lib, steps):
    """``--child LIB``: warm up and time one library in this process, and report
    {model: seconds per step} (and the convolution forward)."""
    out = _isolated.time_models(build, MODELS, lib, steps)
    out.update(conv_forward_times(lib, 2, steps))
    _isolated.report(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _isolated.add_arguments(ap)
    args = _isolated.start(ap, dg, torch, build, MODELS, child)
    if args is None:  # a child process: it has timed and reported
        return
    print(f"each library in processes of its own, {args.rounds} alternating rounds")
    rounds = _isolated.run_rounds(__file__, _isolated.contenders(torch is not None), args.rounds,
                                  _isolated.child_args(args))
    for name in MODELS:
        print(_isolated.line(name, rounds, 1.5))
    conv = {label: min(r["conv2d forward"]) for label, r in rounds.items()}
    im2col = min(rounds["distgrad"]["numpy im2col"])
    text = (f"conv2d forward 32x64x16x16, 3x3: distgrad {conv['distgrad'] * 1e3:.2f} ms, numpy im2col "
            f"{im2col * 1e3:.2f} ms, distgrad / numpy {conv['distgrad'] / im2col:.2f} x")
    if "torch" in conv:
        text += f", torch {conv['torch'] * 1e3:.2f} ms"
    print(text)


if __name__ == "__main__":
    main()
