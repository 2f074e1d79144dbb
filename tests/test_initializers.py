"""JAX models start from torch's initial distribution (jax_impl/initializers.py), parameter by parameter.

Both frameworks' init_model draw every architecture and variant from the same
seeds; each parameter, under its torch name (jax_impl.weights gives the JAX
model's torch names), its draws pooled over the seeds, is held against the
torch model's: the same mean, spread and (where torch draws uniformly)
largest |w|. Independently of torch's draws, torch's default initialisation
U(+-1/sqrt(fan_in)) is held to its bound, fan_in as torch computes it
(torch.nn.init._calculate_fan_in_and_fan_out on torch's weight: for a
ConvTranspose2d out_channels x kernel area): reached, never passed. The
DCGAN's own initialisation: weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02).
"""
from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass

import numpy as np
import pytest
from torch import nn

from shared.hparams import HPARAMS, label

SEEDS = range(32)  # a 1-entry bias then has 32 draws; an initialisation takes 0.1 s at most after JAX's first (compiling) one


def model_kwargs(arch: str, variant: str) -> dict:
    """init_model's arguments for the variant: the variant itself where it builds another model (the RNN's two share one)."""
    takes_variant = "variant" in inspect.signature(importlib.import_module(f"torch_impl.{arch}").init_model).parameters
    return {"variant": variant} if takes_variant else {}


CONFIGS = list(dict.fromkeys((arch, variant if model_kwargs(arch, variant) else next(iter(HPARAMS[arch]))) for arch in HPARAMS for variant in HPARAMS[arch]))
IDS = [label(arch, variant) for arch, variant in CONFIGS]
DEFAULT_INIT_CONFIGS = [c for c in CONFIGS if c[0] != "gan"]  # the GAN draws DCGAN's initialisation instead


@dataclass
class Draws:
    """A tensor's entries pooled over the seeds: how many, their power sums (float64) and extremes."""

    n: int = 0
    sums: np.ndarray = None
    largest: float = 0.0  # max |entry|
    lo: float = np.inf
    hi: float = -np.inf

    def add(self, a: np.ndarray) -> None:
        a = a.astype(np.float64).ravel()
        squares = a * a
        sums = np.array([a.sum(), squares.sum(), squares @ a, squares @ squares])
        self.n, self.sums = self.n + a.size, sums if self.sums is None else self.sums + sums
        self.lo, self.hi = min(self.lo, float(a.min())), max(self.hi, float(a.max()))
        self.largest = max(-self.lo, self.hi)

    @property
    def mean(self) -> float:
        return self.sums[0] / self.n

    @property
    def std(self) -> float:
        return float(np.sqrt(max(self.sums[1] / self.n - self.mean**2, 0.0)))

    @property
    def excess_kurtosis(self) -> float:
        m1, m2, m3, m4 = self.sums / self.n
        central4 = m4 - 4 * m1 * m3 + 6 * m1**2 * m2 - 3 * m1**4
        return central4 / self.std**4 - 3  # 0 for a normal, -1.2 for a uniform


@functools.cache
def draws(framework: str, arch: str, variant: str) -> dict[str, Draws]:
    """Every parameter and buffer of the model under its torch name, pooled over SEEDS."""
    init_model = importlib.import_module(f"{framework}_impl.{arch}").init_model
    if framework == "torch":
        state_dict = lambda model: {k: v.numpy() for k, v in model.state_dict().items()}  # noqa: E731
    else:
        from jax_impl.weights import state_dict_from_model as state_dict
    pooled = {}
    for seed in SEEDS:
        for key, value in state_dict(init_model(seed, **model_kwargs(arch, variant))).items():
            pooled.setdefault(key, Draws()).add(value)
    return pooled


@functools.cache
def torch_default_bounds(arch: str, variant: str) -> dict[str, float]:
    """1/sqrt(fan_in) for every parameter torch draws from U(+-1/sqrt(fan_in)) by default, by name; fan_in as torch computes it."""
    model = importlib.import_module(f"torch_impl.{arch}").init_model(0, **model_kwargs(arch, variant))
    bounds = {}
    for prefix, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)  # the weight's, for its bias too (as reset_parameters)
            for name, _ in module.named_parameters():
                bounds[f"{prefix}.{name}"] = 1 / np.sqrt(fan_in)
        else:  # every other parameter is a BatchNorm's (initialised to constants)
            assert isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d) or not list(module.parameters(recurse=False)), prefix
    return bounds


def spread_rtol(n: int) -> float:
    """How far the standard deviations of two independent samples of n lie apart, relative: 6 standard errors.

    A sample standard deviation's relative standard error is sqrt((kurtosis - 1) / n) / 2: 0.45/sqrt(n) for a uniform,
    0.71/sqrt(n) for a normal; the difference of two, sqrt(2) times that.
    """
    return 6 * np.sqrt(2) * 0.71 / np.sqrt(n)


