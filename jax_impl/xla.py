"""XLA's flags for the JAX side, without importing JAX (the benchmark's driver reads them too).

XLA reads XLA_FLAGS once, when JAX starts its backend. Importing jax_impl
sets the project's default where XLA_FLAGS is not set; the user's own flags,
or the benchmark's --xla-flags, always win (XLA_FLAGS="" gives XLA's own
defaults).

The default is XLA's own, YNNPACK fusions on, decided from a measurement of
every architecture with both settings on a 2-core AMD EPYC Zen 3 VM
(docs/benchmark.md, "XLA flags"). Off is faster where JAX is slowest (the
CNN's training step 518 -> 191 ms, most inference steps 0.5-0.8x; the RNN's
training 1.2-1.35x slower), and the benchmark's first-step losses agree with
torch's either way. But the parity tests' float32 bounds, measured with the
fusions on, fail with them off by 2-100x: XLA's own convolution gradients and
reductions then round more (the CNN's conv1.weight gradient 2.4e-2 from
torch's, relative, where the fusions give 2.3e-4; BatchNorm running means
2.4e-5). A reference whose point is that the two frameworks compute the same
thing keeps the closer arithmetic by default; --xla-flags (benchmark) or
XLA_FLAGS turn the fusions off where speed matters more. The fusions'
open wrong-result reports (jax#39103, jax#40412, jax#39257;
../shared/FIELD-NOTES.md) did not show here: every benchmark row agrees.
"""
from __future__ import annotations

import os

PROJECT_XLA_FLAGS = ""  # XLA's own defaults; "--xla_cpu_experimental_ynn_fusion_type=" turns the YNNPACK fusions off


def default_xla_flags() -> str:
    """The flags a JAX process of this project runs with: XLA_FLAGS if set, else the project's."""
    return os.environ.get("XLA_FLAGS", PROJECT_XLA_FLAGS)


def apply_default_xla_flags() -> None:
    """Set XLA_FLAGS to the project's default where the environment does not say otherwise (before JAX's backend starts)."""
    os.environ.setdefault("XLA_FLAGS", PROJECT_XLA_FLAGS)
