"""Character-level RNN: PyTorch and JAX compute the same thing, and so do its two forms.

On real names from tests/data/names (mixed lengths, including a
one-letter name and the longest name of the data):
- torch vs JAX (weights converted both ways): per-character outputs, loss,
  every gradient and a 10-step SGD trajectory, for the source's per-name
  loop and for the batched, length-masked form;
- per-name vs batched within each framework: the batch loss is the mean of
  the per-name losses, its gradients the mean of theirs, and padding never
  leaks into either;
- checks that share no code with the models: the source loop in float64
  numpy, and the source's manual update `p.data.add_(-lr, p.grad)`.
Run with -s to see the worst measured error of each check.
"""
from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jax_impl import rnn as jrnn
from jax_impl import weights as jax_weights
from shared.hparams import RNN_PER_NAME as HP
from shared.names import load_names, one_hot_batch, one_hot_name
from tests.conftest import NAMES_DIR, slow_for
from tests.numpy_reference import numpy_rnn_log_probs
from tests.parity import DIRECTIONS, assert_close, jax_grads, paired_models, trajectories
from tests.tolerances import FORWARD_RTOL, GRAD_RTOL, LOSS_RTOL, TRAJECTORY_LOSS_RTOL, TRAJECTORY_PARAM_ATOL
from torch_impl import rnn as trnn
from torch_impl import weights as torch_weights

N_CLASSES = 18
BATCH = 32
BATCHED_LR = 0.1  # large enough that 10 steps move the parameters visibly
FRAMEWORKS = ["torch", "jax"]

# check -> worst error seen (relative to the largest |expected| entry, or absolute where marked)
WORST: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def report_worst_errors():
    yield
    print("\nRNN parity, worst measured errors:")
    for what, err in sorted(WORST.items()):
        print(f"  {what:<58} {err:.3g}")


def _record(what: str, err: float) -> None:
    WORST[what] = max(WORST.get(what, 0.0), err)


def close(actual, expected, rtol: float, check: str, where: str = "") -> None:
    """assert_close, recording max|diff| / max|expected| under `check`; `where` adds to the failure message."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if a.shape == e.shape and e.size:
        _record(check, float(np.max(np.abs(a - e))) / max(float(np.max(np.abs(e))), 1e-30))
    assert_close(actual, expected, rtol, f"{check} {where}")


def close_dicts(actual: dict, expected: dict, rtol: float, check: str, where: str = "") -> None:
    assert sorted(actual) == sorted(expected), f"{check}: keys differ"
    for key in expected:
        close(actual[key], expected[key], rtol, check, f"{where} '{key}'")


def within_dicts(actual: dict, expected: dict, atol: float, check: str) -> None:
    assert sorted(actual) == sorted(expected), f"{check}: keys differ"
    for key in expected:
        err = float(np.max(np.abs(np.asarray(actual[key], np.float64) - expected[key])))
        _record(check + " (absolute)", err)
        assert err <= atol, f"{check} '{key}': max |diff| {err:.3g} > {atol:g}"


# ---------------------------------------------------------------- data
@pytest.fixture(scope="module")
def samples() -> dict[str, list[tuple[str, int]]]:
    """(name, label) lists drawn once from the classic names data, with a seed."""
    data = load_names(NAMES_DIR)
    assert len(data.classes) == N_CLASSES, data.classes
    pairs = list(zip(data.train_names, data.train_y.tolist()))
    longest = max(pairs, key=lambda p: len(p[0]))
    assert len(longest[0]) == data.max_length
    shortest = min(pairs, key=lambda p: len(p[0]))
    # The data has no one-letter name (its shortest has 2 letters): the first letter of a real name stands in.
    one_letter = (pairs[0][0][0], pairs[0][1])
    rng = np.random.default_rng(0)
    drawn = [pairs[i] for i in rng.permutation(len(pairs))[: 10 * BATCH]]
    by_length = {}
    for pair in drawn:
        by_length.setdefault(len(pair[0]), pair)
    mixed = [one_letter, shortest, *sorted(by_length.values(), key=lambda p: len(p[0])), longest]
    return {
        "few": [one_letter, shortest, drawn[0], longest],
        "mixed": mixed,  # every length from 1 to the longest that the draw holds
        "trajectory": [one_letter, *drawn[1:9], longest],
        "batches": [[one_letter, longest, *drawn[2:BATCH]], *(drawn[i * BATCH : (i + 1) * BATCH] for i in range(1, 10))],
    }


def padded(pairs, length: int | None = None):
    """(chars (B, T, 57), lengths (B,), y (B,)) as numpy, T = the longest name unless given."""
    names = [n for n, _ in pairs]
    chars, lengths = one_hot_batch(names, length or max(map(len, names)))
    return chars, lengths, np.array([y for _, y in pairs], np.int64)


def to_torch(*arrays):
    return tuple(torch.as_tensor(a) for a in arrays)


def to_jax(*arrays):
    return tuple(jnp.asarray(a) for a in arrays)


def torch_grads(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Gradients under state_dict names; a parameter the loss never reached (hid_fc for a one-letter name) has 0."""
    return {
        name: np.zeros(tuple(p.shape), np.float32) if p.grad is None else p.grad.cpu().numpy().copy()
        for name, p in model.named_parameters()
    }


