"""JAX machinery shared by all architectures: device, precision, step compilation, I/O.

`Backend` implements shared.contract.Backend, as torch_impl.training.Backend
does; the training command (shared/trainer.py) and the benchmark drive
either through it.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jax_impl import distributed
from jax_impl.weights import load_model, save_model
from shared import contract
from shared.contract import SCAN_MODE, check_precision, train_step_of
from shared.distributed import Parallel
from shared.errors import UserError
from shared.hparams import variants
from shared.machine import cpu_name
from shared.weights import StateDict, WeightsError, WeightsSpec

MODES = contract.MODES["jax"]
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}  # the layers' computation dtype per precision (None: their parameters')
DATA_PARALLEL_MODE = contract.DATA_PARALLEL_MODES["jax"]  # jit-compiled over a batch sharded on a mesh of several devices


def compute_in(model: nnx.Module, dtype) -> nnx.Module:
    """Every nnx.Linear, nnx.Conv and nnx.ConvTranspose of `model` multiplies in `dtype` with float32 results (None: float32 throughout); the model.

    Flax's own mixed-precision knobs, set once on the built model: `dtype`
    rounds a layer's input, kernel and bias to bfloat16, and
    `preferred_element_type` asks the product for its float32 accumulation,
    which the layer returns (plus the bias): the next layer rounds its input
    again. Asked for a bfloat16 result instead, XLA:CPU takes a slow path
    (docs/benchmark.md#what-xlacpu-and-torch-do-here).
    """
    for _, module in nnx.iter_modules(model):
        if isinstance(module, (nnx.Linear, nnx.Conv, nnx.ConvTranspose)):
            module.dtype = dtype
            module.preferred_element_type = None if dtype is None else jnp.float32
    return model


def pin_float32_precision() -> None:
    """True float32 matmuls and convolutions (no TF32 or bf16 passes on GPUs)."""
    jax.config.update("jax_default_matmul_precision", "highest")


def select_device(name: str) -> jax.Device:
    """This process's first CPU or GPU (of several processes, each has its own: local_devices)."""
    if name == "cpu":
        return jax.local_devices(backend="cpu")[0]
    try:
        return jax.local_devices(backend="gpu")[0]
    except RuntimeError:
        if name == "gpu":
            raise UserError("--device gpu: JAX sees no GPU (is jax[cuda] installed?)") from None
        return jax.local_devices(backend="cpu")[0]


def to_numpy(tree: Any) -> Any:
    """numpy copies, bfloat16 as float32; a replicated array of several processes gives this process's copy."""
    def copy(a):
        a = np.asarray(distributed.local(a) if isinstance(a, jax.Array) else a)
        return a.astype(np.float32) if a.dtype == jnp.bfloat16 else a

    return jax.tree.map(copy, tree)


def committed(leaves: list[jax.Array]) -> list[jax.Array]:
    """The arrays committed to the device they are on, as a jitted function's outputs are.

    jit compiles once per committedness of its inputs, so uncommitted first
    inputs (as model initialisation leaves them) would compile a training step
    a second time when its own outputs come back in.
    """
    return [jax.device_put(leaf, next(iter(leaf.devices()))) for leaf in leaves]


def eval_view(model: nnx.Module) -> nnx.Module:
    """The model with dropout and BatchNorm in eval mode, sharing its arrays (the model keeps its own mode)."""
    return nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)


def model_from_file(make: Callable[[], nnx.Module], path: Path, expected: WeightsSpec | None = None) -> nnx.Module:
    """make() with its parameters and running statistics from the weights file at `path`, as load_model(make(), path) gives.

    Eagerly, make() compiles each random initialiser on its own, for values
    the file then overwrites (seconds for the GAN: docs/results/earlier-cpu-runs.md#other-figures-of-these-runs).
    Here the structure comes from nnx.eval_shape and the one part the file
    does not hold, the random streams' state (dropout keys), from a single
    compiled call that returns only that, so XLA drops the initialisers.
    """
    model = nnx.eval_shape(make)
    for _, variable in nnx.iter_graph(model):
        if isinstance(variable, (nnx.Param, nnx.BatchStat)):  # placeholders of the right shape, for the file's checks
            variable.set_value(np.zeros(variable.get_value().shape, variable.get_value().dtype))
    nnx.update(model, nnx.jit(lambda: nnx.state(make(), nnx.RngState))())
    load_model(model, path, expected)
    return model


def beyond_weights(model: nnx.Module, optimizer: Any) -> nnx.State:
    """The state of model and optimizer that a weights file does not hold: the random streams and every optimizer's state."""
    return nnx.state((model, optimizer), nnx.Not(nnx.Any(nnx.Param, nnx.BatchStat)))


def is_key(leaf: jax.Array) -> bool:
    return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


