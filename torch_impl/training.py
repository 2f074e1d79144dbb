"""PyTorch machinery shared by all architectures: device, precision, step compilation, I/O.

`Backend` implements shared.contract.Backend, as jax_impl.training.Backend
does; the training command (shared/trainer.py) and the benchmark drive
either through it.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared import contract
from shared.contract import COMPILE_MODES, GPU_MODES, check_precision, train_step_of
from shared.distributed import Parallel, replica_slice
from shared.errors import UserError
from shared.hparams import variants
from shared.machine import cpu_name
from shared.weights import StateDict, WeightsError, WeightsSpec
from torch_impl import distributed
from torch_impl.weights import load_model, save_model

MODES = contract.MODES["torch"]
DATA_PARALLEL_MODE = contract.DATA_PARALLEL_MODES["torch"]  # eager, DistributedDataParallel over several processes
DROPOUT_STREAM = 2  # the run's seed and this give the dropout generator's seed (the init draws from the seed itself)


def pin_float32_precision() -> None:
    """True float32 matmuls and convolutions (no TF32 on Ampere and later GPUs)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def select_device(name: str) -> torch.device:
    """The CPU or a GPU (the process's own under torchrun: torch.cuda.set_device in distributed.start)."""
    if name == "gpu" and not torch.cuda.is_available():
        raise UserError("--device gpu: torch sees no CUDA device")
    if name in ("gpu", "auto") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def to_numpy(tree: Any) -> Any:
    """numpy copies; bfloat16 (which numpy has not) as float32."""
    if isinstance(tree, dict):
        return {k: to_numpy(v) for k, v in tree.items()}
    tensor = tree.detach()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).cpu().numpy()


def autocast(device: torch.device, precision: str):
    """The context of a computation in `precision`: nothing to do for float32; bfloat16 through torch.autocast.

    Autocast runs the ops of its lower-precision list (linear, matmul, the
    convolutions) in bfloat16 from the float32 weights, and the losses of its
    float32 list (cross_entropy, nll_loss, binary_cross_entropy[_with_logits],
    mse_loss) in float32; the others take their inputs' dtype (docs/precision.md).
    cache_enabled=False: autocast would otherwise reuse a weight's bfloat16 copy
    for the whole context, and a step of several phases (the GAN's, the AAE's)
    updates weights that its next phase reads again (docs/precision.md, "Autocast's weight cache").
    """
    if precision == "float32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)


def in_precision(fn: Callable, device: torch.device, precision: str) -> Callable:
    """fn, run under autocast(device, precision): a step's forward, backward and update, or an inference function."""
    if precision == "float32":
        return fn

    def run(*args):
        with autocast(device, precision):
            return fn(*args)

    return run


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """The model in eval mode, then every submodule back in the mode it had (as JAX's nnx.view leaves them)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def compiled(fn: Callable, mode: str, device: torch.device, compile_mode: str = "default", fullgraph: bool = False) -> Callable:
    """fn as the mode runs it: itself (torch-eager, torch-ddp) or torch.compile'd, one graph per input shape.

    torch-compile is torch.compile(mode=compile_mode) (COMPILE_MODES: "default",
    "reduce-overhead", "max-autotune"); torch-compile-cudagraphs is
    torch.compile(mode="reduce-overhead"): each graph replayed as a CUDA graph,
    without a kernel launch from Python. fullgraph=True: a graph break is an error.
    """
    if mode not in (*MODES, DATA_PARALLEL_MODE):
        raise UserError(f"--mode {mode}: torch supports {', '.join(MODES)} (and {DATA_PARALLEL_MODE} on several processes)")
    if mode in GPU_MODES and device.type != "cuda":
        raise UserError(f"--mode {mode}: CUDA graphs need a GPU (--device gpu)")
    if mode == "torch-eager" or mode == DATA_PARALLEL_MODE:
        return fn
    # Never a dynamic-shape graph: the per-name RNN sees one shape per name
    # length (up to ~20), more than the default limit of 8 recompilations,
    # after which torch would silently run eager.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    if mode == "torch-compile":
        return torch.compile(fn, dynamic=False, mode=None if compile_mode == "default" else compile_mode, fullgraph=fullgraph)
    graphed = torch.compile(fn, dynamic=False, mode="reduce-overhead", fullgraph=fullgraph)

    def replay(*args):
        # A new step: the graphs may overwrite the outputs of the last replay, so what the caller keeps is copied.
        torch.compiler.cudagraph_mark_step_begin()
        return torch.utils._pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, graphed(*args))

    return replay


def optimizers_of(optimizer: Any) -> dict[str, torch.optim.Optimizer]:
    """An architecture's optimizer, or its NamedTuple of them (the GAN's, the AAE's), by name; unused ones (None) left out."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return {"optimizer": optimizer}
    return {name: o for name, o in optimizer._asdict().items() if o is not None}


