"""The process settings the benchmark runs under (shared/machine.py)."""
import os
import platform
import subprocess
import sys

import pytest

from shared.machine import MALLOC_SETTINGS, malloc_env, malloc_setting

# In a fresh process: malloc a block larger than glibc's largest mmap threshold (32 MiB), write every page, free it, twice;
# the page faults of each pass.
TWO_PASSES = """
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
faults = []
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    libc.free(block)
print(*faults)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="GLIBC_TUNABLES is glibc's")
@pytest.mark.parametrize("setting", MALLOC_SETTINGS)
def test_retain_reuses_a_freed_block_without_faulting_its_pages_in_again(setting):
    env = malloc_env(setting, {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"})
    assert malloc_setting(env) == setting
    first, second = map(int, subprocess.run([sys.executable, "-c", TWO_PASSES], env=env, capture_output=True, text=True,
                                            check=True).stdout.split())
    assert first >= 32  # 64 MiB of fresh memory: 16384 pages of 4 KiB, or 32 huge pages
    if setting == "retain":
        assert second <= first // 20, (first, second)  # the block came back from the heap, its pages still mapped
    else:
        assert second >= first // 2, (first, second)  # a new mapping, faulted in again page by page


def test_retain_adds_to_the_tunables_a_user_set():
    env = malloc_env("retain", {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0", "PATH": "/bin"})
    assert env["GLIBC_TUNABLES"].startswith("glibc.malloc.tcache_count=0:glibc.malloc.") and env["PATH"] == "/bin"
    assert malloc_env("default", env) == env
