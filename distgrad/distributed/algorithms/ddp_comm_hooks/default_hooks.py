"""PyTorch's default DDP communication hooks: plain all-reduce, and all-reduce of the
bucket compressed to float16 or bfloat16 (half the bytes on the wire; the averaged
values are rounded to 16 bits once per rank and in the reduction, then decompressed).

A hook is called as ``hook(state, bucket)`` with ``state`` the process group (None for
the default one) and returns a ``distgrad.futures.Future`` of the reduced bucket.
"""
from __future__ import annotations

from ... import group as _group

__all__ = ["allreduce_hook", "fp16_compress_hook", "bf16_compress_hook", "fp16_compress_wrapper",
           "bf16_compress_wrapper"]


def _allreduce_fut(process_group, tensor):
    """All-reduce ``tensor`` divided by the world size: a Future of the mean."""
    tensor.div_(_group.get_world_size(process_group))
    return _group.all_reduce(tensor, group=process_group, async_op=True).get_future().then(
        lambda fut: fut.value()[0])


def allreduce_hook(process_group, bucket):
    """The mean of the bucket over ranks (what DDP does without a hook)."""
    return _allreduce_fut(process_group, bucket.buffer())


def _compress_hook(dtype, process_group, bucket):
    buffer = bucket.buffer()
    compressed = buffer.to(dtype).div_(_group.get_world_size(process_group))

    def decompress(fut):
        buffer.copy_(fut.value()[0])
        return buffer

    return _group.all_reduce(compressed, group=process_group, async_op=True).get_future().then(decompress)


def fp16_compress_hook(process_group, bucket):
    """All-reduce the bucket in float16: its values divided by the world size, cast to
    float16, summed, and cast back into the bucket."""
    from .... import float16

    return _compress_hook(float16, process_group, bucket)


def bf16_compress_hook(process_group, bucket):
    """As ``fp16_compress_hook`` in bfloat16 (float32's range, 8 bits of mantissa)."""
    from ....dtype import bfloat16

    return _compress_hook(bfloat16, process_group, bucket)


def _wrapper(dtype_name, hook):
    def hook_with_compression(state, bucket):
        from ....dtype import to_dtype

        dtype = to_dtype(dtype_name)
        buffer = bucket.buffer()
        original = buffer.clone()
        bucket.set_buffer(buffer.to(dtype).to(original.dtype))
        fut = hook(state, bucket)

        def decompress(f):
            value = f.value()
            value = value[0] if isinstance(value, (list, tuple)) else value
            return value.to(original.dtype)

        return fut.then(decompress)

    return hook_with_compression


def fp16_compress_wrapper(hook):
    """Wrap ``hook`` so that it sees the bucket rounded to float16."""
    return _wrapper("float16", hook)


def bf16_compress_wrapper(hook):
    """Wrap ``hook`` so that it sees the bucket rounded to bfloat16."""
    return _wrapper("bfloat16", hook)
