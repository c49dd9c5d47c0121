"""Checks that format_tensor reproduces PyTorch's repr(tensor) character for character."""

import numpy as np
import pytest

from distgrad._tensor_str import format_tensor, get_printoptions, set_printoptions

# Expected strings were printed by torch 2.13.0 (CPU), with "torch." replaced by
# "distgrad." wherever the dtype is named.


@pytest.fixture(autouse=True)
def _default_printoptions():
    set_printoptions(profile="default")
    yield
    set_printoptions(profile="default")


CASES = [
    pytest.param(
        np.array(7.0, np.float32), None, (),
        'tensor(7.)',
        id='scalar_int_valued'),
    pytest.param(
        np.array(-0.5, np.float32), None, (),
        'tensor(-0.5000)',
        id='scalar_neg_frac'),
    pytest.param(
        np.array(np.nan, np.float32), None, (),
        'tensor(nan)',
        id='scalar_nan'),
    pytest.param(
        np.array(5, np.int64), None, (),
        'tensor(5)',
        id='scalar_int'),
    pytest.param(
        np.array(True), None, (),
        'tensor(True)',
        id='scalar_bool'),
    pytest.param(
        np.array([1.0, 2.0], np.float32), None, (),
        'tensor([1., 2.])',
        id='vec_int_valued'),
    pytest.param(
        np.array([0.12345, 2.0], np.float32), None, (),
        'tensor([0.1235, 2.0000])',
        id='vec_frac'),
    pytest.param(
        np.array([1e-5, 1e3], np.float32), None, (),
        'tensor([1.0000e-05, 1.0000e+03])',
        id='vec_sci_small'),
    pytest.param(
        np.array([1.0, 2e8], np.float32), None, (),
        'tensor([1.0000e+00, 2.0000e+08])',
        id='vec_sci_big'),
    pytest.param(
        np.array([0.5, 600.0], np.float32), None, (),
        'tensor([5.0000e-01, 6.0000e+02])',
        id='vec_sci_ratio'),
    pytest.param(
        np.array([-1.5, 2.25, -300.125], np.float32), None, (),
        'tensor([  -1.5000,    2.2500, -300.1250])',
        id='vec_neg'),
    pytest.param(
        np.array([np.inf, np.nan, 1.0], np.float32), None, (),
        'tensor([inf, nan, 1.])',
        id='vec_inf_nan'),
    pytest.param(
        np.array([-np.inf, 0.5, np.nan], np.float32), None, (),
        'tensor([  -inf, 0.5000,    nan])',
        id='vec_neg_inf_frac'),
    pytest.param(
        np.zeros(3, np.float32), None, (),
        'tensor([0., 0., 0.])',
        id='vec_zeros'),
    pytest.param(
        np.array([-0.0, 1.0], np.float32), None, (),
        'tensor([-0., 1.])',
        id='vec_neg_zero'),
    pytest.param(
        np.array([1, 2, 3], np.int64), None, (),
        'tensor([1, 2, 3])',
        id='vec_int'),
    pytest.param(
        np.array([-100, 2, 30], np.int64), None, (),
        'tensor([-100,    2,   30])',
        id='vec_int_neg'),
    pytest.param(
        np.array([True, False]), None, (),
        'tensor([ True, False])',
        id='vec_bool'),
    pytest.param(
        np.arange(6, dtype=np.float32).reshape(2, 3), None, (),
        'tensor([[0., 1., 2.],\n'
        '        [3., 4., 5.]])',
        id='mat'),
    pytest.param(
        np.arange(6, dtype=np.float32).reshape(2, 3).T, None, (),
        'tensor([[0., 3.],\n'
        '        [1., 4.],\n'
        '        [2., 5.]])',
        id='mat_transposed'),
    pytest.param(
        np.arange(6, dtype=np.float32).reshape(2, 3)[::-1, ::-2], None, (),
        'tensor([[5., 3.],\n'
        '        [2., 0.]])',
        id='mat_reversed'),
    pytest.param(
        np.arange(12, dtype=np.int64).reshape(2, 3, 2) - 5, None, (),
        'tensor([[[-5, -4],\n'
        '         [-3, -2],\n'
        '         [-1,  0]],\n'
        '\n'
        '        [[ 1,  2],\n'
        '         [ 3,  4],\n'
        '         [ 5,  6]]])',
        id='cube'),
    pytest.param(
        np.array([[0.25, -1.0], [3.0, 1e-3]]), 'distgrad.float64', (),
        'tensor([[ 2.5000e-01, -1.0000e+00],\n'
        '        [ 3.0000e+00,  1.0000e-03]], dtype=distgrad.float64)',
        id='mat_f64'),
    pytest.param(
        np.array([0.1, 65504.0], np.float16), 'distgrad.float16', (),
        'tensor([9.9976e-02, 6.5504e+04], dtype=distgrad.float16)',
        id='half'),
    pytest.param(
        np.array([[0, 255], [7, 8]], np.uint8), 'distgrad.uint8', (),
        'tensor([[  0, 255],\n'
        '        [  7,   8]], dtype=distgrad.uint8)',
        id='uint8'),
    pytest.param(
        np.array([1, -2], np.int32), 'distgrad.int32', (),
        'tensor([ 1, -2], dtype=distgrad.int32)',
        id='int32'),
    pytest.param(
        np.zeros((0,), np.float32), None, (),
        'tensor([])',
        id='empty_f32'),
    pytest.param(
        np.zeros((0,), np.float64), 'distgrad.float64', (),
        'tensor([], dtype=distgrad.float64)',
        id='empty_f64'),
    pytest.param(
        np.zeros((0, 3), np.float32), None, (),
        'tensor([], size=(0, 3))',
        id='empty_2d'),
    pytest.param(
        np.zeros((0,), np.int64), None, (),
        'tensor([], dtype=distgrad.int64)',
        id='empty_i64'),
    pytest.param(
        np.zeros((2, 0), bool), None, (),
        'tensor([], size=(2, 0), dtype=distgrad.bool)',
        id='empty_bool_2d'),
    pytest.param(
        np.array(12.0, np.float32), None, ('grad_fn=<MulBackward0>',),
        'tensor(12., grad_fn=<MulBackward0>)',
        id='scalar_grad_fn'),
    pytest.param(
        np.array([1.0, 2.5], np.float32), None, ('requires_grad=True',),
        'tensor([1.0000, 2.5000], requires_grad=True)',
        id='vec_requires_grad'),
    pytest.param(
        np.array([[0.25, -1.0], [3.0, 1e-3]]), 'distgrad.float64', ('grad_fn=<MulBackward0>',),
        'tensor([[ 2.5000e-01, -1.0000e+00],\n'
        '        [ 3.0000e+00,  1.0000e-03]], dtype=distgrad.float64,\n'
        '       grad_fn=<MulBackward0>)',
        id='f64_grad_fn_wraps'),
    pytest.param(
        np.arange(2000, dtype=np.float32), None, (),
        'tensor([0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03, 1.9980e+03,\n'
        '        1.9990e+03])',
        id='summ_vec'),
    pytest.param(
        np.arange(1200, dtype=np.int64).reshape(40, 30), None, (),
        'tensor([[   0,    1,    2,  ...,   27,   28,   29],\n'
        '        [  30,   31,   32,  ...,   57,   58,   59],\n'
        '        [  60,   61,   62,  ...,   87,   88,   89],\n'
        '        ...,\n'
        '        [1110, 1111, 1112,  ..., 1137, 1138, 1139],\n'
        '        [1140, 1141, 1142,  ..., 1167, 1168, 1169],\n'
        '        [1170, 1171, 1172,  ..., 1197, 1198, 1199]])',
        id='summ_mat'),
    pytest.param(
        np.arange(1200, dtype=np.int64).reshape(2, 30, 20), None, (),
        'tensor([[[   0,    1,    2,  ...,   17,   18,   19],\n'
        '         [  20,   21,   22,  ...,   37,   38,   39],\n'
        '         [  40,   41,   42,  ...,   57,   58,   59],\n'
        '         ...,\n'
        '         [ 540,  541,  542,  ...,  557,  558,  559],\n'
        '         [ 560,  561,  562,  ...,  577,  578,  579],\n'
        '         [ 580,  581,  582,  ...,  597,  598,  599]],\n'
        '\n'
        '        [[ 600,  601,  602,  ...,  617,  618,  619],\n'
        '         [ 620,  621,  622,  ...,  637,  638,  639],\n'
        '         [ 640,  641,  642,  ...,  657,  658,  659],\n'
        '         ...,\n'
        '         [1140, 1141, 1142,  ..., 1157, 1158, 1159],\n'
        '         [1160, 1161, 1162,  ..., 1177, 1178, 1179],\n'
        '         [1180, 1181, 1182,  ..., 1197, 1198, 1199]]])',
        id='summ_3d'),
    pytest.param(
        np.linspace(-1, 1, 30, dtype=np.float32), None, (),
        'tensor([-1.0000, -0.9310, -0.8621, -0.7931, -0.7241, -0.6552, -0.5862, -0.5172,\n'
        '        -0.4483, -0.3793, -0.3103, -0.2414, -0.1724, -0.1034, -0.0345,  0.0345,\n'
        '         0.1034,  0.1724,  0.2414,  0.3103,  0.3793,  0.4483,  0.5172,  0.5862,\n'
        '         0.6552,  0.7241,  0.7931,  0.8621,  0.9310,  1.0000])',
        id='long_row'),
    pytest.param(
        np.arange(60, dtype=np.float32).reshape(2, 30) * 1.5, None, (),
        'tensor([[ 0.0000,  1.5000,  3.0000,  4.5000,  6.0000,  7.5000,  9.0000, 10.5000,\n'
        '         12.0000, 13.5000, 15.0000, 16.5000, 18.0000, 19.5000, 21.0000, 22.5000,\n'
        '         24.0000, 25.5000, 27.0000, 28.5000, 30.0000, 31.5000, 33.0000, 34.5000,\n'
        '         36.0000, 37.5000, 39.0000, 40.5000, 42.0000, 43.5000],\n'
        '        [45.0000, 46.5000, 48.0000, 49.5000, 51.0000, 52.5000, 54.0000, 55.5000,\n'
        '         57.0000, 58.5000, 60.0000, 61.5000, 63.0000, 64.5000, 66.0000, 67.5000,\n'
        '         69.0000, 70.5000, 72.0000, 73.5000, 75.0000, 76.5000, 78.0000, 79.5000,\n'
        '         81.0000, 82.5000, 84.0000, 85.5000, 87.0000, 88.5000]])',
        id='long_row_2d'),
    pytest.param(
        np.arange(40, dtype=np.int64) * 1000, None, (),
        'tensor([    0,  1000,  2000,  3000,  4000,  5000,  6000,  7000,  8000,  9000,\n'
        '        10000, 11000, 12000, 13000, 14000, 15000, 16000, 17000, 18000, 19000,\n'
        '        20000, 21000, 22000, 23000, 24000, 25000, 26000, 27000, 28000, 29000,\n'
        '        30000, 31000, 32000, 33000, 34000, 35000, 36000, 37000, 38000, 39000])',
        id='long_row_ints'),

]


