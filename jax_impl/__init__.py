"""JAX implementations (Flax NNX + Optax), one module per architecture (twins of torch_impl/).

Importing the package gives XLA the project's flags where XLA_FLAGS is not set (jax_impl/xla.py).
"""
from jax_impl.xla import apply_default_xla_flags

apply_default_xla_flags()
