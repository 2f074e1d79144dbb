"""The model-module contract: what every architecture module of torch_impl/ and jax_impl/ defines.

Written once, here, with no framework imported: `Model` stands for a
torch.nn.Module or an nnx.Module, `Optimizer` for a torch.optim.Optimizer or
an nnx.Optimizer (or an `Optimizers` NamedTuple of them, one per network),
`Array` for a torch.Tensor or a jax.Array. A module is named after its
architecture (`torch_impl/mlp.py`, `jax_impl/mlp.py`) and is a plain module
of functions: `ModelModule` below is what every one has, and each task
(shared/tasks.py) names, in `Task.contract`, the protocol its architecture's
modules satisfy. tests/test_contract.py checks every module of both trees
against it: the names, the parameter names, and what each function returns.

The functions take the model first. A training step updates the model and
its optimizer in place and returns its loss (a 0-d array) or, for a step of
several phases, the vector of `Task.loss_names`; a variant that trains
another way has its own step, `train_step_<variant>` (train_step_of). Every inference function
(eval_outputs, reconstruct, sample, encode, decode) returns a dict of named
arrays; the caller puts the model in eval mode and turns gradients off
(`Inference` below, through each framework's `Backend`, whose methods are
written here too).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from shared.distributed import Parallel
from shared.errors import UserError
from shared.weights import WeightsSpec

Array = Any  # torch.Tensor | jax.Array
Model = Any  # torch.nn.Module | nnx.Module
Optimizer = Any  # torch.optim.Optimizer | nnx.Optimizer | a NamedTuple of them
Outputs = dict[str, Array]
TrainStep = Callable[..., Array]  # (model, optimizer, *batch) -> loss(es)
# The compute precision of training and inference (docs/precision.md): float32 throughout, or bfloat16 mixed
# precision, float32 weights and optimizer state with the layers' products in bfloat16 (torch: torch.autocast;
# JAX: the layers' computation dtype) and the losses in float32.
PRECISIONS = ("float32", "bfloat16")
# How each framework runs a step (docs/benchmark.md#what-a-row-is), the first its default; written once, here.
MODES = {"torch": ("torch-eager", "torch-compile", "torch-compile-cudagraphs"), "jax": ("jax-jit", "jax-scan")}
DATA_PARALLEL_MODES = {"torch": "torch-ddp", "jax": "jax-sharded"}  # training over several processes (DDP) or devices (a mesh)
GPU_MODES = ("torch-compile-cudagraphs",)  # torch.compile(mode="reduce-overhead"): CUDA graphs, which a CPU has not
SCAN_MODE = "jax-scan"  # K training steps in one compiled call, a lax.scan over K stacked batches: training only
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # torch.compile's mode for the torch-compile rows (the benchmark's --compile-mode)
INFERENCE_FUNCTIONS = ("eval_outputs", "reconstruct", "sample", "encode", "decode")  # what an architecture module may define besides its steps
EVAL_BATCH = 500  # the examples an inference function takes at a time when a run evaluates (Inference)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    return precision


def train_step_of(arch: ModelModule, variant: str | None = None) -> TrainStep:
    """The architecture module's training step for `variant`: `train_step_<variant>` ('-' as '_') where the variant has a step of
    its own (the AAE's three, the RNN's per-name form), `train_step` otherwise."""
    own_step = getattr(arch, f"train_step_{variant.replace('-', '_')}", None) if variant else None
    return own_step or arch.train_step


class ModelModule(Protocol):
    """Every architecture module."""

    def init_model(self, seed: int) -> Model:
        """A new model, its weights (and dropout masks, in JAX) drawn from `seed`.

        Modules whose model depends on the data or the variant take keyword
        arguments besides the seed (`Task.model_kwargs`: the RNN's n_classes,
        the autoencoder's and the AAE's variant).
        """

    def make_optimizer(self, model: Model, lr: float) -> Optimizer:
        """The architecture's optimizer(s) over the model's parameters, learning rate `lr`."""


class ClassifierModule(ModelModule, Protocol):
    """mlp, cnn."""

    def train_step(self, model: Model, optimizer: Optimizer, x: Array, y: Array) -> Array: ...

    def eval_outputs(self, model: Model, x: Array) -> Outputs:
        """{"logits"}."""


class RnnModule(ModelModule, Protocol):
    """rnn: two forms of one model, a padded batch and the source's one name per step."""

    def train_step(self, model: Model, optimizer: Optimizer, chars: Array, lengths: Array, y: Array) -> Array: ...

    def train_step_per_name(self, model: Model, optimizer: Optimizer, chars: Array, y: Array) -> Array: ...

    def eval_outputs(self, model: Model, chars: Array, lengths: Array) -> Outputs:
        """{"logits"}: the log-probabilities at each name's last character."""


