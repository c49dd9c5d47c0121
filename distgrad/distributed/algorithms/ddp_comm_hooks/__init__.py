"""Communication hooks for ``DistributedDataParallel.register_comm_hook``."""
from . import default_hooks
from .default_hooks import (allreduce_hook, bf16_compress_hook, bf16_compress_wrapper, fp16_compress_hook,
                            fp16_compress_wrapper)

__all__ = ["default_hooks", "allreduce_hook", "fp16_compress_hook", "bf16_compress_hook", "fp16_compress_wrapper",
           "bf16_compress_wrapper"]
