"""Data-parallel parity: one architecture's step on one device and on two, in either framework, from one weights file.

A case is an architecture and variant ("gan", "aae/semisupervised"), with
"@per-replica" for BatchNorm statistics per replica. For each, `run_case`
computes, from the case's initial weights file and real batches of BATCH:
- the gradients of every phase of one training step at those weights (the
  step's optimizers replaced by recorders that keep what each would have been
  given and update nothing), in the order the phases run, and the step's losses;
- STEPS real training steps from the same weights: every step's losses and the
  parameters and running statistics at the end.
Both through the project's own code paths: the Backend's compiled step, on a
single device or data-parallel (torch-ddp, jax-sharded), and its put_batch.

`python tests/data_parallel.py OUT CASE...`, started by torchrun with two
processes (run_ddp), computes torch's under DistributedDataParallel; process 0
writes OUT/CASE.npz. `python tests/data_parallel.py --jax OUT CASE...`
(run_jax) computes JAX's on one device and sharded over two, in a process of
its own with two CPU devices (the test processes keep JAX's default of one).
A CASE may end in ":float64".
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.inputs import benchmark_task, draw_batches, model_kwargs, write_initial_weights  # noqa: E402
from shared.distributed import Parallel  # noqa: E402
from shared.hparams import HPARAMS  # noqa: E402

# The architectures whose step takes a batch: one runs in the default suite, the rest take minutes (slow)
DEFAULT_CASES = ["mlp"]
SLOW_CASES = ["cnn", "rnn/batched", "autoencoder/mlp", "autoencoder/conv", "vae", "vae_mlp", "gan",
              "aae/unsupervised", "aae/supervised", "aae/semisupervised"]
REPLICAS = 2
BATCH = 20  # the global batch: 10 examples per replica
# ...but the CNN's, whose float32 trajectory bounds were measured at its own batch of 100 (tests/test_parity_cnn.py):
# at 20, BatchNorm over 10 examples per replica amplifies rounding further (2 devices against 1: 2.8e-3 at step 8).
CASE_BATCH = {"cnn": 100}
STEPS = 10
SEED = 0
REPO = Path(__file__).resolve().parents[1]
# The single-device parity tests' trajectory learning rates where they are not the architecture's
# (tests/test_parity_mlp.py TRAJECTORY_LR, tests/test_parity_rnn.py BATCHED_LR); the others train at their own.
TRAJECTORY_LR = {"mlp": 1e-3, "rnn": 0.1}


def parse(case: str) -> tuple[str, str, str]:
    """(arch, variant, batchnorm) of a case name."""
    name, _, batchnorm = case.partition("@")
    arch, _, variant = name.partition("/")
    return arch, variant or next(iter(HPARAMS[arch])), batchnorm or "global"


def case_batches(case: str) -> list[tuple[np.ndarray, ...]]:
    """1 + STEPS real training batches of BATCH, or CASE_BATCH (the gradients' batch, then the steps')."""
    arch, variant, _ = parse(case)
    return draw_batches(benchmark_task(arch, variant), "train", CASE_BATCH.get(arch, BATCH), 1 + STEPS, SEED)


def case_weights(case: str, folder: Path) -> Path:
    """The case's initial weights file (torch's initialisation, seed SEED, dropout off), written once."""
    arch, variant, _ = parse(case)
    path = folder / f"{arch}-{variant}.safetensors"
    if not path.exists():
        write_initial_weights(arch, variant, SEED, path)
    return path


def file_name(case: str, dtype: str = "float32") -> str:
    return case.replace("/", "-").replace("@", "-") + ("" if dtype in ("", "float32") else f"-{dtype}") + ".npz"


def trajectory_lr(case: str) -> float:
    arch, variant, _ = parse(case)
    return TRAJECTORY_LR.get(arch, HPARAMS[arch][variant].lr)


def in_dtype(batch: tuple[np.ndarray, ...], dtype: str) -> tuple[np.ndarray, ...]:
    return tuple(a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a for a in batch)


# ---------------------------------------------------------------- torch
class TorchRecorder:
    """An optimizer's stand-in: step() keeps its parameters' gradients, by the model's names; nothing is updated."""

    def __init__(self, optimizer, names: dict[int, str], recorded: list):
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.names, self.recorded = names, recorded

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Every parameter's gradient: 0 for one the phase's loss does not reach (its grad None; JAX gives zeros)."""
        self.recorded.append({self.names[id(p)]: (p.grad if p.grad is not None else p.new_zeros(p.shape)).detach().numpy().copy()
                              for p in self.params})


def torch_case(case: str, weights: Path, batches, parallel: Parallel | None, dtype: str = "float32", precision: str = "float32") -> dict[str, np.ndarray]:
    """torch's results on one device, or as one process of a data-parallel run (the gradients: the averaged ones); `precision`: the
    Backend's (bfloat16: float32 weights, tests/test_precision.py)."""
    import torch

    from torch_impl.training import Backend, optimizers_of
    from torch_impl.weights import state_dict_from_model

    arch, variant, _ = parse(case)
    task, backend = benchmark_task(arch, variant), Backend(arch, "cpu", parallel, precision, variant=variant)
    lr, batches = trajectory_lr(case), [in_dtype(b, dtype) for b in batches]

    def new_model():
        return backend.init_model(SEED, weights, task.weights_spec(), **model_kwargs(arch, variant)).to(getattr(torch, dtype))

    model = new_model()  # its own parameters: one DDP instance per parameter set
    optimizer, recorded = backend.make_optimizer(model, lr), []
    names = {id(p): name for name, p in model.named_parameters()}
    recorders = [TorchRecorder(o, names, recorded) for o in optimizers_of(optimizer).values()]
    recorder = recorders[0] if isinstance(optimizer, torch.optim.Optimizer) else type(optimizer)(
        *[recorders.pop(0) if o is not None else None for o in optimizer])
    out = {"grad_losses": backend.to_numpy(backend.compile_step(model, recorder)(
        *backend.put_batch(batches[0])))}
    out.update({f"grad.{i}.{name}": g for i, grads in enumerate(recorded) for name, g in grads.items()})

    model = new_model()
    step = backend.compile_step(model, backend.make_optimizer(model, lr))
    out["losses"] = np.stack([np.atleast_1d(backend.to_numpy(step(*backend.put_batch(b)))) for b in batches[1:]])
    out.update({f"param.{k}": v for k, v in state_dict_from_model(model).items()})
    return out