def torch_per_name(model, name: str, y: int):
    model.zero_grad(set_to_none=True)
    loss = trnn.loss_fn_per_name(model, torch.as_tensor(one_hot_name(name)), torch.tensor([y]))
    loss.backward()
    return loss.item(), torch_grads(model)


def jax_per_name(model, name: str, y: int):
    loss, grads = nnx.value_and_grad(jrnn.loss_fn_per_name)(model, jnp.asarray(one_hot_name(name)), jnp.asarray([y]))
    return float(loss), jax_grads(model, grads)


def torch_batched(model, chars, lengths, y):
    model.zero_grad(set_to_none=True)
    loss = trnn.loss_fn(model, *to_torch(chars, lengths, y))
    loss.backward()
    return loss.item(), torch_grads(model)


def jax_batched(model, chars, lengths, y):
    loss, grads = nnx.value_and_grad(jrnn.loss_fn)(model, *to_jax(chars, lengths, y))
    return float(loss), jax_grads(model, grads)


PER_NAME = {"torch": torch_per_name, "jax": jax_per_name}
BATCHED = {"torch": torch_batched, "jax": jax_batched}
INIT = {"torch": trnn.init_model, "jax": jrnn.init_model}


@pytest.fixture(params=DIRECTIONS)
def models(request):
    return paired_models(trnn, jrnn, request.param, n_classes=N_CLASSES)


# ---------------------------------------------------------------- the same model
def test_parameter_shapes_and_counts_are_equal():
    torch_model, jax_model = trnn.init_model(0), jrnn.init_model(0)
    torch_sd = torch_weights.state_dict_from_model(torch_model)
    jax_sd = jax_weights.state_dict_from_model(jax_model)
    combined = HP.n_letters + HP.hidden_dim
    shapes = {
        "hid_fc.weight": (HP.hidden_dim, combined), "hid_fc.bias": (HP.hidden_dim,),
        "out_fc.weight": (N_CLASSES, combined), "out_fc.bias": (N_CLASSES,),
    }
    assert {k: v.shape for k, v in torch_sd.items()} == {k: v.shape for k, v in jax_sd.items()} == shapes
    expected = (185 * 128 + 128) + (185 * 18 + 18)
    assert sum(p.numel() for p in torch_model.parameters()) == expected == 27_156
    assert sum(np.size(p) for p in jax.tree.leaves(nnx.state(jax_model, nnx.Param))) == expected


# ---------------------------------------------------------------- torch vs JAX, the per-name loop
def test_per_name_outputs_at_every_character_and_loss_agree(models, samples):
    torch_model, jax_model = models
    for name, y in samples["few"]:
        chars = one_hot_name(name)
        t_hidden, j_hidden = torch.zeros(1, HP.hidden_dim), jnp.zeros((1, HP.hidden_dim))
        with torch.no_grad():
            for i, char in enumerate(chars):
                t_pred, t_hidden = torch_model(torch.as_tensor(char[None]), t_hidden)
                j_pred, j_hidden = jax_model(jnp.asarray(char[None]), j_hidden)
                close(j_pred, t_pred.cpu().numpy(), FORWARD_RTOL, "per-name: output at each char", f"{name!r} char {i}")
                close(j_hidden, t_hidden.cpu().numpy(), FORWARD_RTOL, "per-name: hidden at each char", f"{name!r} char {i}")
        with torch.no_grad():
            t_loss = trnn.loss_fn_per_name(torch_model, torch.as_tensor(chars), torch.tensor([y])).item()
        j_loss = float(jrnn.loss_fn_per_name(jax_model, jnp.asarray(chars), jnp.asarray([y])))
        close(j_loss, t_loss, LOSS_RTOL, "per-name: loss", repr(name))


