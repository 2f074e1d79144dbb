"""What machine a run happened on, for the records of training runs and benchmarks."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "asimd", "sve", "bf16")  # what decides a kernel's speed
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # bfloat16 arithmetic in hardware (x86's two, Arm's BF16 extension)


def cpu_details() -> dict:
    """The CPU's model name, family and model numbers and the instruction-set flags that decide kernel speeds (x86 and Arm)."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return {"model_name": cpu_name(), "family": info.get("cpu family"), "model": info.get("model"),
            "flags": [f for f in SPEED_FLAGS if f in flags]}


def native_bfloat16(details: dict | None) -> bool | None:
    """Whether the CPU of cpu_details() computes in bfloat16 in hardware; None where its flags were not recorded."""
    if not details or "flags" not in details:
        return None
    return any(flag in details["flags"] for flag in BFLOAT16_FLAGS)


def source_commit(folder: Path) -> str | None:
    """The git commit of the checkout holding `folder`, with "-dirty" if it has uncommitted changes; None outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


# glibc malloc under --malloc retain: one arena, no chunk of its own mapping, no trimming, so that what a step frees is reused by
# the next step instead of given back to the kernel and faulted in again, page by page (docs/benchmark.md#glibc-malloc).
RETAIN_FREED_MEMORY = {"arena_max": 1, "mmap_max": 0, "trim_threshold": 2**31 - 1}
MALLOC_SETTINGS = ("default", "retain")


def malloc_env(setting: str, env: dict[str, str]) -> dict[str, str]:
    """`env` for a process whose glibc malloc runs under `setting` (one of MALLOC_SETTINGS): retain adds RETAIN_FREED_MEMORY
    to GLIBC_TUNABLES, which glibc reads when the process starts; default leaves the environment's."""
    if setting == "default":
        return dict(env)
    ours = ":".join(f"glibc.malloc.{name}={value}" for name, value in RETAIN_FREED_MEMORY.items())
    return {**env, "GLIBC_TUNABLES": ":".join(t for t in (env.get("GLIBC_TUNABLES"), ours) if t)}


def malloc_setting(env: dict[str, str]) -> str:
    """Which of MALLOC_SETTINGS a process started with `env` runs under (default away from glibc, which reads no GLIBC_TUNABLES)."""
    tunables = env.get("GLIBC_TUNABLES", "") if platform.libc_ver()[0] == "glibc" else ""
    return "retain" if all(f"glibc.malloc.{name}={value}" in tunables for name, value in RETAIN_FREED_MEMORY.items()) else "default"
