"""PyTorch implementations, one module per architecture (twins of jax_impl/)."""