def test_per_name_every_gradient_agrees(models, samples):
    torch_model, jax_model = models
    for name, y in samples["few"]:
        t_loss, t_g = torch_per_name(torch_model, name, y)
        j_loss, j_g = jax_per_name(jax_model, name, y)
        close(j_loss, t_loss, LOSS_RTOL, "per-name: loss", repr(name))
        close_dicts(j_g, t_g, GRAD_RTOL, "per-name: gradients", repr(name))
        if len(name) == 1:  # the hidden update is never read: no gradient reaches hid_fc
            assert not t_g["hid_fc.weight"].any() and not j_g["hid_fc.weight"].any()


def test_ten_per_name_sgd_steps_follow_the_same_trajectory(models, samples):
    torch_model, jax_model = models
    start = torch_weights.state_dict_from_model(torch_model)
    steps = [(one_hot_name(name), np.array([y], np.int64)) for name, y in samples["trajectory"]]
    # lr HP.lr, the source's 0.001; the JAX step is jit-compiled once per name length
    t_losses, j_losses = trajectories(trnn, jrnn, torch_model, jax_model, steps, HP.lr, lambda arch: arch.train_step_per_name)
    for i, ((name, _), t_loss, j_loss) in enumerate(zip(samples["trajectory"], t_losses, j_losses)):
        close(j_loss, t_loss, TRAJECTORY_LOSS_RTOL, "per-name SGD: loss at each step", f"{i + 1} ({name!r})")
    t_params = torch_weights.state_dict_from_model(torch_model)
    j_params = jax_weights.state_dict_from_model(jax_model)
    within_dicts(j_params, t_params, TRAJECTORY_PARAM_ATOL, "per-name SGD: parameters after 10 steps")
    moved = max(float(np.abs(t_params[k] - start[k]).max()) for k in start)
    worst = max(float(np.abs(j_params[k] - t_params[k]).max()) for k in start)
    assert moved > 100 * worst, f"parameters moved {moved:.3g}, the frameworks differ by {worst:.3g}"


# ---------------------------------------------------------------- torch vs JAX, the batched form
def test_batched_logits_loss_and_every_gradient_agree(models, samples):
    torch_model, jax_model = models
    chars, lengths, y = padded(samples["batches"][0])
    assert lengths.min() == 1 and lengths.max() == chars.shape[1]
    with torch.no_grad():
        t_logits = trnn.last_logits(torch_model, *to_torch(chars, lengths)).cpu().numpy()
    j_logits = np.asarray(jrnn.last_logits(jax_model, *to_jax(chars, lengths)))
    close(j_logits, t_logits, FORWARD_RTOL, "batched: last_logits")
    j_eval = np.asarray(jrnn.eval_outputs(jax_model, *to_jax(chars, lengths))["logits"])
    np.testing.assert_array_equal(j_eval, j_logits)
    t_loss, t_g = torch_batched(torch_model, chars, lengths, y)
    j_loss, j_g = jax_batched(jax_model, chars, lengths, y)
    close(j_loss, t_loss, LOSS_RTOL, "batched: loss")
    close_dicts(j_g, t_g, GRAD_RTOL, "batched: gradients")


def test_ten_batched_sgd_steps_follow_the_same_trajectory(models, samples):
    torch_model, jax_model = models
    start = torch_weights.state_dict_from_model(torch_model)
    assert all(len(batch) == BATCH for batch in samples["batches"])
    length = max(len(n) for batch in samples["batches"] for n, _ in batch)  # one padded width, one compilation
    steps = [padded(batch, length) for batch in samples["batches"]]
    t_losses, j_losses = trajectories(trnn, jrnn, torch_model, jax_model, steps, BATCHED_LR)
    for i, (t_loss, j_loss) in enumerate(zip(t_losses, j_losses)):
        close(j_loss, t_loss, TRAJECTORY_LOSS_RTOL, "batched SGD: loss at each step", str(i + 1))
    t_params = torch_weights.state_dict_from_model(torch_model)
    j_params = jax_weights.state_dict_from_model(jax_model)
    within_dicts(j_params, t_params, TRAJECTORY_PARAM_ATOL, "batched SGD: parameters after 10 steps")
    moved = max(float(np.abs(t_params[k] - start[k]).max()) for k in start)
    assert moved > 10 * TRAJECTORY_PARAM_ATOL, f"parameters moved only {moved:.3g}: the test would prove nothing"


