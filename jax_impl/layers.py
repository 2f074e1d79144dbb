"""Flax NNX layers initialised like their torch.nn counterparts.

Flax's defaults (LeCun-normal kernels, zero biases) differ from PyTorch's;
using torch's scheme in both trees means a model trained from scratch in
either framework starts from the same distribution of weights.
"""
from __future__ import annotations

import math

import jax
from flax import nnx


def torch_uniform(bound: float):
    """Initializer drawing from U(-bound, bound), torch's default for Linear and Conv."""

    def init(key, shape, dtype=jax.numpy.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def linear(in_features: int, out_features: int, *, rngs: nnx.Rngs, use_bias: bool = True) -> nnx.Linear:
    """nnx.Linear with torch.nn.Linear's init: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in))."""
    bound = 1.0 / math.sqrt(in_features)
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        kernel_init=torch_uniform(bound),
        bias_init=torch_uniform(bound),
        rngs=rngs,
    )
