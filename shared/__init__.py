"""Framework-free code shared by torch_impl and jax_impl: data, metrics,
hyperparameters, weight files, pictures. Imports numpy, never torch or jax."""
