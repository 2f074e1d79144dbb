"""One benchmark configuration in its own process, driven by benchmarks/compare.py over one channel: JSON lines.

Usage: python -m benchmarks.worker, then JSON lines on stdin, answers on stdout.
The first line configures it: {"cmd": "configure", "config": CONFIG}, where
CONFIG holds job ("peak" or "step"), framework, arch, variant, task ("train"
or "infer"), mode, precision, device, batch_size, warmup, threads, seed, init
(weights file) and outputs (where an inference row saves its first outputs).

A "peak" job prints one JSON line, the framework's float32 matmul rate, and
exits. A "step" job loads its framework, data and model and says
{"event": "loaded"}; then answers {"cmd": "warmup"} (compile and
warm up: {"event": "ready", ...}), any number of {"cmd": "round", "max_steps":
N, "max_time": T} ({"event": "round", "times": [...]}, the seconds of each
timed step) and {"cmd": "finish"} ({"event": "done", ...}). A jax-scan
configuration runs its batches K at a time, one compiled call for K steps
(its batches stacked, one stack per input shape), and reports each call's
time divided by K for each of its steps. The driver keeps
the other processes of a group waiting on their stdin while one of them
times, so nothing else runs meanwhile. A data-parallel configuration (mode
torch-ddp or jax-sharded, `devices` N > 1) trains on N devices: jax-sharded
in one process with N CPU devices; torch-ddp in N processes, forked alike,
with `rank` and `port` in their configs: process 0 talks to the driver and
passes each command on to the others (torch.distributed's broadcast), which
read only their configuration from the driver and answer nothing (a round's
time limit becomes a step count, the same for all).
Any failure is {"event": "error", "message": ...} and exit status 2. Threads
are pinned before any framework is imported.

Usage: python -m benchmarks.worker --fork-server FRAMEWORK THREADS FD
How the driver starts them: one such server per framework imports the
framework once (torch with torch._dynamo, which torch.optim imports; or JAX,
Flax and Optax, no backend started), then forks one process per
configuration on request, a fresh process for each without paying the
imports each time. A request over the Unix socket FD carries the child's
stdin, stdout and stderr as file descriptors, nothing else; the answer is the
child's pid. The child then talks JSON lines as above.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

from shared.machine import malloc_setting

MIN_STEPS = 3  # per round, however long a step takes


def pin_threads(threads: int, share: int = 0, shares: int = 1) -> None:
    """Limit this process to `threads` CPUs (the `share`-th of `shares` equal parts of them); torch, XLA and BLAS size their pools from it."""
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    mine = cpus[share * len(cpus) // shares : (share + 1) * len(cpus) // shares] or cpus[:1]
    os.sched_setaffinity(0, mine)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(len(mine))


def ddp_process(cfg: dict) -> bool:
    return cfg.get("mode") == "torch-ddp"


def make_backend(cfg: dict):
    """The framework's Backend, on its `devices` (torch-ddp: this process joins the others; jax-sharded: N local devices)."""
    devices = cfg.get("devices", 1)
    if cfg["framework"] == "torch":
        import torch

        from torch_impl.training import Backend

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        if ddp_process(cfg):  # the variables torchrun would set
            os.environ.update(RANK=str(cfg["rank"]), WORLD_SIZE=str(devices), LOCAL_RANK=str(cfg["rank"]), LOCAL_WORLD_SIZE=str(devices),
                              MASTER_ADDR="127.0.0.1", MASTER_PORT=str(cfg["port"]))
    else:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        from jax_impl.training import Backend
    parallel = Backend.start_parallel([], devices if devices > 1 else None, cfg["device"], "global", 120.0)
    torch_only = {"compile_mode": cfg.get("compile_mode", "default")} if cfg["framework"] == "torch" else {}
    return Backend(cfg["arch"], cfg["device"], parallel, cfg.get("precision", "float32"), variant=cfg["variant"], **torch_only)