class CompiledStep:
    """A train step (model, optimizer, *batch) bound to its model and optimizer, eager or torch.compile'd.

    torch-ddp: the step of one of several processes, on its slice of the
    global batch, through DistributedDataParallel (distributed.replicated);
    it returns the global batch's losses, the mean of every process's.
    Compiled without fullgraph: dynamo does not trace Optimizer.zero_grad, so
    every training step breaks its graph there and compiles in pieces.
    """

    fullgraph = False

    def __init__(self, step_fn, model: torch.nn.Module, optimizer: torch.optim.Optimizer, mode: str = "torch-eager",
                 parallel: Parallel | None = None, networks: dict[str, bool] | None = None, precision: str = "float32",
                 compile_mode: str = "default"):
        self.data_parallel = mode == DATA_PARALLEL_MODE
        if self.data_parallel != (parallel is not None and parallel.processes > 1):
            raise UserError(f"--mode {mode}: {DATA_PARALLEL_MODE} is the mode of a run over several processes, and the only one")
        device = next(model.parameters()).device
        self.fn = compiled(in_precision(step_fn, device, precision), mode, device, compile_mode)
        self.optimizer = optimizer
        self.model = distributed.replicated(model, networks or {}, parallel) if self.data_parallel else model
        model.train()

    def __call__(self, *batch: torch.Tensor) -> torch.Tensor:
        losses = self.fn(self.model, self.optimizer, *batch)
        return distributed.mean_over_processes(losses) if self.data_parallel else losses

    def write_back(self) -> None:
        """Nothing to do: torch updates the model in place (see the JAX twin)."""