def reach_rtol(n: int) -> float:
    """How far below its bound the largest |w| of n uniform draws may lie: P(all n below (1 - t) bound) = (1 - t)^n < exp(-12) at t = 12/n."""
    return 12 / n


@pytest.mark.parametrize(("arch", "variant"), [pytest.param(a, v, marks=[pytest.mark.slow] * (a == "gan")) for a, v in CONFIGS], ids=IDS)
def test_every_jax_parameter_has_torchs_initial_distribution(arch, variant):  # the GAN's (11 s) in the slow suite
    """Parameter by parameter, pooled over the seeds: constants (BatchNorm's, the running statistics) equal; drawn ones with the
    same mean and standard deviation and, torch's uniform ones from 100 entries (3,200 draws), the same largest |w| within 1%."""
    torch_draws, jax_draws = draws("torch", arch, variant), draws("jax", arch, variant)
    assert jax_draws.keys() == torch_draws.keys()
    uniform = torch_default_bounds(arch, variant) if arch != "gan" else {}  # torch's layers, before the DCGAN's draws replace them
    for key, t in torch_draws.items():
        j = jax_draws[key]
        assert j.n == t.n, key
        if t.lo == t.hi:  # not drawn: BatchNorm's initial scale and bias, the running statistics and counters
            assert j.lo == j.hi == t.lo, f"{key}: from {j.lo} to {j.hi}, torch's all {t.lo}"
            continue
        spread = j.std / t.std - 1
        assert abs(spread) <= spread_rtol(t.n), f"{key}: standard deviation {j.std:.4g}, torch's {t.std:.4g} ({spread:+.1%})"
        assert abs(j.mean - t.mean) <= 6 * t.std * np.sqrt(2 / t.n), f"{key}: mean {j.mean:.3g}, torch's {t.mean:.3g}"
        if key in uniform and t.n >= 100 * len(SEEDS):
            extreme = j.largest / t.largest - 1
            assert abs(extreme) <= 0.01, f"{key}: largest |w| {j.largest:.4g}, torch's {t.largest:.4g} ({extreme:+.1%})"


@pytest.mark.parametrize(("arch", "variant"), DEFAULT_INIT_CONFIGS, ids=[label(*c) for c in DEFAULT_INIT_CONFIGS])
def test_default_initialisation_reaches_torchs_bound_and_stays_inside(arch, variant):
    """Every Linear, Conv and ConvTranspose parameter, in both frameworks: |w| <= 1/sqrt(fan_in) (torch's fan_in), and close to it."""
    for framework in ("torch", "jax"):
        drawn = draws(framework, arch, variant)
        for key, bound in torch_default_bounds(arch, variant).items():
            d = drawn[key]
            assert d.largest <= bound * (1 + 1e-6), f"{framework} {key}: |w| up to {d.largest:.5g} > 1/sqrt(fan_in) = {bound:.5g}"
            assert d.largest >= bound * (1 - reach_rtol(d.n)), f"{framework} {key}: |w| only up to {d.largest:.5g} in {d.n} draws, bound {bound:.5g}"


def test_the_gan_draws_dcgans_initialisation():
    """Convolution and transposed-convolution weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02) and biases 0, in both frameworks."""
    std = HPARAMS["gan"]["default"].init_std
    assert std == 0.02
    for framework in ("torch", "jax"):
        drawn = draws(framework, "gan", "default")
        scales = [k for k in drawn if k.endswith(".weight") and ".bn" in k]
        weights = [k for k in drawn if k.endswith(".weight") and k not in scales]
        assert len(weights) == 6 and len(scales) == 3, sorted(drawn)
        for key in weights + scales:
            d, centre = drawn[key], 1.0 if key in scales else 0.0
            assert abs(d.mean - centre) <= 6 * std / np.sqrt(d.n), f"{framework} {key}: mean {d.mean:.4g}"
            assert abs(d.std / std - 1) <= 6 * 0.71 / np.sqrt(d.n), f"{framework} {key}: standard deviation {d.std:.4g}"
            # a normal's, not a uniform's (-1.2): the sample excess kurtosis' standard error is sqrt(24/n)
            assert abs(d.excess_kurtosis) <= 6 * np.sqrt(24 / d.n), f"{framework} {key}: excess kurtosis {d.excess_kurtosis:.3g}"
        for key in (k for k in drawn if k.endswith(".bn1.bias") or k.endswith(".bn2.bias")):
            assert drawn[key].lo == drawn[key].hi == 0, f"{framework} {key}"
