"""conv3d / conv_transpose3d, unfold / fold, adaptive max pooling, max unpooling and
interpolate (with their modules) against PyTorch: values, gradients, indices, node
names; second derivatives by gradgradcheck; errors."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import distgrad as dg
from distgrad.autograd import gradcheck, gradgradcheck

torch = pytest.importorskip("torch")
DF, TF = dg.nn.functional, torch.nn.functional


def _parity(fd, ft, arrays, seed=0, atol=1e-12, name=True):
    """Run both libraries on the same float64 arrays; compare outputs, node names and
    the gradients of a random weighting of the output."""
    rng = np.random.default_rng(seed)
    ds = [dg.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    yd, yt = fd(*ds), ft(*ts)
    if isinstance(yt, tuple):
        for a, b in zip(yd[1:], yt[1:]):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        yd, yt = yd[0], yt[0]
    assert tuple(yd.shape) == tuple(yt.shape)
    np.testing.assert_allclose(yd.detach().numpy(), yt.detach().numpy(), rtol=atol, atol=atol)
    if name:
        assert yd.grad_fn.name() == yt.grad_fn.name()
    w = rng.standard_normal(tuple(yt.shape))
    (yd * dg.tensor(w)).sum().backward()
    (yt * torch.tensor(w)).sum().backward()
    for a, b in zip(ds, ts):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=atol, atol=atol)


RNG = np.random.default_rng(3)


@pytest.mark.parametrize("kw", [{}, {"stride": (1, 2, 1), "padding": 1, "groups": 2},
                                {"padding": "same", "dilation": (1, 2, 1)}])
def test_conv3d(kw):
    x, w, b = RNG.standard_normal((2, 4, 5, 6, 5)), RNG.standard_normal((6, 4 // kw.get("groups", 1), 3, 2, 3)), \
        RNG.standard_normal(6)
    _parity(lambda *a: DF.conv3d(*a, **kw), lambda *a: TF.conv3d(*a, **kw), [x, w, b])


def test_conv_transpose3d_and_modules():
    x, w = RNG.standard_normal((2, 4, 3, 4, 3)), RNG.standard_normal((4, 3, 2, 3, 2))
    kw = {"stride": 2, "padding": 1, "output_padding": 1}
    _parity(lambda *a: DF.conv_transpose3d(*a, **kw), lambda *a: TF.conv_transpose3d(*a, **kw), [x, w])
    for cls, args in (("Conv3d", (4, 6, 3)), ("ConvTranspose3d", (4, 3, (2, 3, 2)))):
        tm = getattr(torch.nn, cls)(*args, stride=2, padding=1).double()
        dm = getattr(dg.nn, cls)(*args, stride=2, padding=1).double()
        dm.load_state_dict({k: dg.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
        assert repr(dm) == repr(tm)
        np.testing.assert_allclose(dm(dg.tensor(x)).detach().numpy(), tm(torch.tensor(x)).detach().numpy(),
                                   rtol=1e-12, atol=1e-12)
    sm = dg.nn.Conv3d(2, 2, 3, padding=1, padding_mode="circular").double()
    tm = torch.nn.Conv3d(2, 2, 3, padding=1, padding_mode="circular").double()
    sm.load_state_dict({k: dg.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    xs = RNG.standard_normal((1, 2, 3, 4, 4))
    np.testing.assert_allclose(sm(dg.tensor(xs)).detach().numpy(), tm(torch.tensor(xs)).detach().numpy(),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [{"kernel_size": 2}, {"kernel_size": (2, 3), "dilation": (1, 2), "padding": 1,
                                                      "stride": (2, 1)}])
def test_unfold_fold(kw):
    x = RNG.standard_normal((2, 3, 7, 8))
    _parity(lambda a: DF.unfold(a, **kw), lambda a: TF.unfold(a, **kw), [x])
    _parity(lambda a: DF.unfold(a, **kw), lambda a: TF.unfold(a, **kw), [x[0]])       # unbatched
    cols = TF.unfold(torch.tensor(x), **kw).numpy()
    _parity(lambda a: DF.fold(a, (7, 8), **kw), lambda a: TF.fold(a, (7, 8), **kw), [cols])
    _parity(lambda a: DF.fold(a, (7, 8), **kw), lambda a: TF.fold(a, (7, 8), **kw), [cols[1]])   # unbatched
    um, fm = dg.nn.Unfold(**kw), dg.nn.Fold((7, 8), **kw)
    assert repr(um) == repr(torch.nn.Unfold(**kw)) and repr(fm) == repr(torch.nn.Fold((7, 8), **kw))
    np.testing.assert_array_equal(fm(um(dg.tensor(x))).numpy(),
                                  TF.fold(TF.unfold(torch.tensor(x), **kw), (7, 8), **kw).numpy())


def test_unfold_fold_second_order_and_errors():
    x = dg.randn(1, 2, 4, 4, dtype=dg.float64, requires_grad=True)
    assert gradgradcheck(lambda a: DF.unfold(a, 2, padding=1, stride=2) ** 2, (x,))
    c = dg.randn(1, 8, 9, dtype=dg.float64, requires_grad=True)
    assert gradgradcheck(lambda a: DF.fold(a, (4, 4), 2, stride=1) ** 2, (c,))
    assert gradgradcheck(lambda a: DF.fold(a, (4, 4), 2, stride=1) ** 2, (c[0].detach().requires_grad_(),))
    assert gradgradcheck(lambda a: DF.unfold(a, 2) ** 2, (x[0].detach().requires_grad_(),))
    with pytest.raises(RuntimeError, match="Only 3D or 4D"):
        DF.unfold(dg.zeros(4, 4), 2)
    with pytest.raises(RuntimeError, match="number of sliding blocks"):
        DF.fold(dg.zeros(1, 8, 7), (4, 4), 2)
    with pytest.raises(RuntimeError, match="divisible by the product of kernel_size"):
        DF.fold(dg.zeros(1, 7, 9), (4, 4), 2)


@pytest.mark.parametrize("size", [(1, 1), (3, 4), (7, 9), (2, None), 5, (4, 3)])
def test_adaptive_max_pool2d(size):
    x = np.maximum(RNG.standard_normal((2, 3, 7, 9)), 0.0)   # many ties at zero
    x[0, 0, 1, 2] = np.nan
    x[1, 2, 3:5, 3:5] = np.nan
    _parity(lambda a: DF.adaptive_max_pool2d(a, size, return_indices=True),
            lambda a: TF.adaptive_max_pool2d(a, size, return_indices=True), [x])
    m = dg.nn.AdaptiveMaxPool2d(size)
    assert repr(m) == repr(torch.nn.AdaptiveMaxPool2d(size))


def test_adaptive_max_pool1d_and_second_order():
    x = RNG.standard_normal((2, 3, 10))
    _parity(lambda a: DF.adaptive_max_pool1d(a, 4, True), lambda a: TF.adaptive_max_pool1d(a, 4, True), [x],
            name=False)
    out, idx = dg.nn.AdaptiveMaxPool1d(3, return_indices=True)(dg.tensor(x))
    np.testing.assert_array_equal(idx.numpy(), torch.nn.AdaptiveMaxPool1d(3, True)(torch.tensor(x))[1].numpy())
    a = dg.tensor(RNG.standard_normal((1, 2, 5, 6)), requires_grad=True)
    assert gradcheck(lambda t: DF.adaptive_max_pool2d(t, (2, 4)), (a,))
    assert gradgradcheck(lambda t: DF.adaptive_max_pool2d(t, (2, 4)) ** 2, (a,))
    with pytest.raises(RuntimeError, match="greater than 0"):
        DF.adaptive_max_pool2d(a, (0, 2))


def test_max_unpool():
    x = RNG.standard_normal((2, 3, 7, 8))
    v, i = TF.max_pool2d(torch.tensor(x), 2, return_indices=True)
    _parity(lambda a: DF.max_unpool2d(a, dg.tensor(i.numpy()), 2, output_size=(7, 8)),
            lambda a: TF.max_unpool2d(a, i, 2, output_size=(7, 8)), [v.numpy()])
    _parity(lambda a: dg.nn.MaxUnpool2d(2)(a, dg.tensor(i.numpy())),
            lambda a: torch.nn.MaxUnpool2d(2)(a, i), [v.numpy()])
    x1 = RNG.standard_normal((2, 3, 10))
    v1, i1 = TF.max_pool1d(torch.tensor(x1), 3, 2, 1, return_indices=True)
    _parity(lambda a: DF.max_unpool1d(a, dg.tensor(i1.numpy()), 3, 2, 1, output_size=(10,)),
            lambda a: TF.max_unpool1d(a, i1, 3, 2, 1, output_size=(10,)), [v1.numpy()], name=False)
    with pytest.raises(RuntimeError, match="invalid max index: 9"):   # as PyTorch: the default size is 9
        DF.max_unpool1d(dg.tensor(v1.numpy()), dg.tensor(i1.numpy()), 3, 2, 1)
    dv, di = DF.max_pool2d(dg.tensor(x), 2, return_indices=True)
    back = DF.max_unpool2d(dv, di, 2, output_size=(7, 8))
    assert gradgradcheck(lambda a: DF.max_unpool2d(a, di, 2) ** 2, (dv.detach().requires_grad_(),))
    assert (back.flatten(-2).gather(-1, di.flatten(-2)) == dv.flatten(-2)).all().item()
    assert (back != 0).sum().item() == (dv != 0).sum().item()
    with pytest.raises(ValueError, match="invalid output_size"):
        DF.max_unpool2d(dv, di, 2, output_size=(12, 8))
    with pytest.raises(RuntimeError, match="shape of indices"):
        DF.max_unpool2d(dv, di[:1], 2)


_INTERP = [("nearest", {"size": (11, 5)}), ("nearest", {"scale_factor": 2}),
           ("nearest", {"scale_factor": (1.7, 0.6)}), ("nearest-exact", {"size": (11, 5)}),
           ("nearest-exact", {"scale_factor": 1.5, "recompute_scale_factor": True}),
           ("bilinear", {"size": (11, 5)}), ("bilinear", {"size": (11, 5), "align_corners": True}),
           ("bilinear", {"scale_factor": (1.7, 0.6)}), ("bilinear", {"scale_factor": 2, "align_corners": True}),
           ("bilinear", {"scale_factor": 1.5, "recompute_scale_factor": True}),
           ("bilinear", {"size": (1, 1), "align_corners": True}),
           ("area", {"size": (3, 5)}), ("area", {"scale_factor": 0.5})]


@pytest.mark.parametrize("mode,kw", _INTERP)
def test_interpolate_2d(mode, kw):
    x = RNG.standard_normal((2, 3, 7, 8))
    _parity(lambda a: DF.interpolate(a, mode=mode, **kw), lambda a: TF.interpolate(a, mode=mode, **kw), [x])


@pytest.mark.parametrize("mode,shape,kw", [("linear", (2, 3, 10), {"scale_factor": 2.5}),
                                           ("linear", (2, 3, 10), {"size": 4, "align_corners": True}),
                                           ("nearest", (2, 3, 10), {"size": 17}),
                                           ("trilinear", (1, 2, 3, 4, 5), {"size": (5, 3, 7)}),
                                           ("nearest", (1, 2, 3, 4, 5), {"scale_factor": 2})])
def test_interpolate_1d_3d(mode, shape, kw):
    _parity(lambda a: DF.interpolate(a, mode=mode, **kw), lambda a: TF.interpolate(a, mode=mode, **kw),
            [RNG.standard_normal(shape)])


def test_interpolate_second_order_modules_and_errors():
    a = dg.tensor(RNG.standard_normal((1, 2, 3, 4)), requires_grad=True)
    for mode in ("nearest", "bilinear"):
        assert gradgradcheck(lambda t: DF.interpolate(t, scale_factor=1.5, mode=mode) ** 2, (a,))
    x = RNG.standard_normal((1, 2, 4, 5))
    for dm, tm in ((dg.nn.Upsample(scale_factor=2, mode="bilinear"), torch.nn.Upsample(scale_factor=2,
                                                                                        mode="bilinear")),
                   (dg.nn.UpsamplingNearest2d(size=(6, 7)), torch.nn.UpsamplingNearest2d(size=(6, 7))),
                   (dg.nn.UpsamplingBilinear2d(scale_factor=3), torch.nn.UpsamplingBilinear2d(scale_factor=3))):
        assert repr(dm) == repr(tm)
        np.testing.assert_allclose(dm(dg.tensor(x)).numpy(), tm(torch.tensor(x)).numpy(), rtol=1e-12, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(DF.upsample_bilinear(dg.tensor(x), scale_factor=2).numpy(),
                                   TF.upsample_bilinear(torch.tensor(x), scale_factor=2).numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="only one of size or scale_factor"):
        DF.interpolate(dg.tensor(x), size=3, scale_factor=2)
    with pytest.raises(NotImplementedError, match="bilinear mode needs 4D input"):
        DF.interpolate(dg.zeros(1, 2, 3), size=4, mode="bilinear")
    with pytest.raises(ValueError, match="align_corners option can only be set"):
        DF.interpolate(dg.tensor(x), size=3, mode="nearest", align_corners=True)
    with pytest.raises(NotImplementedError, match="bicubic"):
        DF.interpolate(dg.tensor(x), size=3, mode="bicubic")
    v, i = DF.max_pool2d_with_indices(dg.tensor(x), 2)
    assert i.dtype == dg.int64 and tuple(v.shape) == (1, 2, 2, 2)


@pytest.mark.parametrize("mode,padding_mode", [("bilinear", "zeros"), ("bilinear", "border"),
                                               ("bilinear", "reflection"), ("nearest", "reflection")])
def test_spatial_transformer_matches_torch(mode, padding_mode):
    """affine_grid then grid_sample, as the spatial-transformer tutorial uses them: values
    and the gradients reaching the input and the affine matrices."""
    x = RNG.standard_normal((2, 3, 6, 5))
    theta = np.array([[[0.9, -0.2, 0.1], [0.3, 1.1, -0.2]], [[1.4, 0.1, 0.0], [-0.1, 0.7, 0.3]]])

    def run(lib, a, t):
        grid = lib.nn.functional.affine_grid(t, (2, 3, 4, 7), align_corners=False)
        return lib.nn.functional.grid_sample(a, grid, mode=mode, padding_mode=padding_mode, align_corners=False)

    _parity(lambda a, t: run(dg, a, t), lambda a, t: run(torch, a, t), [x, theta])


def test_grid_sample_warnings_and_errors():
    x, g = dg.zeros(1, 1, 3, 3), dg.zeros(1, 2, 2, 2)
    with pytest.warns(UserWarning, match="align_corners=False since 1.3.0"):
        DF.grid_sample(x, g)
    with pytest.warns(UserWarning, match="align_corners=False since 1.3.0"):
        DF.affine_grid(dg.zeros(1, 2, 3), (1, 1, 2, 2))
    with pytest.raises(ValueError, match="expected padding_mode"):
        DF.grid_sample(x, g, padding_mode="wrap", align_corners=True)
    with pytest.raises(RuntimeError, match="same batch size"):
        DF.grid_sample(x, dg.zeros(2, 2, 2, 2), align_corners=True)
    with pytest.raises(RuntimeError, match="size 2 in last dimension"):
        DF.grid_sample(x, dg.zeros(1, 2, 2, 3), align_corners=True)
    with pytest.raises(ValueError, match="Nx2x3"):
        DF.affine_grid(dg.zeros(1, 3, 3), (1, 1, 2, 2), align_corners=True)
    with pytest.raises(NotImplementedError, match="bicubic"):
        DF.grid_sample(x, g, mode="bicubic", align_corners=True)
