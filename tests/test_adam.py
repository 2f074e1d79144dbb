"""torch.optim.Adam and optax.adam take the same steps, up to optax's float32 bias correction.

The Adam trajectory tolerances in tests/tolerances.py rest on this (the
AAE's most, with four to six optimizers a step): both follow Kingma and Ba's
Algorithm 1, but optax evaluates the bias corrections 1 - b1**t and
1 - b2**t in float32 (0.999 becomes 0.99900001, and b2**t is rounded again),
so 1 - b2**t comes out 7e-6 to 2e-5 (relative) too small and every JAX step
is 3e-6 to 1e-5 shorter than the exact one, in every entry at once; torch
computes the corrections in float64. The tests pin both against a float64
numpy Adam: torch's steps are the exact ones, optax's are the ones with its
own float32 corrections. If optax ever computes exact corrections, the
second test fails and the AAE's trajectory bounds can tighten
(AAE_TRAJECTORY_LOSS_RTOL, AAE_SEMI_*).
"""
from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8
STEPS = 3
# |update - float64 update| / lr, the scale of every Adam step: float32 moments
# and parameters (which start at 0, so they stay ~lr) against float64, ~1e-7.
STEP_TOL = 1e-6
# optax's shortfall at step 1: 1 - ((1 - 0.9) / (1 - 0.9f)) * sqrt((1 - 0.999f) / (1 - 0.999)) = 6.7e-6.
OPTAX_SHORTFALL_AT_LEAST = 5e-6


def exact_correction(beta: float, t: int) -> float:
    return 1 - beta**t  # float64, as torch


def optax_correction(beta: float, t: int) -> float:
    """optax's own 1 - beta**t: float32 (a weak-typed beta to the power of an int32 count, in a jit)."""
    return float(1 / optax.tree.bias_correction(jnp.float32(1), beta, jnp.asarray(t, jnp.int32)))


def numpy_adam_steps(grads: list[np.ndarray], correction: Callable[[float, int], float]) -> list[np.ndarray]:
    """Adam's updates in float64 (Algorithm 1, torch's eps placement), with the given bias corrections."""
    m, v, updates = 0.0, 0.0, []
    for t, g in enumerate(grads, start=1):
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        updates.append(-LR * (m / correction(B1, t)) / (np.sqrt(v / correction(B2, t)) + EPS))
    return updates


def torch_adam_steps(grads: list[np.ndarray], fused: bool) -> list[np.ndarray]:
    p = torch.nn.Parameter(torch.zeros(grads[0].shape))
    opt = torch.optim.Adam([p], lr=LR, betas=(B1, B2), eps=EPS, fused=fused)
    updates = []
    for g in grads:
        before = p.detach().double().clone()
        p.grad = torch.from_numpy(g.copy())
        opt.step()
        updates.append((p.detach().double() - before).numpy())
    return updates


def optax_adam_steps(grads: list[np.ndarray]) -> list[np.ndarray]:
    opt = optax.adam(LR, b1=B1, b2=B2, eps=EPS)
    p = jnp.zeros(grads[0].shape)
    state, updates = opt.init(p), []
    for g in grads:
        update, state = opt.update(jnp.asarray(g), state, p)
        p = optax.apply_updates(p, update)
        updates.append(np.asarray(update, dtype=np.float64))
    return updates


@pytest.fixture(scope="module")
def grads() -> list[np.ndarray]:
    """Three gradients of 1,000 entries spread over six orders of magnitude."""
    rng = np.random.default_rng(0)
    return [(rng.standard_normal(1000) * 10.0 ** rng.uniform(-4, 2, 1000)).astype(np.float32) for _ in range(STEPS)]


def step_errors(updates: list[np.ndarray], reference: list[np.ndarray]) -> np.ndarray:
    return np.array([np.max(np.abs(u - r)) / LR for u, r in zip(updates, reference)])


@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused"])
def test_torch_adam_takes_the_exact_steps(grads, fused: bool) -> None:
    errors = step_errors(torch_adam_steps(grads, fused), numpy_adam_steps(grads, exact_correction))
    assert errors.max() < STEP_TOL, f"torch Adam (fused={fused}) vs float64 Adam, per step: {errors}"


def test_optax_adam_steps_are_short_by_its_float32_bias_correction(grads) -> None:
    updates = optax_adam_steps(grads)
    as_optax = numpy_adam_steps(grads, optax_correction)
    errors = step_errors(updates, as_optax)
    assert errors.max() < STEP_TOL, f"optax.adam vs float64 Adam with optax's bias corrections, per step: {errors}"
    exact = numpy_adam_steps(grads, exact_correction)
    shortfall = 1 - np.median(np.abs(updates[0]) / np.abs(exact[0]))
    assert shortfall > OPTAX_SHORTFALL_AT_LEAST, (
        f"optax's first step is now only {shortfall:.1e} shorter than the exact one: it computes exact bias"
        " corrections, so the AAE trajectory tolerance in tests/tolerances.py can tighten"
    )