# ---------------------------------------------------------------- JAX
def jax_case(case: str, weights: Path, batches, sharded: bool, dtype: str = "float32", precision: str = "float32") -> dict[str, np.ndarray]:
    """JAX's results on one device, or sharded over REPLICAS (the process needs that many devices: jax_num_cpu_devices).

    float64: call it inside jax.enable_x64(True).
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jax_impl import distributed
    from jax_impl.training import Backend
    from jax_impl.weights import state_dict_from_grads, state_dict_from_model

    arch, variant, batchnorm = parse(case)
    parallel = Parallel(replicas=REPLICAS, batchnorm=batchnorm) if sharded else None
    task, backend = benchmark_task(arch, variant), Backend(arch, "cpu", parallel, precision, variant=variant)
    lr, batches = trajectory_lr(case), [in_dtype(b, dtype) for b in batches]

    def new_model():
        model = backend.init_model(SEED, weights, task.weights_spec(), **model_kwargs(arch, variant))
        if dtype != "float32":
            floats = (nnx.Param, nnx.BatchStat)
            nnx.update(model, jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, nnx.state(model, floats)))
        return model

    model = new_model()
    model.train()
    if sharded and batchnorm == "per-replica":
        distributed.per_replica_batchnorm(model, REPLICAS)
    optimizer = backend.make_optimizer(model, lr)
    graphdef, state = nnx.split(model)
    prefixes: list[str] = []

    class Recorder:
        """An nnx.Optimizer's stand-in: update() keeps the gradients (returned by the jitted function below), updates nothing."""

        def __init__(self, merged, recorded):
            self.merged, self.recorded = merged, recorded

        def update(self, network, grads):
            prefixes.append(next((name for name, part in vars(self.merged).items() if part is network), ""))
            self.recorded.append(grads)

    def grads_of(state, *batch):
        merged = nnx.merge(graphdef, state)
        recorded: list = []
        recorder = Recorder(merged, recorded)
        stand_in = recorder if isinstance(optimizer, nnx.Optimizer) else type(optimizer)(*[recorder if o is not None else None for o in optimizer])
        return backend.train_step(merged, stand_in, *batch), recorded

    if sharded:
        state = jax.tree.map(lambda a: backend.sharding.put(a, backend.sharding.replicated), state)
    losses, recorded = jax.jit(grads_of)(state, *backend.put_batch(batches[0]))
    out = {"grad_losses": backend.to_numpy(losses)}
    for i, (prefix, grads) in enumerate(zip(prefixes, recorded)):
        network = getattr(model, prefix) if prefix else model
        grads = jax.tree.map(distributed.local, grads)
        out.update({f"grad.{i}.{prefix + '.' if prefix else ''}{k}": v for k, v in state_dict_from_grads(network, grads).items()})

    model = new_model()
    step = backend.compile_step(model, backend.make_optimizer(model, lr))
    out["losses"] = np.stack([np.atleast_1d(backend.to_numpy(step(*backend.put_batch(b)))) for b in batches[1:]])
    step.write_back()
    out.update({f"param.{k}": v for k, v in state_dict_from_model(model).items()})
    return out


