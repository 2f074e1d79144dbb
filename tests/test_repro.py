"""The reproducers in benchmarks/repro/ measure what they say they measure."""
import pytest

from benchmarks.repro import ynn_precision
from tests.tolerances import BATCHNORM_CONV_GRAD_RTOL


@pytest.mark.slow
def test_both_float32_cnn_gradients_are_near_the_float64_one_under_the_tests_flags():
    """In this process's XLA_FLAGS (the suite runs with XLA's default) both frameworks' float32 gradients are within
    the CNN's conv-block bound of float64; with YNNPACK's reduce fusion off JAX's is 6.7e-2 away (docs/cpu-performance.md)."""
    errors = ynn_precision.worst_errors()
    assert errors["torch"] < BATCHNORM_CONV_GRAD_RTOL, errors
    assert errors["jax"] < BATCHNORM_CONV_GRAD_RTOL, errors
    assert errors["torch"] > 1e-7 and errors["jax"] > 1e-7, errors  # float32 really rounds: not the float64 model twice