class CompiledStep:
    """A train step (model, optimizer, *batch) as one jit-compiled pure function.

    The Flax NNX performance recipe: split model and optimizer into a graph
    definition and their state once, merge them inside the jitted function,
    and donate the state so XLA updates it in place. The state crosses the
    jit boundary as a flat list of arrays: flattening NNX Variable objects in
    Python on every call would cost more than the step itself on small models.
    The NNX objects are brought up to date only by write_back(), which the
    caller runs before using the model elsewhere (evaluation, saving).

    jax-sharded: the same function over a batch sharded on `sharding`'s mesh
    (Backend.put_batch), the state replicated on every device and pinned so;
    the compiler partitions the step and all-reduces the gradients. Its
    write_back gives the model this process's copy of the state.

    jax-scan: K steps in one call, a lax.scan of the step over batches stacked
    on a leading axis of K (each array (K, ...)); it returns the K steps'
    losses. No Python, dispatch or transfer between the steps: what a step
    costs without the host (docs/benchmark.md). On a CPU a model with
    convolutions has its scan unrolled (XLA:CPU runs their gradients slowly in a loop).
    """

    def __init__(self, step_fn, model: nnx.Module, optimizer: nnx.Optimizer, mode: str = "jax-jit",
                 parallel: Parallel | None = None, sharding: distributed.Sharding | None = None):
        if (mode == DATA_PARALLEL_MODE) != (sharding is not None):
            raise UserError(f"--mode {mode}: {DATA_PARALLEL_MODE} is the mode of a run over several devices, and the only one")
        if mode not in (*MODES, DATA_PARALLEL_MODE):
            raise UserError(f"--mode {mode}: JAX supports {', '.join(MODES)} (and {DATA_PARALLEL_MODE} on several devices)")
        model.train()
        if parallel is not None and parallel.batchnorm == "per-replica":
            distributed.per_replica_batchnorm(model, parallel.replicas)
        self.objects = (model, optimizer)
        graphdef, state = nnx.split(self.objects)
        leaves, self.treedef = jax.tree.flatten(state)
        if sharding is None:
            self.leaves = committed(leaves)
        else:
            self.leaves = [sharding.put(leaf, sharding.replicated) for leaf in leaves]

        def pure_step(leaves, *batch):
            model, optimizer = nnx.merge(graphdef, jax.tree.unflatten(self.treedef, leaves))
            loss = step_fn(model, optimizer, *batch)
            return jax.tree.leaves(nnx.state((model, optimizer))), loss

        # A loop, compiled once; unrolled for a model with convolutions on a CPU, where XLA:CPU runs a convolution's kernel
        # gradient far slower in a loop than outside one (docs/benchmark.md#what-xlacpu-and-torch-do-here).
        unroll = mode == SCAN_MODE and jax.default_backend() == "cpu" and any(isinstance(m, (nnx.Conv, nnx.ConvTranspose))
                                                                              for _, m in nnx.iter_graph(model))

        def pure_steps(leaves, *stacked):
            return jax.lax.scan(lambda carried, batch: pure_step(carried, *batch), leaves, stacked, unroll=unroll)

        placed = {} if sharding is None else {"out_shardings": sharding.replicated}
        self.fn = jax.jit(pure_steps if mode == SCAN_MODE else pure_step, donate_argnums=0, **placed)

    def __call__(self, *batch: jax.Array) -> jax.Array:
        self.leaves, loss = self.fn(self.leaves, *batch)
        return loss

    def write_back(self) -> None:
        nnx.update(self.objects, jax.tree.unflatten(self.treedef, [distributed.local(leaf) for leaf in self.leaves]))


class CompiledInference:
    """An inference function (model, *batch) on an eval-mode view of its model, as one jit-compiled pure function.

    The benchmark's inference step, split once like CompiledStep (no NNX
    graph walk per call); nothing is donated: the state is read, not updated.
    """

    def __init__(self, fn, model: nnx.Module, mode: str = "jax-jit"):
        if mode not in MODES or mode == SCAN_MODE:
            raise UserError(f"--mode {mode}: JAX's inference runs in {MODES[0]} ({SCAN_MODE} is a mode of training steps)")
        graphdef, state = nnx.split(eval_view(model))
        leaves, treedef = jax.tree.flatten(state)
        self.leaves = committed(leaves)

        def pure_fn(leaves, *batch):
            return fn(nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves)), *batch)

        self.fn = jax.jit(pure_fn)

    def __call__(self, *batch: jax.Array) -> dict[str, jax.Array]:
        return self.fn(self.leaves, *batch)


