"""Every architecture module of both trees, and both Backends, against shared/contract.py.

The contract names the functions a module defines and their parameters;
these tests check the names and parameter names of every module in
torch_impl/ and jax_impl/, that the twins' public functions take the same
arguments, and what the functions return on small real inputs: a training
step's loss(es) in the shape the task expects, and dicts of named arrays,
the same names and shapes in both frameworks, from every inference function.
The values themselves are the parity tests' business (tests/test_parity_*.py).
"""
from __future__ import annotations

import importlib
import inspect
from typing import Protocol

import numpy as np
import pytest
from torch import nn as torch_nn

from shared import contract
from shared.hparams import HPARAMS, label
from shared.tasks import TASKS

FRAMEWORKS = ("torch", "jax")
CONFIGS = [(arch, variant) for arch in HPARAMS for variant in HPARAMS[arch]]
INFERENCE = contract.INFERENCE_FUNCTIONS
SLOW_CONTRACTS = {"gan", "vae", "autoencoder/conv"}  # 11-17 s each on 2 cores: in the slow suite


def module(framework: str, arch: str):
    return importlib.import_module(f"{framework}_impl.{arch}")


def protocol_members(protocol: type) -> dict[str, inspect.Signature]:
    """The functions a Protocol declares, its bases' included, without `self`."""
    members = {}
    for cls in reversed(protocol.__mro__):
        if cls in (object, Protocol) or not getattr(cls, "_is_protocol", False):
            continue
        for name, value in vars(cls).items():
            if inspect.isfunction(value) and not name.startswith("_"):
                signature = inspect.signature(value)
                members[name] = signature.replace(parameters=list(signature.parameters.values())[1:])
    return members


def signature_problems(fn, expected: inspect.Signature) -> list[str]:
    """The function must take the protocol's parameters, by those names, first; any others need defaults."""
    params = list(inspect.signature(fn).parameters.values())
    wanted = list(expected.parameters.values())
    names = [p.name for p in params[: len(wanted)]]
    problems = []
    if names != [p.name for p in wanted]:
        problems.append(f"takes ({', '.join(p.name for p in params)}), the contract says ({', '.join(p.name for p in wanted)})")
    for extra in params[len(wanted):]:
        if extra.default is inspect.Parameter.empty and extra.kind not in (extra.VAR_POSITIONAL, extra.VAR_KEYWORD):
            problems.append(f"its parameter '{extra.name}' is not in the contract and has no default")
    return problems


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("arch", sorted(TASKS))
def test_every_module_defines_what_its_task_needs(framework, arch):
    task_cls, mod = TASKS[arch], module(framework, arch)
    members = protocol_members(task_cls.contract)
    assert {"init_model", "make_optimizer"} <= set(members)
    problems = [f"{name}: missing" for name in members if not hasattr(mod, name)]
    problems += [f"{name}: {p}" for name, sig in members.items() if hasattr(mod, name) for p in signature_problems(getattr(mod, name), sig)]
    assert not problems, f"{mod.__name__} against shared.contract.{task_cls.contract.__name__}: " + "; ".join(problems)


def defined_here(mod) -> list[str]:
    """The public functions and classes a module defines, in the order it defines them."""
    return [
        name for name, value in vars(mod).items()
        if not name.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == mod.__name__
    ]


@pytest.mark.parametrize("arch", sorted(TASKS))
def test_twins_define_the_same_names_in_the_same_order(arch):
    """torch_impl/ARCH.py and jax_impl/ARCH.py define the same public functions and classes, in the same order, for every ARCH."""
    assert defined_here(module("torch", arch)) == defined_here(module("jax", arch))


