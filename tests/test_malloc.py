"""distgrad keeps freed CPU memory for reuse where the C library is glibc
(``distgrad/_malloc.py``): what it decides in each environment, and, in fresh
processes, where a large array's memory really comes from."""
import os
import platform
import subprocess
import sys

import pytest

from distgrad import _malloc

GLIBC_MALLOC = (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
         and _malloc.decide({"LD_PRELOAD": os.environ.get("LD_PRELOAD", "")}, "glibc") == "kept")


@pytest.mark.parametrize("env, libc, expected", [
    ({}, "glibc", "kept"),
    ({"DISTGRAD_MALLOC": "1"}, "glibc", "kept"),
    ({"DISTGRAD_MALLOC": " 0 "}, "glibc", "off"),
    ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "glibc", "user settings"),
    ({"MALLOC_TRIM_THRESHOLD_": "0"}, "glibc", "user settings"),
    ({"MALLOC_TOP_PAD_": "0"}, "glibc", "user settings"),
    ({"MALLOC_MMAP_MAX_": "0"}, "glibc", "user settings"),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}, "glibc", "user settings"),
    ({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"}, "glibc", "kept"),
    ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "glibc", "other allocator"),
    ({"LD_PRELOAD": "libtcmalloc_minimal.so.4"}, "glibc", "other allocator"),
    ({}, "", "not glibc"),
    ({}, "musl", "not glibc"),
    ({"DISTGRAD_MALLOC": "0"}, "", "off"),
])
def test_decide(env, libc, expected):
    assert _malloc.decide(env, libc) == expected


@pytest.mark.parametrize("raw", ["yes", "2", "", "true"])
def test_bad_setting_names_the_variable_and_the_values(raw):
    with pytest.raises(ValueError, match=r"DISTGRAD_MALLOC=.*expected 1 .* or 0"):
        _malloc.decide({"DISTGRAD_MALLOC": raw}, "glibc")


def test_this_process_state_matches_its_environment():
    # the test process imported distgrad once: STATE is what decide() says for it
    # (unless glibc refused, which the fresh-process test below would show)
    assert _malloc.STATE == _malloc.decide() or _malloc.STATE == "refused by glibc"
    assert _malloc.apply() == _malloc.STATE  # a second call changes nothing


_PROBE = r"""
import numpy as np
import distgrad._malloc as m
a = np.empty(48 << 20, np.uint8)          # 48 MiB: above glibc's own mmap threshold (at most 32 MiB)
addr = a.__array_interface__["data"][0]
heap = []
with open("/proc/self/maps") as f:
    for line in f:
        if line.rstrip().endswith("[heap]"):
            lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
            heap.append((lo, hi))
print(m.STATE.replace(" ", "_"), any(lo <= addr < hi for lo, hi in heap))
"""


def _probe(**env):
    # glibc's allocator as it comes: none of the user's own settings for it
    full = {k: v for k, v in os.environ.items()
            if not k.startswith("MALLOC_") and k not in ("DISTGRAD_MALLOC", "GLIBC_TUNABLES")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", "import distgrad\n" + _PROBE], env=full,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    state, in_heap = out.stdout.split()
    return [state.replace("_", " "), in_heap]


@pytest.mark.skipif(not GLIBC_MALLOC, reason="glibc's own allocator only")
def test_large_arrays_come_from_the_heap_once_kept():
    assert _probe() == ["kept", "True"]


@pytest.mark.skipif(not GLIBC_MALLOC, reason="glibc's own allocator only")
@pytest.mark.parametrize("env, state", [({"DISTGRAD_MALLOC": "0"}, "off"),
                                        ({"MALLOC_MMAP_THRESHOLD_": "131072"}, "user settings")])
def test_left_alone_large_arrays_are_mapped_on_their_own(env, state):
    assert _probe(**env) == [state, "False"]