@pytest.mark.parametrize("arr, dtype_name, suffixes, expected", CASES)
def test_matches_torch_repr(arr, dtype_name, suffixes, expected):
    assert format_tensor(arr, suffixes, dtype_name) == expected


OPTION_CASES = [
    pytest.param(
        dict(precision=2), np.array([1.12345, -2.5], np.float32),
        'tensor([ 1.12, -2.50])',
        id='precision_2'),
    pytest.param(
        dict(threshold=5, edgeitems=2), np.arange(10, dtype=np.int64),
        'tensor([0, 1,  ..., 8, 9])',
        id='threshold_edgeitems'),
    pytest.param(
        dict(linewidth=40), np.arange(12, dtype=np.float32) / 3,
        'tensor([0.0000, 0.3333, 0.6667, 1.0000,\n'
        '        1.3333, 1.6667, 2.0000, 2.3333,\n'
        '        2.6667, 3.0000, 3.3333, 3.6667])',
        id='linewidth_40'),
    pytest.param(
        dict(sci_mode=True), np.array([1.0, 2.5], np.float32),
        'tensor([1.0000e+00, 2.5000e+00])',
        id='sci_mode_true'),
    pytest.param(
        dict(sci_mode=False), np.array([1e-5, 1e3], np.float32),
        'tensor([   0.0000, 1000.0000])',
        id='sci_mode_false'),
    pytest.param(
        dict(profile='short'), np.arange(2000, dtype=np.float32) / 7,
        'tensor([0.00e+00, 1.43e-01,  ..., 2.85e+02, 2.86e+02])',
        id='profile_short'),
    pytest.param(
        dict(threshold=3, edgeitems=0), np.ones((2, 3), np.float32),
        'tensor([...], size=(2, 3))',
        id='edgeitems_0'),

]


