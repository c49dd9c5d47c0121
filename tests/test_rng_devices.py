"""The GPU generators: Philox4x32-10 against its published known-answer vectors, the
(seed, offset) state and its save/restore, fork_rng and checkpointing restoring every
generator; on a GPU, the kernel's draws equal the numpy reference bit for bit and
checkpointed dropout gives the gradients of the run without checkpointing."""
import numpy as np
import pytest

import distgrad as dg
from distgrad import random as R

HAS_CUDA = dg.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA (CuPy and an NVIDIA GPU)")

# Random123's kat_vectors for philox4x32 with 10 rounds: counter, key, output
KAT = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
       ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
       ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]


@pytest.mark.parametrize("counter,key,want", KAT)
def test_philox_known_answers(counter, key, want):
    got = R.philox4x32([np.array([w, w], np.uint32) for w in counter], key)
    assert got.dtype == np.uint32 and got.shape == (4, 2)
    assert tuple(int(v) for v in got[:, 0]) == want and tuple(int(v) for v in got[:, 1]) == want


@pytest.fixture
def fresh_generators():
    saved = dict(R._device_generators), R._cuda_seed, dg.random.default_generator.get_state()
    R._device_generators.clear()
    yield
    R._device_generators.clear()
    R._device_generators.update(saved[0])
    R._cuda_seed = saved[1]
    dg.random.default_generator.set_state(saved[2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_draws_are_uniform_and_follow_the_state(fresh_generators, dtype):
    g = R.DeviceGenerator(0, seed=1234)
    state = g.get_state()
    assert state.dtype == dg.uint8 and state.numel() == 16
    a = g.uniform_numpy(100_001, dtype)
    b = g.uniform_numpy(7, dtype)
    assert a.dtype == dtype and a.shape == (100_001,) and g.get_offset() == 2
    assert 0.0 <= a.min() and a.max() < 1.0
    assert abs(a.mean() - 0.5) < 4 * np.sqrt(1 / 12 / a.size)
    assert abs(a.var() - 1 / 12) < 0.002
    np.testing.assert_array_less(np.abs(np.corrcoef(a[:-1], a[1:])[0, 1]), 0.02)
    g.set_state(state)
    np.testing.assert_array_equal(g.uniform_numpy(100_001, dtype), a)
    np.testing.assert_array_equal(g.uniform_numpy(7, dtype), b)
    assert not np.array_equal(b, a[:7])                       # another offset, other numbers
    assert not np.array_equal(R.DeviceGenerator(0, seed=1235).uniform_numpy(7, dtype), a[:7])
    with pytest.raises(RuntimeError, match="16 bytes"):
        g.set_state(dg.zeros(3, dtype=dg.uint8))


def test_manual_seed_and_fork_rng_cover_the_gpu_generators(fresh_generators):
    dg.manual_seed(7)
    g0 = R.device_generator(0)
    assert g0.initial_seed() == 7 and g0.get_offset() == 0
    g0.uniform_numpy(5)
    R.device_generator(1)                                     # made after the seed: seeded too
    assert R.device_generator(1).initial_seed() == 7
    cpu_before = dg.rand(3).numpy()
    dg.manual_seed(7)
    assert g0.get_offset() == 0                               # manual_seed rewinds every generator
    with R.fork_rng():
        g0.uniform_numpy(5)
        dg.rand(3)
        assert g0.get_offset() == 1
    assert g0.get_offset() == 0
    np.testing.assert_array_equal(dg.rand(3).numpy(), cpu_before)
    with R.fork_rng(devices=[1]):
        R.device_generator(1).uniform_numpy(3)
        g0.uniform_numpy(3)
    assert R.device_generator(1).get_offset() == 0 and g0.get_offset() == 1   # only device 1 forked
    states = R.get_all_states(devices=[2])
    assert set(states[1]) == {0, 1, 2}
    R.device_generator(2).uniform_numpy(3)
    R.set_all_states(states)
    assert R.device_generator(2).get_offset() == 0


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 5, 4096 + 3])
def test_gpu_kernel_equals_the_numpy_reference(fresh_generators, dtype, n):
    g = R.device_generator(0).manual_seed(99)
    ref = R.DeviceGenerator(0, seed=99)
    for _ in range(3):
        got = g.uniform((n,), dtype).get()
        np.testing.assert_array_equal(got, ref.uniform_numpy(n, dtype))


@gpu
def test_gpu_rng_state_api_and_checkpointed_dropout_is_exact(fresh_generators):
    from distgrad.utils.checkpoint import checkpoint

    dg.cuda.manual_seed_all(3)
    state = dg.cuda.get_rng_state()
    x = dg.randn(64, 32, device="cuda", requires_grad=True)
    a = dg.nn.functional.dropout(x, 0.5).detach().cpu().numpy()
    dg.cuda.set_rng_state(state)
    b = dg.nn.functional.dropout(x, 0.5).detach().cpu().numpy()
    np.testing.assert_array_equal(a, b)

    lin = dg.nn.Linear(32, 32).cuda()

    def block(t):
        return dg.nn.functional.dropout(dg.tanh(lin(t)), 0.3)

    grads = []
    for use_ckpt, reentrant in ((False, None), (True, False), (True, True)):
        dg.cuda.manual_seed_all(11)
        x.grad = None
        lin.zero_grad()
        y = checkpoint(block, x, use_reentrant=reentrant) if use_ckpt else block(x)
        (y * y).sum().backward()
        grads.append((x.grad.cpu().numpy(), lin.weight.grad.cpu().numpy()))
    for g in grads[1:]:
        np.testing.assert_array_equal(g[0], grads[0][0])
        np.testing.assert_array_equal(g[1], grads[0][1])