# ---------------------------------------------------------------- comparisons
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def assert_gradients_match(actual: dict, expected: dict, rtol: float, what: str, scale_of: dict[str, str] | None = None) -> None:
    """The step's losses and every phase's every gradient, relative to the largest entry of the expected gradient
    (of `scale_of[name]` for the gradients that are 0 up to rounding: the conv VAE's free biases)."""
    from tests.parity import assert_close

    assert_close(actual["grad_losses"], expected["grad_losses"], rtol, f"{what}: the step's losses")
    keys = sorted(k for k in expected if k.startswith("grad."))
    assert keys and keys == sorted(k for k in actual if k.startswith("grad.")), f"{what}: other gradients"
    for key in keys:
        phase, name = key.split(".", 2)[1:]
        scale = expected[f"grad.{phase}.{(scale_of or {})[name]}"] if name in (scale_of or {}) else expected[key]
        err = float(np.max(np.abs(actual[key].astype(np.float64) - expected[key])))
        assert err <= rtol * float(np.max(np.abs(scale))), f"{what}: phase {phase}'s gradient of {name}: {err:.3g} > {rtol:g} x {np.max(np.abs(scale)):.3g}"


def assert_trajectories_match(actual: dict, expected: dict, start: dict, bounds, lr: float, what: str) -> None:
    """STEPS steps: the losses of each, then the parameters (as bounds.displacement says) and the running statistics."""
    from tests.parity import assert_close, assert_parameters_within

    for i, (a, e) in enumerate(zip(actual["losses"], expected["losses"]), start=1):
        assert_close(a, e, bounds.loss if i > bounds.strict_steps else min(bounds.loss, bounds.strict_loss), f"{what}: losses at step {i}")
    params = {k[len("param."):] for k in expected if k.startswith("param.") and not k.endswith(BUFFERS)}
    a_sd, e_sd = ({k[len("param."):]: v for k, v in d.items() if k.startswith("param.")} for d in (actual, expected))
    if bounds.displacement is None:
        assert_parameters_within(a_sd, e_sd, start, sorted(params), lr, STEPS)
    else:
        held = sorted(params - set(bounds.free))
        apart = np.sqrt(sum(np.sum((a_sd[k].astype(np.float64) - e_sd[k]) ** 2) for k in held))
        moved = np.sqrt(sum(np.sum((e_sd[k].astype(np.float64) - start[k]) ** 2) for k in held))
        assert apart <= bounds.displacement * moved, f"{what}: after {STEPS} steps the parameters are {apart:.3g} apart, moved {moved:.3g}"
        for k in bounds.free:  # walked by Adam in directions of rounding: within 2 lr per step
            assert np.max(np.abs(a_sd[k] - e_sd[k])) <= 2 * lr * STEPS, f"{what}: {k}"
    for k in sorted(k for k in e_sd if k.endswith(("running_mean", "running_var"))):
        rtol = bounds.running_mean if k.endswith("running_mean") else bounds.running_var
        assert_close(a_sd[k], e_sd[k], rtol, f"{what}: {k} after {STEPS} steps")


