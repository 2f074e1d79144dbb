"""torch.nn's default initialisation as Flax initializers, for nnx.Linear, nnx.Conv and nnx.ConvTranspose.

Flax's defaults (LeCun-normal kernels, zero biases) are not torch's; with
these a model trained from scratch in either framework starts from the same
distribution of weights (tests/test_initializers.py draws both and compares).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

# torch's kaiming_uniform_(a=sqrt(5)) for Linear and Conv2d weights: U(+-1/sqrt(fan_in)), fan_in = in_features (times the kernel area).
torch_kernel_init = nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")

# torch counts a ConvTranspose2d's fan_in over its weight's second axis (out_channels x kernel area): the fan_out of Flax's (kh, kw, in, out) kernel.
torch_transpose_kernel_init = nnx.initializers.variance_scaling(1 / 3, "fan_out", "uniform")


def torch_bias_init(fan_in: int) -> nnx.Initializer:
    """torch's bias initialisation, U(+-1/sqrt(fan_in)) with its weight's fan_in, which a Flax bias initializer (shown the bias's shape only) is given."""
    bound = 1 / math.sqrt(fan_in)

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init
