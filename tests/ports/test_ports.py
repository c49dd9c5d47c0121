"""The port suite: public PyTorch programs (``programs/``, copied unedited) run with
``import torch`` answered by distgrad, compared with the same programs under real
PyTorch from the same initial weights and random numbers (see ``harness.py``).

Each program runs in a child process (the shim is never installed in this one). The
PyTorch reference runs once for all programs, in one child process started at the
first test, while the distgrad runs proceed.

Compared, per program: every loss value the program computed, in order (the values of
the loss functions of ``torch.nn.functional``, training and evaluation), and every
entry of the state dict of each module left in the program's globals after it ended
(weights, biases, BatchNorm running statistics and counters). The error measure is
``|distgrad - torch| / max(|torch|, 1)`` elementwise: relative for values above 1,
absolute below.
"""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS = os.path.join(HERE, "harness.py")
sys.path.insert(0, HERE)
from harness import PROGRAMS  # noqa: E402  (numpy only; imports no torch)

TIMEOUT_S = 120
HAVE_TORCH = importlib.util.find_spec("torch") is not None

# tolerance on the error measure above, per program (float64 programs ~1e-10, float32 ~1e-5)
TOLERANCE = {name: (1e-5 if spec["dtype"] == "float32" else 1e-10)
             for name, spec in PROGRAMS.items()}
# 425 steps of SGD at lr 0.1 on features x..x^4 (ill-conditioned): round-off grows to ~4e-10
TOLERANCE["examples_regression"] = 1e-8
# its convolutions have biases followed by BatchNorm, so their gradients are round-off
# only, which Adam divides by sqrt(v) + eps: those biases drift by ~1e-9 in both libraries
TOLERANCE["yunjey_cnn"] = 1e-8
# its PositionalEncoding builds the 5000-row table in float32 (`dtype=torch.float`,
# `.float()`): float32 exp and sin differ by an ulp between the libraries (one of the 8
# entries of div_term: PyTorch's exp is correctly rounded there, numpy's is 1 ulp off),
# which sin(position * div_term) scales to 7.6e-6 in the table's (saved) far rows; the 5
# rows used differ by <= 6e-8, the losses by ~1e-8 and the weights by ~4e-8 (lr 20)
TOLERANCE["examples_word_language_model_transformer"] = 1e-5

# programs that end with torch.save(<module>.state_dict(), <file>): file -> module variable
SAVES_CHECKPOINT = {name: {"model.ckpt": "model"} for name in [
    "yunjey_linear_regression", "yunjey_logistic_regression", "yunjey_feedforward", "yunjey_cnn",
    "yunjey_rnn", "yunjey_birnn"]}
SAVES_CHECKPOINT["yunjey_gan"] = {"G.ckpt": "G", "D.ckpt": "D"}
SAVES_CHECKPOINT["examples_dcgan"] = {"netG_epoch_0.pth": "netG", "netD_epoch_0.pth": "netD"}


def _env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               DISTGRAD_THREADS="1")
    return env


def _harness(backend, outdir, names):
    return subprocess.Popen([sys.executable, HARNESS, backend, str(outdir), *names],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env())


def _finish(proc, what, timeout=TIMEOUT_S):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"{what} ran past {timeout} s:\n{out[-4000:]}")
    if proc.returncode != 0:
        pytest.fail(f"{what} failed (exit {proc.returncode}):\n{out[-4000:]}")
    return out


class _Reference:
    """The PyTorch runs of all programs, started on first use, waited for once."""

    def __init__(self, outdir):
        self.outdir = outdir
        self.proc = None
        self.done = False

    def start(self):
        if self.proc is None:
            self.proc = _harness("torch", self.outdir, list(PROGRAMS))

    def result(self, name):
        self.start()
        if not self.done:
            _finish(self.proc, "the PyTorch reference run", timeout=TIMEOUT_S * 3)
            self.done = True
        return np.load(os.path.join(self.outdir, name + ".npz"))


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    if not HAVE_TORCH:
        return None
    return _Reference(tmp_path_factory.mktemp("torch_runs"))


@pytest.fixture(scope="session")
def distgrad_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("distgrad_runs")


def _error(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1.0)))


def _distgrad_result(name, distgrad_dir):
    path = os.path.join(distgrad_dir, name + ".npz")
    if not os.path.exists(path):
        _finish(_harness("distgrad", distgrad_dir, [name]), f"{name} under distgrad")
    return np.load(path)


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_program(name, reference, distgrad_dir):
    if reference is not None:
        reference.start()  # runs alongside this process's distgrad runs
    mine = _distgrad_result(name, distgrad_dir)
    assert mine["losses"].size > 0 and np.all(np.isfinite(mine["losses"])), name
    if reference is None:
        pytest.skip("torch is not installed: ran under distgrad only, nothing to compare with")
    ref = reference.result(name)

    assert list(mine["loss_names"]) == list(ref["loss_names"]), "different loss calls"
    tol = TOLERANCE[name]
    loss_err = _error(mine["losses"], ref["losses"])
    assert loss_err <= tol, f"losses differ by {loss_err:.3g} (tolerance {tol:g})"

    keys = sorted(k for k in ref.files if k not in ("losses", "loss_names"))
    assert keys, "no module found in the program's globals"
    assert sorted(k for k in mine.files if k not in ("losses", "loss_names")) == keys
    for key in keys:
        assert mine[key].shape == ref[key].shape, key
        assert mine[key].dtype == ref[key].dtype, (key, mine[key].dtype, ref[key].dtype)
        err = _error(mine[key], ref[key])
        assert err <= tol, f"{key} differs by {err:.3g} (tolerance {tol:g})"


@pytest.mark.parametrize("name", list(SAVES_CHECKPOINT))
def test_checkpoint_read_by_torch(name, reference, distgrad_dir):
    """The checkpoints a program wrote with distgrad's torch.save load in real PyTorch
    with weights_only=True and hold the program's final weights."""
    mine = _distgrad_result(name, distgrad_dir)
    for filename, var in SAVES_CHECKPOINT[name].items():
        path = os.path.join(distgrad_dir, name, filename)
        assert os.path.exists(path), f"{name} under distgrad wrote no {filename}"
    if reference is None:
        pytest.skip("torch is not installed")
    import torch
    for filename, var in SAVES_CHECKPOINT[name].items():
        state = torch.load(os.path.join(distgrad_dir, name, filename), weights_only=True)
        assert sorted(f"{var}.{k}" for k in state) == sorted(
            k for k in mine.files if k.startswith(var + "."))
        for key, tensor in state.items():
            np.testing.assert_array_equal(tensor.numpy(), mine[f"{var}.{key}"])
