"""Parity tolerances, in one place, each with its reason.

Both frameworks compute in float32 with full-precision matmuls (TF32 off,
jax_default_matmul_precision="highest"). What remains is the order in
which the libraries sum float32 products (blocked matmul kernels, fused vs
unfused elementwise code, tree vs linear reductions): each sum of n terms
can differ by about n * 2^-24 ~ 6e-8 * n relative to its largest term.
"""

# Forward outputs, relative to the largest |entry| of the reference output:
# sums of up to 784 products give ~1e-6 in the worst case, so 1e-5 has margin.
FORWARD_RTOL = 1e-5

# Scalar losses, relative: a mean over the batch of per-image sums of 784
# terms; observed ~1e-7.
LOSS_RTOL = 1e-5

# Gradients, relative to the gradient tensor's largest |entry|: backward sums
# run over the batch (100) and the layer width (500/784).
GRAD_RTOL = 1e-5

# Parameters after 10 optimizer steps, absolute (the parameters moved by up to
# ~1e-2; observed differences ~1e-6, at most 8e-5 outside the outliers below).
TRAJECTORY_PARAM_ATOL = 1e-4

# ...except a rare few entries, where float32 rounding decides between two
# different steps and the two frameworks may take different ones:
# - Adam is ill-conditioned where a gradient entry is ~1e-8 (a near-cancelling
#   sum, e.g. over the few images in which a border pixel is on): its update
#   g / (sqrt(v) + 1e-8) is a step of ~lr whose size depends on the gradient's
#   last digits;
# - a ReLU whose pre-activation is within rounding of 0 on one example is on
#   in one framework and off in the other, and Adam, which rescales every
#   entry to a step of ~lr, turns that example's share of the unit's gradient
#   into a visible step difference for the unit's weights.
# Up to this fraction of all parameter entries may differ by more than
# TRAJECTORY_PARAM_ATOL (observed: 4 of 793,294 in the MLP VAE; 45 of 513,810
# in the MLP at lr 1e-3, up to 3.7e-4, where one ReLU switched); every entry is
# still held to one learning rate per step.
TRAJECTORY_OUTLIER_MAX_FRACTION = 1e-3

# Loss at each of the 10 steps, relative: the per-step drift of parameters
# above enters the loss only at first order.
TRAJECTORY_LOSS_RTOL = 1e-5

# The test metric computed by either framework from the same weights file
# (the issue asks for 1e-4 relative; the metric itself is computed in numpy
# float64 from float32 model outputs).
CROSS_FRAMEWORK_METRIC_RTOL = 1e-4

# --- BatchNorm CNN (tests/test_parity_cnn.py) ---------------------------------
# Gradients of the CNN's convolutional blocks (conv1, bn1, conv2, bn2, conv3,
# bn3), relative to the gradient's largest entry. Their BatchNorms average
# over batch x height x width (78,400 values per channel in bn1 and bn2 at
# batch 100), and the gradient flowing back through them, and then through
# each convolution's weight gradient, is a sum of as many nearly cancelling
# terms (a BatchNorm removes the batch mean from the gradient it passes on).
# Measured against a float64 torch computation on 4 batches x 2 seeds x 2
# directions: torch float32 is off by up to 1.0e-4, JAX float32 by up to
# 1.9e-4 (conv2.weight), and the two differ by up to 2.3e-4 (conv1.weight).
# The fully connected part (fc1, bn4, out) is held to GRAD_RTOL.
BATCHNORM_CONV_GRAD_RTOL = 1e-3

# 10 Adam steps of the CNN in float32 cannot be reproduced to the TRAJECTORY_*
# tolerances above by any two implementations, torch included: torch float32
# and torch float64 (the same code) end up to 5.0e-4 apart in the loss, 2.5%
# of the parameters' displacement and 2.0e-2 (relative to the largest entry)
# in the running statistics (4 seeds x 2 directions). Adam divides each
# gradient entry by its own running magnitude, so the 1e-4 rounding of the
# convolution gradients (above) becomes an O(lr) difference in the small
# entries, and it compounds from step to step. JAX vs torch measured the same
# way: up to 6.1e-4, 1.6% and 1.7e-2. Hence: the first steps, before the
# drift has grown, keep TRAJECTORY_LOSS_RTOL (3 to 7 steps held it; we check
# 3); all 10 get the bounds below, about 3x the worst measured; and the same
# 10 steps run in float64 in both frameworks must agree to
# TRAJECTORY_FLOAT64_RTOL, which shows the float32 drift is rounding and not
# a difference in what the two steps compute.
BATCHNORM_TRAJECTORY_STRICT_STEPS = 3
BATCHNORM_TRAJECTORY_LOSS_RTOL = 2e-3
BATCHNORM_TRAJECTORY_DISPLACEMENT_RTOL = 5e-2  # |params_jax - params_torch| / |params_torch - start|, L2 over all
BATCHNORM_TRAJECTORY_STATS_RTOL = 5e-2  # per running statistic, relative to its largest entry

# The CNN's 10 Adam steps in float64 (both frameworks), relative to the
# largest entry of each compared quantity: measured 1e-13 on the losses and
# 2e-9 on the parameters (Adam's division by tiny gradients again, at float64
# rounding).
TRAJECTORY_FLOAT64_RTOL = 1e-7