def send(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Memory:
    """Peak memory above a baseline: the process's resident set on CPU, the framework's allocator on GPU.

    On CPU the kernel's high-water mark of the resident set (VmHWM) is reset
    (5 into /proc/self/clear_refs) at the start of each round, so a round's
    peak is what the configuration holds plus what its steps add; the baseline
    is the resident set before the model is made. `method` says which was used.
    """

    def __init__(self, framework: str, device: str, backend):
        self.framework, self.gpu, self.backend = framework, device == "gpu", backend
        self.method = "cuda allocator" if self.gpu and framework == "torch" else "device memory_stats" if self.gpu else "VmHWM"
        self.peak = 0.0
        self.trim()
        self.baseline = self.current()

    @staticmethod
    def trim() -> None:
        """Give freed heap memory back to the system (glibc), so that what compilation freed does not count."""
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass

    @staticmethod
    def status_mb(field: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise OSError(f"/proc/self/status has no {field}")

    def current(self) -> float:
        if not self.gpu:
            return self.status_mb("VmRSS")
        if self.framework == "torch":
            import torch

            return torch.cuda.memory_allocated() / 2**20
        return self.backend.device.memory_stats().get("bytes_in_use", 0) / 2**20

    def start_round(self) -> None:
        if not self.gpu:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.method = "VmHWM (no reset: /proc/self/clear_refs refused, so warm-up counts)"
        elif self.framework == "torch":
            import torch

            torch.cuda.reset_peak_memory_stats()

    def end_round(self) -> None:
        if not self.gpu:
            high = self.status_mb("VmHWM")
        elif self.framework == "torch":
            import torch

            high = torch.cuda.max_memory_allocated() / 2**20
        else:
            high = self.backend.device.memory_stats().get("peak_bytes_in_use", 0) / 2**20
        self.peak = max(self.peak, high - self.baseline)


def losses_of(value) -> float | list[float]:
    """A step's loss as JSON: a float, or a list for steps with several (the GAN's D and G losses)."""
    import numpy as np

    value = np.asarray(value, np.float64)
    return float(value) if value.ndim == 0 else value.tolist()


def stacked(batches: list[tuple], steps: int) -> list[tuple[tuple, int]]:
    """jax-scan's calls: the batches grouped by input shape (in order of first appearance), each group's arrays stacked
    on a new leading axis, at most `steps` batches a stack; [(stacked batch, how many steps it holds)]."""
    import numpy as np

    groups: dict[tuple, list[tuple]] = {}
    for batch in batches:
        groups.setdefault(tuple(a.shape for a in batch), []).append(batch)
    return [(tuple(np.stack(arrays) for arrays in zip(*group[i : i + steps])), len(group[i : i + steps]))
            for group in groups.values() for i in range(0, len(group), steps)]


class Configuration:
    """The model, its step (or inference function) and its batches on the device, ready to be timed.

    The batches come as calls, (batch, steps): one step each, or jax-scan's
    stacks of several; times are per step, a call's divided among its steps.
    """

    def __init__(self, cfg: dict):
        from benchmarks.inputs import SCAN_STEPS, benchmark_batches, benchmark_task, model_kwargs
        from shared.contract import SCAN_MODE

        self.cfg, self.scanned = cfg, cfg["mode"] == SCAN_MODE
        self.backend = backend = make_backend(cfg)
        task = benchmark_task(cfg["arch"], cfg["variant"])
        warm, timed = benchmark_batches(cfg["arch"], cfg["variant"], cfg["task"], cfg["batch_size"], cfg["warmup"], cfg["seed"])
        if self.scanned:  # the warm-up compiles each stack the rounds call, and starts with the first batch as the others do
            warm, timed = stacked(timed, SCAN_STEPS), stacked(timed, SCAN_STEPS)
        else:
            warm, timed = [(b, 1) for b in warm], [(b, 1) for b in timed]
        put = backend.put_batch if cfg["task"] == "train" else lambda b: tuple(map(backend.to_device, b))  # a training batch: split for data parallelism
        to_device = lambda calls: [(put(b), steps) for b, steps in calls]  # noqa: E731
        self.warm, self.timed = to_device(warm), to_device(timed)  # data on the device before timing
        backend.sync([a for b, _ in self.warm + self.timed for a in b])
        self.memory = Memory(cfg["framework"], cfg["device"], backend)  # the baseline: data in, no model yet
        model = backend.init_model(cfg["seed"], Path(cfg["init"]), task.weights_spec(), **model_kwargs(cfg["arch"], cfg["variant"]))
        if cfg["task"] == "train":
            optimizer = backend.make_optimizer(model, cfg["lr"])
            self.fn = backend.compile_step(model, optimizer, cfg["mode"])
        else:
            self.fn = backend.compile_inference(model, task.infer_step(backend.arch), cfg["mode"])
        self.last = None

    def call(self, batch):
        out = self.fn(*batch)
        self.backend.sync(out)
        return out

    def warm_up(self) -> dict:
        """Run the warm-up batches and say how long each call took: the driver counts their time beyond the row's median
        step as compilation (recompilations included)."""
        times, first = [], None
        for batch, steps in self.warm:
            start = time.perf_counter()
            out = self.call(batch)
            times.append([time.perf_counter() - start, steps])
            first = out if first is None else first
        self.steady = times[-1][0] / times[-1][1]  # the pace a torch-ddp round's step count is set from
        self.memory.trim()
        result = {"warmup_steps": sum(steps for _, steps in self.warm), "warmup_calls": times}
        if self.cfg["task"] == "train":
            result["first_loss"] = losses_of(self.first_step(self.backend.to_numpy(first)))
        else:
            import numpy as np

            np.savez(self.cfg["outputs"], **self.backend.to_numpy(first))
        return result

    def first_step(self, losses):
        """A call's first step's losses (jax-scan's calls return each of their steps')."""
        return losses[0] if self.scanned else losses

    def last_step(self, losses):
        return losses[-1] if self.scanned else losses

    def timed_steps(self, max_steps: int, max_time: float) -> list[float]:
        """Seconds of each step, cycling through the timed calls, until max_steps or max_time (at least MIN_STEPS)."""
        times, spent, calls = [], 0.0, 0
        while len(times) < MIN_STEPS or (len(times) < max_steps and spent < max_time):
            batch, steps = self.timed[calls % len(self.timed)]
            start = time.perf_counter()
            self.last = self.call(batch)
            elapsed = time.perf_counter() - start
            times += [elapsed / steps] * steps
            spent, calls = spent + elapsed, calls + 1
        return times

    def round(self, max_steps: int, max_time: float) -> list[float]:
        self.memory.start_round()
        times = self.timed_steps(max_steps, max_time)
        self.memory.end_round()
        return times

    def steps_within(self, max_steps: int, max_time: float) -> int:
        """How many steps a round of max_steps / max_time takes at the pace of the last warm-up call (at least MIN_STEPS)."""
        return max(MIN_STEPS, min(max_steps, int(max_time / max(self.steady, 1e-9))))

    def fullgraph(self) -> dict:
        """torch.compile's fullgraph, in the settings of a torch row that compiles: whether its step is one graph."""
        compiles = self.cfg["mode"].startswith("torch-compile")
        return {"fullgraph": self.fn.fullgraph} if compiles else {}

    def finish(self) -> dict:
        result = {
            "peak_mem_mb": self.memory.peak,
            "peak_mem_method": self.memory.method,
            "device_name": self.backend.device_name(),
            "versions": self.backend.versions(),
            "settings": {**self.backend.settings(), **self.fullgraph(), "malloc": malloc_setting(dict(os.environ))},
        }
        if self.cfg["task"] == "train":
            result["final_loss"] = losses_of(self.last_step(self.backend.to_numpy(self.last)))
        return result


def matmul_peak(cfg: dict, backend) -> dict:
    """The framework's own float32 matmul throughput on a large square product."""
    import numpy as np

    n = 8192 if cfg["device"] == "gpu" else 2048
    a = backend.to_device(np.random.default_rng(0).random((n, n), dtype=np.float32))
    if cfg["framework"] == "torch":
        matmul = lambda: a @ a  # noqa: E731
    else:
        import jax

        jitted = jax.jit(lambda m: m @ m)
        matmul = lambda: jitted(a)  # noqa: E731
    times = []
    for _ in range(13):
        start = time.perf_counter()
        backend.sync(matmul())
        times.append(time.perf_counter() - start)
    return {"peak_gflops_per_s": 2 * n**3 / float(np.median(times[3:])) / 1e9, "matmul_n": n}


def commands(cfg: dict, config: Configuration):
    """The driver's commands: from stdin; in a torch-ddp configuration's other processes, from process 0.

    The processes of a torch-ddp step must take the same number of steps, so
    process 0 turns a round's time limit into a count, the same for all.
    """
    if not ddp_process(cfg):
        yield from map(json.loads, sys.stdin)
        return
    import torch.distributed as dist

    lines = iter(sys.stdin) if cfg["rank"] == 0 else None
    while True:
        shared = [json.loads(next(lines, '{"cmd": "finish"}')) if lines is not None else None]
        if lines is not None and shared[0]["cmd"] == "round":
            shared[0] = {**shared[0], "max_steps": config.steps_within(shared[0]["max_steps"], shared[0]["max_time"]), "max_time": float("inf")}
        dist.broadcast_object_list(shared, src=0)
        yield shared[0]


def serve(cfg: dict) -> None:
    """The "step" job: load, then answer the driver's commands until it says finish."""
    config = Configuration(cfg)
    send("loaded")
    for command in commands(cfg, config):
        if command["cmd"] == "warmup":
            send("ready", **config.warm_up())
        elif command["cmd"] == "round":
            send("round", times=config.round(command["max_steps"], command["max_time"]))
        elif command["cmd"] == "finish":
            send("done", **config.finish())
            config.backend.finish()
            return


def preload(framework: str) -> None:
    """Import what every process of `framework` imports, starting no thread pool and no JAX backend (fork stays safe)."""
    import benchmarks.inputs  # noqa: F401 - numpy, the data readers, the tasks

    if framework == "torch":
        import torch._dynamo  # noqa: F401 - torch.optim imports it on the first optimizer (3-4 s)

        import torch_impl.training  # noqa: F401

        preload_inductor()
    else:
        from jax._src import xla_bridge

        import jax_impl.training  # noqa: F401

        assert not xla_bridge._backends, "importing the JAX side started a backend: forking it would not be safe"


def preload_inductor() -> None:
    """What every torch-compile process would do again on its first compile: import inductor, probe the C++ compiler's
    vector instructions and hash torch's sources for the cache key (about 2.5 s a process on a 2-core VM)."""
    import torch._inductor.compile_fx  # noqa: F401
    from torch._inductor import codecache, cpu_vec_isa

    cpu_vec_isa.pick_vec_isa()
    codecache.torch_key()


def fork_server(framework: str, threads: int, fd: int) -> None:
    """Fork one configuration's process per request on the socket `fd`, until the driver closes it."""
    pin_threads(threads)
    preload(framework)
    sock = socket.socket(fileno=fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the children
    while True:
        message, fds, _, _ = socket.recv_fds(sock, 64, 3)
        if not message:
            return
        pid = os.fork()
        if pid == 0:
            sock.close()
            run_forked(fds)
        for child_fd in fds:
            os.close(child_fd)
        sock.send(str(pid).encode())


def run_forked(fds: list[int]) -> None:
    """In the forked child: take the given stdin, stdout and stderr, and serve the configuration."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch.compile waits for its compiler processes
    for target, child_fd in zip((0, 1, 2), fds):
        os.dup2(child_fd, target)
        os.close(child_fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - not the server's buffered stdin
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    code = 0
    try:
        main([])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - the driver reads the last line of stderr
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--fork-server"]:
        fork_server(argv[1], int(argv[2]), int(argv[3]))
        return
    cfg = read_config()
    pin_threads(cfg["threads"], cfg.get("rank", 0), cfg.get("devices", 1) if ddp_process(cfg) else 1)
    try:
        if cfg["job"] == "peak":
            send("done", **matmul_peak(cfg, make_backend(cfg)))
        else:
            serve(cfg)
    except Exception as e:  # noqa: BLE001 - reported to the driver as one line, which names the configuration
        send("error", message=str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__)
        raise SystemExit(2) from None


def read_config() -> dict:
    """The first JSON line on stdin: {"cmd": "configure", "config": {...}}."""
    line = sys.stdin.readline()
    message = json.loads(line) if line.strip() else {}
    if message.get("cmd") != "configure" or not isinstance(message.get("config"), dict):
        send("error", message=f"expected a configure command first, got {line.strip()[:80]!r}")
        raise SystemExit(2)
    return message["config"]


if __name__ == "__main__":
    main(sys.argv[1:])
