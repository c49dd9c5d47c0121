"""Freed CPU memory kept for reuse, where the C library is glibc.

A training step allocates and frees the same large arrays every step (activations,
gradients, temporaries of a few MiB each). glibc serves a request of at least its
mmap threshold (128 KiB at start, raised to the largest block freed so far, at most
32 MiB) with a fresh ``mmap``, and gives memory at the top of its heap back to the
system once more than twice that threshold is free there. Either way the next step's
arrays come from pages the kernel must fault in and zero again, page by page: on the
8-block GPT of ``bench/train_step.py`` that was a quarter of the step (about 215 ms
against 162 ms with the memory kept, on a 2-core x86_64 machine). PyTorch's CUDA
caching allocator keeps freed device memory for the same reason.

So ``import distgrad`` raises both thresholds through ``mallopt`` (a block of up to
1 GiB comes from the heap, and up to 2 GiB free at the heap's top stays there). A
process's resident memory then stays near its peak instead of falling back between
steps. Nothing is changed:

- with ``DISTGRAD_MALLOC=0``;
- where the user tunes glibc's allocator already (``MALLOC_MMAP_THRESHOLD_``,
  ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_``, or a
  ``glibc.malloc`` tunable in ``GLIBC_TUNABLES``) or preloads another allocator
  (``LD_PRELOAD`` naming jemalloc, tcmalloc or mimalloc);
- where the C library is not glibc (musl, macOS, Windows).

``STATE`` says which happened, for ``collect_env``-style reports and the tests.
"""
from __future__ import annotations

import ctypes
import os
import platform

MMAP_THRESHOLD = 1 << 30         # blocks up to this size come from the heap
FALLBACK_MMAP_THRESHOLD = 32 << 20   # where a glibc refuses MMAP_THRESHOLD
TRIM_THRESHOLD = (1 << 31) - 1   # free memory at the heap's top kept up to this (mallopt takes an int)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # glibc's malloc.h

_USER_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

STATE = "not applied"   # then "kept" (thresholds raised) or why not: "off", "user settings",
#                         "other allocator", "not glibc", "no mallopt", "refused by glibc"


def _setting(env) -> bool:
    raw = env.get("DISTGRAD_MALLOC", "1").strip()
    if raw not in ("0", "1"):
        raise ValueError(f"DISTGRAD_MALLOC={raw!r}: expected 1 (keep freed CPU memory for reuse, the "
                         "default) or 0 (leave glibc's allocator as it is)")
    return raw == "1"


def decide(env=os.environ, libc: str | None = None) -> str:
    """What ``apply`` does in this environment: ``"kept"`` or why not."""
    if not _setting(env):
        return "off"
    if any(v in env for v in _USER_VARS) or "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return "user settings"
    if any(name in env.get("LD_PRELOAD", "") for name in _OTHER_ALLOCATORS):
        return "other allocator"
    if (libc if libc is not None else platform.libc_ver()[0]) != "glibc":
        return "not glibc"
    return "kept"


def apply(env=os.environ) -> str:
    """Raise glibc's thresholds once per process (see the module's text); returns STATE."""
    global STATE
    if STATE != "not applied":
        return STATE
    state = decide(env)
    if state == "kept":
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (AttributeError, OSError):  # a C library that reports glibc but has no mallopt
            STATE = "no mallopt"
            return STATE
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        # setting either threshold ends glibc's own raising of both, so the mmap threshold
        # goes first: a glibc that refuses one above half its largest heap (32 MiB on 64
        # bits) gets 32 MiB; if none is taken, the trim threshold is left alone too
        if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) or mallopt(_M_MMAP_THRESHOLD, FALLBACK_MMAP_THRESHOLD):
            mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        else:
            state = "refused by glibc"
    STATE = state
    return STATE