@pytest.mark.parametrize("options, arr, expected", OPTION_CASES)
def test_print_options(options, arr, expected):
    set_printoptions(**options)
    assert format_tensor(arr) == expected


def test_profile_full_disables_summarization():
    set_printoptions(threshold=5)
    assert format_tensor(np.arange(10)) == "tensor([0, 1, 2,  ..., 7, 8, 9])"
    set_printoptions(profile="full")
    assert format_tensor(np.arange(10)) == "tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])"


def test_set_printoptions_resets_sci_mode_like_torch():
    set_printoptions(sci_mode=True)
    set_printoptions(precision=3)
    assert get_printoptions()["sci_mode"] is None


def test_unknown_profile_rejected():
    with pytest.raises(ValueError):
        set_printoptions(profile="nope")


def test_accepts_non_array_input():
    assert format_tensor([[1, 2], [3, 4]]) == "tensor([[1, 2],\n        [3, 4]])"


_DEFAULT_DTYPES = {np.dtype(np.float32), np.dtype(np.int64), np.dtype(np.bool_)}


def _random_array(rng):
    ndim = int(rng.integers(0, 5))
    big = rng.random() < 0.15
    shape = tuple(int(rng.integers(1, 30) if big else rng.integers(0, 7 if ndim > 1 else 40))
                  for _ in range(ndim))
    n = int(np.prod(shape))
    dtype = rng.choice(["f2", "f4", "f8", "i4", "i8", "u1", "?"])
    if dtype == "?":
        x = rng.random(n) < 0.5
    elif dtype in ("i4", "i8", "u1"):
        hi = 10 ** int(rng.integers(1, 9))
        x = rng.integers(-hi, hi, n) % 256 if dtype == "u1" else rng.integers(-hi, hi, n)
    else:
        kind = int(rng.integers(0, 5))
        if kind == 0:
            x = rng.standard_normal(n) * 10.0 ** rng.integers(-6, 10)
        elif kind == 1:
            x = rng.integers(-1000, 1000, n).astype(float)
        elif kind == 2:
            x = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 12, n)
        elif kind == 3:
            x = np.round(rng.standard_normal(n) * 10 ** rng.integers(0, 10), int(rng.integers(0, 3)))
        else:
            x = rng.choice([0.0, -0.0, np.inf, -np.inf, np.nan, 1.5, 2.0, -3.0, 1e-5, 1e9], n)
    with np.errstate(over="ignore"):  # float16 overflowing to inf is wanted
        arr = np.asarray(x).astype(dtype).reshape(shape)
    if arr.ndim >= 2 and rng.random() < 0.2:
        arr = arr.swapaxes(0, -1)
    if arr.ndim >= 1 and rng.random() < 0.1:
        arr = arr[::-1]
    return arr