# ---------------------------------------------------------------- per-name == batched, in each framework
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_batch_loss_and_gradients_are_the_means_of_the_per_name_ones(framework, samples):
    model = INIT[framework](0)
    pairs = samples["mixed"]
    lengths = sorted({len(n) for n, _ in pairs})
    assert lengths[0] == 1 and len(lengths) >= 12, lengths
    per_name = [PER_NAME[framework](model, name, y) for name, y in pairs]
    mean_loss = float(np.mean([loss for loss, _ in per_name], dtype=np.float64))
    mean_grads = {k: np.mean([g[k] for _, g in per_name], axis=0, dtype=np.float64) for k in per_name[0][1]}
    loss, grads = BATCHED[framework](model, *padded(pairs))
    close(loss, mean_loss, LOSS_RTOL, f"{framework}: batch loss vs mean of per-name losses")
    close_dicts(grads, mean_grads, GRAD_RTOL, f"{framework}: batch gradients vs mean of per-name gradients")


@pytest.mark.parametrize("framework", slow_for(FRAMEWORKS, {"jax"}))  # JAX's (10 s) in the slow suite
def test_padding_never_leaks(framework, samples):
    """One name padded beyond its length: the per-name loss, whatever the padding holds."""
    model = INIT[framework](0)
    rng = np.random.default_rng(1)
    for name, y in samples["few"]:
        chars, lengths, labels = padded([(name, y)], len(name) + 5)
        loss, grads = BATCHED[framework](model, chars, lengths, labels)
        per_name_loss, per_name_grads = PER_NAME[framework](model, name, y)
        close(loss, per_name_loss, LOSS_RTOL, f"{framework}: padded batch of one vs per-name loss", repr(name))
        close_dicts(grads, per_name_grads, GRAD_RTOL, f"{framework}: padded batch of one vs per-name gradients", repr(name))
        garbage = chars.copy()
        garbage[:, len(name) :] = rng.normal(size=garbage[:, len(name) :].shape)
        garbage_loss, garbage_grads = BATCHED[framework](model, garbage, lengths, labels)
        assert garbage_loss == loss, f"{framework} {name!r}: the padding's content changed the loss"
        for key, g in grads.items():
            np.testing.assert_array_equal(garbage_grads[key], g, err_msg=f"{framework} {name!r}: padding changed {key}")


# ---------------------------------------------------------------- checks that share no code with the models
def numpy_source_loss(state_dict: dict[str, np.ndarray], name: str, y: int) -> float:
    """The source's loss in float64 numpy: the NLL of the label at the last character."""
    return float(-numpy_rnn_log_probs(state_dict, one_hot_name(name), HP.hidden_dim)[y])


def test_losses_equal_the_source_loop_in_float64_numpy(models, samples):
    torch_model, jax_model = models
    state_dict = torch_weights.state_dict_from_model(torch_model)
    pairs = samples["few"]
    expected = [numpy_source_loss(state_dict, name, y) for name, y in pairs]
    for (name, y), e in zip(pairs, expected):
        close(torch_per_name(torch_model, name, y)[0], e, LOSS_RTOL, "vs float64 numpy: per-name loss", f"torch {name!r}")
        close(jax_per_name(jax_model, name, y)[0], e, LOSS_RTOL, "vs float64 numpy: per-name loss", f"jax {name!r}")
    arrays = padded(pairs)
    close(torch_batched(torch_model, *arrays)[0], np.mean(expected), LOSS_RTOL, "vs float64 numpy: batch loss", "torch")
    close(jax_batched(jax_model, *arrays)[0], np.mean(expected), LOSS_RTOL, "vs float64 numpy: batch loss", "jax")


def test_sgd_is_the_source_manual_update(samples):
    """make_optimizer(model, 0.001).step() is the source's p.data.add_(-.001, p.grad.data), in today's spelling."""
    model = trnn.init_model(0)
    manual = copy.deepcopy(model)
    name, y = samples["few"][2]
    for m in (model, manual):
        trnn.loss_fn_per_name(m, torch.as_tensor(one_hot_name(name)), torch.tensor([y])).backward()
    for p in manual.parameters():
        p.data.add_(p.grad, alpha=-0.001)
    before = torch_weights.state_dict_from_model(model)
    trnn.make_optimizer(model, 0.001).step()
    after, expected = torch_weights.state_dict_from_model(model), torch_weights.state_dict_from_model(manual)
    for key in expected:
        assert not np.array_equal(after[key], before[key]), f"{key} did not move"
        np.testing.assert_array_equal(after[key], expected[key], err_msg=key)  # bit for bit