class Backend:
    framework = "jax"
    modes = MODES
    data_parallel_mode = DATA_PARALLEL_MODE

    def __init__(self, arch: str, device: str = "auto", parallel: Parallel | None = None, precision: str = "float32",
                 variant: str | None = None):
        self.arch_name = arch
        self.arch = importlib.import_module(f"jax_impl.{arch}")
        self.train_step = train_step_of(self.arch, variant or variants(arch)[0])
        self.parallel = parallel or Parallel()
        self.precision = check_precision(precision)
        self.device = select_device(device)
        self.sharding = None
        if self.parallel.replicas > 1:
            self.sharding = distributed.Sharding(distributed.make_mesh(self.device.platform, self.parallel.replicas))
        self._jitted: dict[Callable, Callable] = {}
        pin_float32_precision()

    @staticmethod
    def start_parallel(argv: list[str], devices: int | None, device: str, batchnorm: str, timeout: float, **framework_flags) -> Parallel:
        """The local devices (--devices) and the other processes (framework_flags: --coordinator, --num-processes,
        --process-id), set up before JAX starts its backend."""
        return distributed.start(devices, device, batchnorm, timeout, **framework_flags)

    def init_model(self, seed: int, init: Path | None = None, expected: WeightsSpec | None = None, **model_kwargs) -> nnx.Module:
        """The model on the device, its layers computing in the precision's dtype (float32 parameters in any case); its dropout keys
        (nnx.Rngs) drawn from `seed` too."""
        make = lambda: self.arch.init_model(seed, **model_kwargs)  # noqa: E731
        with jax.default_device(self.device):
            model = make() if init is None else model_from_file(make, init, expected)
        return compute_in(model, COMPUTE_DTYPES[self.precision])

    def checkpoint_state(self, model: nnx.Module, optimizer: Any) -> StateDict:
        """What a checkpoint holds besides the weights: the dropout keys and counters, every optimizer's state (see restore_state)."""
        leaves = jax.tree_util.tree_flatten_with_path(beyond_weights(model, optimizer))[0]
        return {jax.tree_util.keystr(path): np.asarray(jax.random.key_data(leaf) if is_key(leaf) else leaf) for path, leaf in leaves}

    def restore_state(self, model: nnx.Module, optimizer: Any, arrays: StateDict, source: str) -> None:
        """Set the random streams and the optimizers' state from checkpoint_state's arrays."""
        template = beyond_weights(model, optimizer)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
        restored = []
        for path, leaf in leaves:
            name = jax.tree_util.keystr(path)
            value = arrays.get(name)
            stored = jax.random.key_data(leaf) if is_key(leaf) else leaf
            if value is None or value.shape != stored.shape:
                raise WeightsError(f"{source}: '{name}' is {'missing' if value is None else f'of shape {value.shape}'}, "
                                   f"the model and optimizer hold shape {stored.shape}")
            value = jax.device_put(value.astype(stored.dtype), self.device)
            restored.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(leaf)) if is_key(leaf) else value)
        nnx.update((model, optimizer), jax.tree.unflatten(treedef, restored))

    def make_optimizer(self, model: nnx.Module, lr: float) -> nnx.Optimizer:
        with jax.default_device(self.device):
            return self.arch.make_optimizer(model, lr)

    def compile_step(self, model, optimizer, mode: str | None = None, step: Callable | None = None) -> CompiledStep:
        default = DATA_PARALLEL_MODE if self.sharding is not None else MODES[0]
        return CompiledStep(step or self.train_step, model, optimizer, mode or default, self.parallel, self.sharding)

    def compile_inference(self, model, fn: Callable, mode: str | None = None) -> CompiledInference:
        return CompiledInference(fn, model, mode or MODES[0])

    def to_device(self, array: np.ndarray) -> jax.Array:
        return jax.device_put(array, self.device)

    def put_batch(self, batch: tuple[np.ndarray, ...]) -> tuple[jax.Array, ...]:
        """A global training batch on the device, or sharded along the mesh's "data" axis: each device its slice."""
        if self.sharding is None:
            return tuple(map(self.to_device, batch))
        return tuple(self.sharding.put(a, self.sharding.batch) for a in batch)

    def any_process(self, flag: bool) -> bool:
        if self.parallel.processes == 1:
            return flag
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))

    def finish(self) -> None:
        distributed.stop()

    to_numpy = staticmethod(to_numpy)

    def predict(self, model: nnx.Module, fn: Callable, *arrays: np.ndarray) -> dict[str, np.ndarray]:
        """fn(model, *arrays) in eval mode, jit-compiled, numpy in and out (no gradient is taken).

        It runs on eval_view(model), so the model keeps its own mode.
        """
        if fn not in self._jitted:
            self._jitted[fn] = nnx.jit(fn)
        return to_numpy(self._jitted[fn](eval_view(model), *map(self.to_device, arrays)))

    def sync(self, result: Any = None) -> None:
        jax.block_until_ready(result)

    def save_model(self, model: nnx.Module, path: Path, spec: WeightsSpec) -> None:
        save_model(model, path, spec)

    def device_name(self) -> str:
        replicas = f" x {self.parallel.replicas} devices" if self.parallel.replicas > 1 else ""
        if self.device.platform == "gpu":
            return self.device.device_kind + replicas
        return cpu_name() + replicas

    def versions(self) -> dict[str, str]:
        return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__}

    def settings(self) -> dict[str, object]:
        """What changes XLA's speed here: its flags, the matmul precision, the platform."""
        return {
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "precision": self.precision,
            "default_matmul_precision": jax.config.jax_default_matmul_precision,
            "platform": self.device.platform,
            "cpu_devices": len(jax.devices("cpu")),
        }
