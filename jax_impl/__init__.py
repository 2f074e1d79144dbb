"""JAX implementations (Flax NNX + Optax), one module per architecture (twins of torch_impl/)."""
