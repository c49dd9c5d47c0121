"""distgrad: a data-parallel training runtime with its own PyTorch-compatible autograd."""
import os as _os

if _os.environ.get("DISTGRAD_LAUNCHED"):  # a rank started by distgrad-launch: before numpy loads
    from ._threads import prepare_rank as _prepare_rank

    _prepare_rank()
from . import _malloc as _malloc

_malloc.apply()  # freed CPU memory kept for reuse (glibc): see distgrad/_malloc.py
from . import autograd, backend, cuda, data, distributed, nn, ops, optim, random, utils
from . import linalg
from . import accelerator, amp, backends, compiler, cpu
from .amp import autocast, get_autocast_dtype, is_autocast_enabled, set_autocast_enabled
from .backends import (are_deterministic_algorithms_enabled, get_float32_matmul_precision,
                       is_deterministic_algorithms_warn_only_enabled, set_float32_matmul_precision,
                       use_deterministic_algorithms)
from .compiler import compile
from ._tensor_str import set_printoptions
from .autograd.grad_mode import (enable_grad, inference_mode, is_grad_enabled,
                                 is_inference_mode_enabled, no_grad, set_grad_enabled)
from .backend import device
from .dtype import (bfloat16, bool, double, dtype, float, float16, float32, float64, get_default_dtype,
                    half, int, int8, int16, int32, int64, long, set_default_dtype, short, uint8)
from .ops import FUNCTIONS as _FUNCTIONS
from .serialization import load, save
from .random import Generator, get_rng_state, initial_seed, manual_seed, seed, set_rng_state
from .tensor import Size, Tensor

globals().update(_FUNCTIONS)
is_tensor = lambda obj: isinstance(obj, Tensor)  # noqa: E731


def numel(input) -> "int":
    return input.numel()


def __getattr__(name):
    raise AttributeError(f"module 'distgrad' has no attribute '{name}'")


__version__ = "0.1.0"
from .nn.functional import cosine_similarity, pairwise_distance  # noqa: E402
from ._threads import (get_num_interop_threads, get_num_threads, set_num_interop_threads,  # noqa: E402
                       set_num_threads)
from . import futures  # noqa: E402
from . import distributions, jit, testing  # noqa: E402
from ._sampling import bernoulli, poisson  # noqa: E402
from .amp.policy import install as _install_autocast  # noqa: E402

_install_autocast()