@pytest.mark.parametrize("options", [
    {},
    dict(precision=2, threshold=50, edgeitems=2, linewidth=50),
    dict(precision=6, linewidth=120, sci_mode=False),
    dict(threshold=20, edgeitems=0, sci_mode=True),
])
def test_random_arrays_against_torch(options):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1234)
    set_printoptions(**options)
    torch.set_printoptions(**options)
    try:
        for _ in range(300):
            arr = _random_array(rng)
            # torch names the dtype of every empty non-float32 tensor.
            named = arr.dtype not in _DEFAULT_DTYPES or (arr.size == 0 and arr.dtype != np.float32)
            # Same length as "torch." so that suffix wrapping is unaffected.
            dtype_name = "dgrad." + arr.dtype.name if named else None
            tensor = torch.tensor(arr.copy())  # torch rejects negative strides
            expected = repr(tensor).replace("torch.", "dgrad.")
            got = format_tensor(arr, dtype_name=dtype_name)
            assert got == expected, (arr.dtype, arr.shape)
            if arr.dtype.kind == "f" and arr.size:
                # Multiplying by 1 keeps -0.0, unlike adding 0.
                expected = repr(tensor.requires_grad_() * 1).replace("torch.", "dgrad.")
                got = format_tensor(arr, ["grad_fn=<MulBackward0>"], dtype_name)
                assert got == expected, (arr.dtype, arr.shape)
    finally:
        torch.set_printoptions(profile="default")