# ---------------------------------------------------------------- torch under torchrun
def run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def run_ddp(cases: list[str], folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """torch's results of `cases` under DDP: this file run by torchrun in REPLICAS processes; {case: results}."""
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={REPLICAS}", __file__, str(folder), *cases],
        f"torchrun {Path(__file__).name}")
    return {name: dict(np.load(folder / file_name(*name.partition(":")[::2]))) for name in cases}


def run_jax(cases: list[str], folder: Path) -> dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """JAX's results of `cases`, {case: (on one device, sharded over REPLICAS)}, from a process with REPLICAS CPU devices."""
    run([sys.executable, __file__, "--jax", str(folder), *cases], f"{Path(__file__).name} --jax")
    return {name: tuple(dict(np.load(folder / f"jax-{how}-{file_name(*name.partition(':')[::2])}")) for how in ("single", "sharded"))
            for name in cases}


BATCHNORM_CASES = ("batchnorm@global", "batchnorm@per-replica")  # run_jax's BatchNorm layer alone (jax_batchnorm)


def jax_batchnorm(statistics: str) -> dict[str, np.ndarray]:
    """A BatchNorm in train mode on a batch of 8 sharded over REPLICAS devices: its input, output and running statistics."""
    import jax
    from flax import nnx

    from jax_impl.distributed import Sharding, make_mesh, per_replica_batchnorm
    from jax_impl.layers import BatchNorm

    x = np.random.default_rng(3).normal(2.0, 3.0, (8, 5, 5, 4)).astype(np.float32)
    bn = BatchNorm(4, eps=1e-5, momentum=0.1)
    if statistics == "per-replica":
        per_replica_batchnorm(bn, REPLICAS)
    sharding = Sharding(make_mesh("cpu", REPLICAS))
    graphdef, state = nnx.split(bn)

    @jax.jit
    def forward(state, x):
        model = nnx.merge(graphdef, state)
        return model(x), nnx.state(model)

    y, new_state = forward(jax.tree.map(lambda a: sharding.put(a, sharding.replicated), state), sharding.put(x, sharding.batch))
    nnx.update(bn, new_state)
    return {"x": x, "y": np.asarray(y), "mean": np.asarray(bn.mean[...]), "var": np.asarray(bn.var[...])}


def main_jax(folder: Path, cases: list[str]) -> None:
    import jax

    jax.config.update("jax_num_cpu_devices", REPLICAS)
    for name in cases:
        case, _, dtype = name.partition(":")
        if case in BATCHNORM_CASES:
            for how in ("single", "sharded"):  # one computation, saved under both names run_jax reads
                np.savez(folder / f"jax-{how}-{file_name(case)}", **jax_batchnorm(case.partition("@")[2]))
            continue
        with jax.enable_x64(dtype == "float64"):
            for how in ("single", "sharded"):
                results = jax_case(case, case_weights(case, folder), case_batches(case), how == "sharded", dtype or "float32")
                np.savez(folder / f"jax-{how}-{file_name(case, dtype)}", **results)


def main(folder: Path, cases: list[str]) -> None:
    """Each case (CASE, or CASE:float64) under DDP; process 0 writes its results."""
    from torch_impl import distributed
    from torch_impl.training import Backend

    joined = Backend.start_parallel([], None, "cpu", "global", 60.0)
    for name in cases:
        case, _, dtype = name.partition(":")
        parallel = Parallel(joined.replicas, joined.rank, joined.processes, parse(case)[2])
        results = torch_case(case, case_weights(case, folder), case_batches(case), parallel, dtype or "float32")
        if parallel.writer:
            np.savez(folder / file_name(case, dtype or "float32"), **results)
    distributed.stop()


if __name__ == "__main__":
    if sys.argv[1] == "--jax":
        main_jax(Path(sys.argv[2]), sys.argv[3:])
    else:
        main(Path(sys.argv[1]), sys.argv[2:])