class AutoencoderModule(ModelModule, Protocol):
    """autoencoder (both variants)."""

    def train_step(self, model: Model, optimizer: Optimizer, x: Array) -> Array: ...

    def eval_outputs(self, model: Model, x: Array) -> Outputs:
        """{"logits"}: the reconstruction's pixel logits."""

    def reconstruct(self, model: Model, x: Array) -> Outputs:
        """{"images"}: the reconstructions in [0, 1]."""


class VaeModule(ModelModule, Protocol):
    """vae_mlp, vae."""

    def train_step(self, model: Model, optimizer: Optimizer, x: Array, eps: Array) -> Array: ...

    def eval_outputs(self, model: Model, x: Array, eps: Array) -> Outputs:
        """{"logits"} at z = mean + sigma * eps, and the posterior's parameters
        ({"mu", "logsigma"} for vae_mlp, {"mean", "logvar"} for vae)."""

    def reconstruct(self, model: Model, x: Array) -> Outputs:
        """{"images"}: the decoder's Bernoulli means at the posterior mean."""

    def sample(self, model: Model, z: Array, u: Array) -> Outputs:
        """{"means", "pixels"}: the decoder's Bernoulli means at z, and pixels drawn with the uniforms u."""


class GanModule(ModelModule, Protocol):
    """gan: a discriminator step then a generator step; judged by its samples alone."""

    def train_step(self, model: Model, optimizer: Optimizer, x: Array, z_d: Array, z_g: Array) -> Array: ...

    def sample(self, model: Model, z: Array) -> Outputs:
        """{"images"}: G(z) in [-1, 1]."""


class AaeModule(ModelModule, Protocol):
    """aae: one multi-phase step per variant."""

    def train_step_unsupervised(self, model: Model, optimizer: Optimizer, x: Array, z_prior: Array) -> Array: ...

    def train_step_supervised(self, model: Model, optimizer: Optimizer, x: Array, y: Array, z_prior: Array) -> Array: ...

    def train_step_semisupervised(
        self, model: Model, optimizer: Optimizer, x: Array, z_prior: Array, y_prior: Array, x_labelled: Array, y_labelled: Array,
    ) -> Array: ...

    def encode(self, model: Model, x: Array) -> Outputs:
        """{"z"} (+ "class_logits", semi-supervised): the codes."""

    def decode(self, model: Model, z: Array, y: Array) -> Outputs:
        """{"images"}: P(z, y) in [0, 1]."""

    def eval_outputs(self, model: Model, x: Array, y: Array) -> Outputs:
        """{"logits", "z"} (+ "class_logits"): P conditioned as in training (y: one-hot labels, read by the supervised variant)."""


