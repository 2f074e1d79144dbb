"""XLA's flags for the JAX side, without importing JAX (the benchmark's driver reads them too).

XLA reads XLA_FLAGS once, when JAX starts its backend. Importing jax_impl
sets the project's default where XLA_FLAGS is not set; the user's own flags,
or the benchmark's --xla-flags, always win (XLA_FLAGS="" gives XLA's own
defaults).

The default turns XLA:CPU's YNNPACK fusions off (jaxlib 0.10.2 turns them on).
Measured on a 2-core AMD EPYC Zen 3 VM, every architecture (docs/benchmark.md,
"XLA flags"): the CNN's training step 518 -> 191 ms and its inference 46 -> 24
ms, the AAEs' inference 0.5-0.7x, the VAE's 0.74x; no other training step
faster by more than the run-to-run noise, the RNN's slower (batched 1.1-1.35x,
per-name 1.1-1.2x). The loss agreement with torch is the same either way
(first steps within 7e-6), and the fusions have open wrong-result reports
(jax#39103, jax#40412, jax#39257; ../shared/FIELD-NOTES.md).
"""
from __future__ import annotations

import os

PROJECT_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type="  # empty value: no YNNPACK fusion


def default_xla_flags() -> str:
    """The flags a JAX process of this project runs with: XLA_FLAGS if set, else the project's."""
    return os.environ.get("XLA_FLAGS", PROJECT_XLA_FLAGS)


def apply_default_xla_flags() -> None:
    """Set XLA_FLAGS to the project's default where the environment does not say otherwise (before JAX's backend starts)."""
    os.environ.setdefault("XLA_FLAGS", PROJECT_XLA_FLAGS)