class CompiledInference:
    """An inference function (model, *batch) bound to its model in eval mode, without autograd, eager or torch.compile'd.

    The benchmark's inference step; the model is put in eval mode for good
    (unlike Backend.predict, which restores it). Compiled with fullgraph=True:
    every architecture's inference is one graph.
    """

    fullgraph = True

    def __init__(self, fn, model: torch.nn.Module, mode: str = "torch-eager", precision: str = "float32", compile_mode: str = "default"):
        device = next(model.parameters()).device
        self.fn = compiled(in_precision(fn, device, precision), mode, device, compile_mode, self.fullgraph)
        self.model = model.eval()

    def __call__(self, *batch: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            return self.fn(self.model, *batch)


class Backend:
    framework = "torch"
    modes = MODES
    data_parallel_mode = DATA_PARALLEL_MODE

    def __init__(self, arch: str, device: str = "auto", parallel: Parallel | None = None, precision: str = "float32",
                 variant: str | None = None, compile_mode: str = "default"):
        """`compile_mode`: torch.compile's mode in the torch-compile mode (COMPILE_MODES)."""
        if compile_mode not in COMPILE_MODES:
            raise UserError(f"--compile-mode {compile_mode}: expected one of {', '.join(COMPILE_MODES)}")
        self.compile_mode = compile_mode
        self.arch_name = arch
        self.arch = importlib.import_module(f"torch_impl.{arch}")
        self.train_step = train_step_of(self.arch, variant or variants(arch)[0])
        self.parallel = parallel or Parallel()
        self.precision = check_precision(precision)
        self.device = select_device(device)
        pin_float32_precision()

    @staticmethod
    def start_parallel(argv: list[str], devices: int | None, device: str, batchnorm: str, timeout: float, **framework_flags) -> Parallel | None:
        """--devices N > 1: run N processes of this command (torchrun's launcher; None once they have, or exit as the first
        failed one did); under torchrun, join its process group."""
        if devices is not None and devices > 1 and not distributed.launched():
            distributed.check_local_devices(devices, device)
            distributed.launch(argv, devices)
            return None
        return distributed.start(devices, device, batchnorm, timeout)

    def init_model(self, seed: int, init: Path | None = None, expected: WeightsSpec | None = None, **model_kwargs) -> torch.nn.Module:
        model = self.arch.init_model(seed, **model_kwargs).to(self.device)
        if init is not None:
            load_model(model, init, expected)
        self.seed_dropout(seed)
        return model

    def seed_dropout(self, seed: int) -> None:
        """Seed torch's global generator, which nn.Dropout draws its masks from, from the run's seed (and the process's rank:
        each process draws the masks of its own slice). JAX's models hold their own dropout keys."""
        stream = [seed, DROPOUT_STREAM] + ([self.parallel.rank] if self.parallel.processes > 1 else [])
        torch.manual_seed(int(np.random.SeedSequence(stream).generate_state(1, np.uint64)[0]))

    def checkpoint_state(self, model: torch.nn.Module, optimizer: Any) -> StateDict:
        """What a checkpoint holds besides the weights: every optimizer's state and the generator's (see restore_state).

        On several processes every one calls it: the generators' states are
        gathered, `rng.cpu.rankR` for each process R.
        """
        arrays = {}
        for name, opt in optimizers_of(optimizer).items():
            for index, state in opt.state_dict()["state"].items():
                arrays.update({f"{name}.{index}.{key}": to_numpy(value) for key, value in state.items()})
        rng = {"rng.cpu": torch.get_rng_state().numpy()}
        if self.device.type == "cuda":
            rng["rng.cuda"] = torch.cuda.get_rng_state(self.device).numpy()
        if self.parallel.processes == 1:
            return {**arrays, **rng}
        for rank, states in enumerate(distributed.gathered(rng)):
            arrays.update({f"{key}.rank{rank}": value for key, value in states.items()})
        return arrays

    def restore_state(self, model: torch.nn.Module, optimizer: Any, arrays: StateDict, source: str) -> None:
        """Set the optimizers' and the generator's state from checkpoint_state's arrays."""
        for name, opt in optimizers_of(optimizer).items():
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in arrays.items():
                if key.startswith(f"{name}."):
                    index, field = key.removeprefix(f"{name}.").split(".", 1)
                    state.setdefault(int(index), {})[field] = torch.from_numpy(value.copy())
            opt.load_state_dict({**opt.state_dict(), "state": state})  # parameters without a gradient yet have no state
        suffix = f".rank{self.parallel.rank}" if self.parallel.processes > 1 else ""
        if "rng.cpu" + suffix not in arrays:
            raise WeightsError(f"{source}: no 'rng.cpu{suffix}' (torch's generator state)")
        torch.set_rng_state(torch.from_numpy(arrays["rng.cpu" + suffix].copy()))
        if self.device.type == "cuda" and "rng.cuda" + suffix in arrays:
            torch.cuda.set_rng_state(torch.from_numpy(arrays["rng.cuda" + suffix].copy()), self.device)

    def make_optimizer(self, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
        return self.arch.make_optimizer(model, lr)

    def compile_step(self, model, optimizer, mode: str | None = None, step: Callable | None = None) -> CompiledStep:
        default = DATA_PARALLEL_MODE if self.parallel.processes > 1 else MODES[0]
        networks = distributed.DDP_NETWORKS.get(self.arch_name, {})
        return CompiledStep(step or self.train_step, model, optimizer, mode or default, self.parallel, networks, self.precision, self.compile_mode)

    def compile_inference(self, model, fn: Callable, mode: str | None = None) -> CompiledInference:
        return CompiledInference(fn, model, mode or MODES[0], self.precision, self.compile_mode)

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def put_batch(self, batch: tuple[np.ndarray, ...]) -> tuple[torch.Tensor, ...]:
        """A global training batch on the device: this process's slice of it, on several."""
        if self.parallel.processes > 1:
            batch = replica_slice(batch, self.parallel.rank, self.parallel.processes)
        return tuple(map(self.to_device, batch))

    def any_process(self, flag: bool) -> bool:
        return distributed.any_process(flag) if self.parallel.processes > 1 else flag

    def finish(self) -> None:
        distributed.stop()

    to_numpy = staticmethod(to_numpy)

    def predict(self, model: torch.nn.Module, fn: Callable, *arrays: np.ndarray) -> dict[str, np.ndarray]:
        """fn(model, *arrays) in eval mode without gradients, numpy in and out; the model's modes are restored."""
        with eval_mode(model), torch.no_grad(), autocast(self.device, self.precision):
            return to_numpy(fn(model, *map(self.to_device, arrays)))

    def sync(self, result: Any = None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def save_model(self, model: torch.nn.Module, path: Path, spec: WeightsSpec) -> None:
        save_model(model, path, spec)

    def device_name(self) -> str:
        processes = f" x {self.parallel.processes} processes" if self.parallel.processes > 1 else ""
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device) + processes
        return f"{cpu_name()} ({torch.get_num_threads()} threads{processes})"

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def settings(self) -> dict[str, object]:
        """What changes torch's speed here: threads, matmul precision, the backends in use."""
        return {
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "precision": self.precision,
            "compile_mode": self.compile_mode,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "mkldnn": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
            "cuda_matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        }