class Backend(Protocol):
    """The framework machinery, once per framework: torch_impl.training.Backend and jax_impl.training.Backend.

    The training command (shared/trainer.py) and the benchmark
    (benchmarks/worker.py) drive either through these, and only these.
    """

    framework: str  # "torch" or "jax"
    modes: tuple[str, ...]  # the benchmark's step modes: torch-eager, torch-compile, torch-compile-cudagraphs (GPU); jax-jit, jax-scan
    data_parallel_mode: str  # the step mode of a run over several devices: torch-ddp; jax-sharded
    arch: ModelModule  # the architecture's module in this framework's tree
    train_step: TrainStep  # the module's training step for the Backend's variant (train_step_of)
    parallel: Parallel  # this process's place in a data-parallel run (a single-device run's by default)
    precision: str  # one of PRECISIONS: what the steps and the inference functions compute in

    def __init__(self, arch: str, device: str = "auto", parallel: Parallel | None = None, precision: str = "float32",
                 variant: str | None = None) -> None:
        """The Backend of the architecture `arch` (its `variant`, the first by default: shared/hparams.py)."""

    @staticmethod
    def start_parallel(argv: list[str], devices: int | None, device: str, batchnorm: str, timeout: float, **framework_flags) -> Parallel | None:
        """Set up a data-parallel run before anything else touches the framework: torch runs --devices processes of the
        command (torchrun's launcher; None once they have trained) or joins torchrun's process group; JAX asks for the
        local devices and joins jax.distributed (its framework_flags: coordinator, num_processes, process_id). Waits at
        most `timeout` s for the peers."""

    def init_model(self, seed: int, init: Path | None = None, expected: WeightsSpec | None = None, **model_kwargs: Any) -> Model:
        """arch.init_model(seed, **model_kwargs) on the device, then the weights file `init` if given (its metadata checked against `expected`);
        float32 weights in any precision (JAX: its layers set to compute in the precision's dtype). The dropout masks are drawn
        from `seed` too (JAX: the model's own keys; torch: the global generator, which nn.Dropout draws from, seeded here)."""

    def make_optimizer(self, model: Model, lr: float) -> Optimizer: ...

    def compile_step(self, model: Model, optimizer: Optimizer, mode: str | None = None, step: TrainStep | None = None) -> CompiledStep:
        """The training step (`step`, or the Backend's `train_step`) bound to model and optimizer, compiled for `mode` (default: the
        framework's first, or its data-parallel mode on several devices, which returns the global batch's losses) in the Backend's
        precision. jax-scan's step takes each batch array stacked K times on a new leading axis and returns the K steps' losses."""

    def compile_inference(self, model: Model, fn: Callable[..., Outputs], mode: str | None = None) -> Callable[..., Outputs]:
        """fn bound to the model in eval mode, without gradients, compiled for `mode`: f(*batch) -> outputs (the benchmark's)."""

    def to_device(self, array: np.ndarray) -> Array: ...

    def put_batch(self, batch: tuple[np.ndarray, ...]) -> tuple[Array, ...]:
        """A global training batch as the compiled step takes it: on the device, or each replica's slice on its own."""

    def any_process(self, flag: bool) -> bool:
        """Whether `flag` is true in any process of the run (every process calls it at the same point)."""

    def finish(self) -> None:
        """Leave the data-parallel run's process group (nothing to do on one device)."""

    def to_numpy(self, tree: Any) -> Any: ...

    def predict(self, model: Model, fn: Callable[..., Outputs], *arrays: np.ndarray) -> dict[str, np.ndarray]:
        """fn(model, *arrays) in eval mode without gradients, in the Backend's precision, numpy in and out (bfloat16 outputs as
        float32); the model's own mode is left as it was."""

    def sync(self, result: Any = None) -> None:
        """Wait until the device has computed `result` (the benchmark reads the clock after this)."""

    def checkpoint_state(self, model: Model, optimizer: Optimizer) -> dict[str, np.ndarray]:
        """What a checkpoint holds besides the weights file: every optimizer's state and every random state the next step draws from."""

    def restore_state(self, model: Model, optimizer: Optimizer, arrays: dict[str, np.ndarray], source: str) -> None:
        """The inverse of checkpoint_state, on a new model and optimizer: training continues as if never stopped."""

    def save_model(self, model: Model, path: Path, spec: WeightsSpec) -> None:
        """The weights file, with `spec` in its metadata."""

    def device_name(self) -> str: ...

    def versions(self) -> dict[str, str]: ...

    def settings(self) -> dict[str, object]:
        """The framework settings that change its speed (threads, XLA flags, matmul precision), for the benchmark's records."""


class CompiledStep(Protocol):
    """A training step bound to its model and optimizer: step(*batch) -> loss(es)."""

    def __call__(self, *batch: Array) -> Array: ...

    def write_back(self) -> None:
        """Bring the model and optimizer objects up to date (JAX keeps the state apart while it trains)."""


class Inference:
    """A model's inference functions, bound to it: eval mode, no gradient, numpy in and out, EVAL_BATCH examples at a time.

    What the tasks evaluate and draw pictures with, the same in both
    frameworks: `Inference(backend, model).eval_outputs(x)` calls the
    architecture module's `eval_outputs(model, x)` through `backend.predict`
    on each slice of x, and concatenates the outputs. It has those of
    eval_outputs, reconstruct, sample, encode and decode that the module defines.
    """

    eval_outputs: Callable[..., dict[str, np.ndarray]]
    reconstruct: Callable[..., dict[str, np.ndarray]]
    sample: Callable[..., dict[str, np.ndarray]]
    encode: Callable[..., dict[str, np.ndarray]]
    decode: Callable[..., dict[str, np.ndarray]]

    def __init__(self, backend: Backend, model: Model):
        self._backend, self._model = backend, model
        for name in INFERENCE_FUNCTIONS:
            if hasattr(backend.arch, name):
                setattr(self, name, partial(self._in_batches, getattr(backend.arch, name)))

    def _in_batches(self, fn: Callable[..., Outputs], *arrays: np.ndarray) -> dict[str, np.ndarray]:
        outputs = []
        for start in range(0, len(arrays[0]), EVAL_BATCH):
            outputs.append(self._backend.predict(self._model, fn, *(a[start : start + EVAL_BATCH] for a in arrays)))
        return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