@pytest.mark.parametrize("arch", sorted(TASKS))
def test_twins_take_the_same_arguments(arch):
    """Every public function of torch_impl/ARCH.py and jax_impl/ARCH.py: the same parameter names and defaults."""
    t, j = module("torch", arch), module("jax", arch)
    for name, fn in vars(t).items():
        if inspect.isfunction(fn) and fn.__module__ == t.__name__ and not name.startswith("_"):
            t_params = [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]
            j_params = [(p.name, p.default) for p in inspect.signature(getattr(j, name)).parameters.values()]
            assert t_params == j_params, f"{arch}.{name}: torch takes {t_params}, JAX {j_params}"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_both_backends_implement_the_backend_protocol(framework):
    backend_cls = importlib.import_module(f"{framework}_impl.training").Backend
    for name, sig in protocol_members(contract.Backend).items():
        assert hasattr(backend_cls, name), f"{framework} Backend has no {name}"
        method = inspect.signature(getattr(backend_cls, name))
        got = [p for p in method.parameters if p != "self"]
        assert got == list(sig.parameters), f"{framework} Backend.{name} takes {got}, the contract says {list(sig.parameters)}"
    backend = backend_cls("mlp", "cpu")
    assert backend.framework == framework and backend.modes and backend.arch is module(framework, "mlp")


def small_batch(task, batch_size: int) -> tuple[np.ndarray, ...]:
    idx = np.arange(1 if task.fixed_batch_size else batch_size)
    return task.train_batch(idx, np.random.default_rng(0))


def example_inputs(task, name: str, count: int) -> tuple[np.ndarray, ...]:
    """Arguments of an inference function, made from the contract's parameter names and the task's data."""
    hp, rng = task.hp, np.random.default_rng(1)
    latent = getattr(hp, "latent_dim", None) or getattr(hp, "z_dim", None)
    makers = {
        "x": lambda: (task.test_x if hasattr(task, "test_x") else task.data.test_x)[:count],
        "eps": lambda: rng.standard_normal((count, latent), dtype=np.float32),
        "z": lambda: rng.standard_normal((count, latent), dtype=np.float32),
        "u": lambda: rng.random((count, 784), dtype=np.float32),
        "y": lambda: np.eye(10, dtype=np.float32)[np.arange(count) % 10],
    }
    if task.arch == "rnn":
        (chars, lengths), _ = task.eval_arrays("test")
        makers |= {"chars": lambda: chars[:count], "lengths": lambda: lengths[:count]}
    params = list(inspect.signature(getattr(module("torch", task.arch), name)).parameters)[1:]
    return tuple(makers[p]() for p in params)


@pytest.mark.parametrize(("arch", "variant"), [pytest.param(a, v, marks=[pytest.mark.slow] * (label(a, v) in SLOW_CONTRACTS)) for a, v in CONFIGS],
                         ids=[label(a, v) for a, v in CONFIGS])
def test_steps_and_inference_functions_return_what_the_contract_says(arch, variant):
    task = TASKS[arch].load(variant)
    batch = small_batch(task, 4)
    outputs = {}
    for framework in FRAMEWORKS:
        backend = importlib.import_module(f"{framework}_impl.training").Backend(arch, "cpu", variant=variant)
        model = backend.init_model(0, **task.model_kwargs)
        optimizer = backend.make_optimizer(model, task.hp.lr)
        step, args = backend.train_step, (model, optimizer, *map(backend.to_device, batch))
        if framework == "torch":
            loss = step(*args)
        else:  # traced only: an eager JAX step compiles every primitive on its own (30 s for the GAN here)
            from flax import nnx

            loss = nnx.eval_shape(step, *args)
        expected_shape = () if len(task.loss_names) == 1 else (len(task.loss_names),)
        assert tuple(loss.shape) == expected_shape and str(loss.dtype).endswith("float32"), f"{framework} step returned {loss!r}"
        for name in INFERENCE:
            if hasattr(backend.arch, name):
                out = backend.predict(model, getattr(backend.arch, name), *example_inputs(task, name, 3))
                assert isinstance(out, dict) and out, f"{framework} {name} returned {type(out).__name__}, not a dict of arrays"
                assert all(isinstance(v, np.ndarray) and len(v) == 3 for v in out.values()), f"{framework} {name}"
                outputs.setdefault(name, {})[framework] = {k: v.shape for k, v in out.items()}
    for name, shapes in outputs.items():
        assert shapes["torch"] == shapes["jax"], f"{label(arch, variant)}.{name}: torch returns {shapes['torch']}, JAX {shapes['jax']}"


def modes(framework: str, model) -> list[bool]:
    """Whether each dropout and BatchNorm layer of the model is in train mode."""
    if framework == "torch":
        return [m.training for m in model.modules() if isinstance(m, (torch_nn.Dropout, torch_nn.modules.batchnorm._BatchNorm))]
    from flax import nnx

    layers = [m for _, m in nnx.iter_graph(model) if hasattr(m, "deterministic") or hasattr(m, "use_running_average")]
    return [not getattr(m, "deterministic", getattr(m, "use_running_average", True)) for m in layers]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_predict_runs_in_eval_mode_and_leaves_the_model_as_it_was(framework):
    """The CNN (dropout and BatchNorm): predict is deterministic and equals eval mode, in train mode, eval mode and a mix."""
    backend = importlib.import_module(f"{framework}_impl.training").Backend("cnn", "cpu")
    model = backend.init_model(0)
    x = TASKS["cnn"].load().data.test_x[:8]
    model.eval()
    expected = backend.predict(model, backend.arch.eval_outputs, x)["logits"]
    for setup in ("train", "eval", "mixed"):
        model.train() if setup != "eval" else model.eval()
        if setup == "mixed":
            model.dropout.eval()
        before = modes(framework, model)
        out = backend.predict(model, backend.arch.eval_outputs, x)["logits"]
        np.testing.assert_array_equal(out, expected, err_msg=f"{framework}, model in {setup} mode")
        assert modes(framework, model) == before, f"{framework}: predict changed the modes of a model in {setup} mode"


@pytest.mark.parametrize(("arch", "variant"), [("cnn", "default"), ("aae", "semisupervised"), ("rnn", "batched")])
def test_jax_models_from_a_weights_file_equal_eager_initialisation_then_loading(arch, variant, tmp_path):
    """Backend.init_model(seed, file) skips the random draws the file overwrites; every variable, the dropout keys too,
    must be what initialising eagerly and loading the file gives (the CNN: BatchNorm statistics; the AAE: three dropout streams)."""
    import jax
    from flax import nnx

    from jax_impl.training import Backend
    from jax_impl.weights import load_model, save_model

    task = TASKS[arch].load(variant)
    path = tmp_path / "weights.safetensors"
    source = importlib.import_module(f"jax_impl.{arch}").init_model(7, **task.model_kwargs)  # other weights than seed 0's
    save_model(source, path, task.weights_spec())
    fast = Backend(arch, "cpu").init_model(0, path, **task.model_kwargs)
    eager = importlib.import_module(f"jax_impl.{arch}").init_model(0, **task.model_kwargs)
    load_model(eager, path)
    unwrap = lambda x: np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)  # noqa: E731
    fast_leaves, eager_leaves = nnx.to_flat_state(nnx.state(fast)), nnx.to_flat_state(nnx.state(eager))
    assert [p for p, _ in fast_leaves] == [p for p, _ in eager_leaves]
    assert any(isinstance(v, nnx.RngKey) for _, v in eager_leaves) == (arch != "rnn")
    for (path_, a), (_, b) in zip(fast_leaves, eager_leaves):
        assert isinstance(a.get_value(), jax.Array), f"{path_} is {type(a.get_value()).__name__}"
        np.testing.assert_array_equal(unwrap(a.get_value()), unwrap(b.get_value()), err_msg=str(path_))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_each_variant_trains_with_its_own_step_where_it_has_one(framework):
    """train_step_of: the AAE's three variants and the RNN's per-name form have steps of their own, every other variant
    trains with train_step; and no module defines a train_step_<x> for an x that is not one of its variants (a typo would
    otherwise train the variant with the default step, silently)."""
    expected = {("aae", v): f"train_step_{v}" for v in HPARAMS["aae"]} | {("rnn", "per-name"): "train_step_per_name"}
    for arch, variant in CONFIGS:
        backend = importlib.import_module(f"{framework}_impl.training").Backend(arch, "cpu", variant=variant)
        assert backend.train_step.__name__ == expected.get((arch, variant), "train_step"), f"{framework} {label(arch, variant)}"
    for arch in HPARAMS:
        own = {name.removeprefix("train_step_") for name in vars(module(framework, arch)) if name.startswith("train_step_")}
        assert own <= {v.replace("-", "_") for v in HPARAMS[arch]}, f"{framework}_impl/{arch}.py: {sorted(own)}"
