"""The layers whose behaviour differs from Flax NNX's own.

The models build nnx.Linear, nnx.Conv, nnx.ConvTranspose and nnx.Dropout
directly (torch's initialisation from jax_impl/initializers.py). Here:
BatchNorm, because nnx.BatchNorm's running variance is not torch's;
max_pool2, nnx.max_pool's values with a gradient fast on XLA:CPU;
ConvTransposeByPhases, nnx.ConvTranspose computed as matmuls on CPU when
strided or fed one pixel, and wider than one channel; center_crop, the source's helper (twin of torch_impl/layers.py's).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class ConvTransposeByPhases(nnx.ConvTranspose):
    """nnx.ConvTranspose, computed on CPU as matmuls when strided or fed one pixel, with several output channels (same arguments,
    parameters, result).

    XLA:CPU runs a strided transposed convolution's kernel gradient as a
    convolution over the zero-dilated input, slowly (docs/benchmark.md#what-xlacpu-and-torch-do-here).
    Written by output phase instead (rows s*m + a only meet the kernel taps
    i = a + p mod s), each of the s*s phases is a sum of plain matmuls of
    shifted input windows, forward and backward, far faster on CPU
    (docs/results/earlier-cpu-runs.md#where-the-time-goes-on-the-zen-5). With one output channel (a decoder's
    last layer) each phase's matmuls are matrix-vector products and lax.conv_transpose is the faster
    (docs/cpu-performance.md#what-the-repository-closes); other backends keep lax.conv_transpose too.
    A 1x1 input (a latent vector, a DCGAN generator's first layer) is one product with every tap at once,
    whatever the stride: lax.conv_transpose would convolve the kernel over the zero-padded pixel.
    Takes a square kernel, equal strides and the explicit symmetric padding
    k - 1 - p of torch's ConvTranspose2d(padding=p).
    """

    def __call__(self, inputs: jax.Array) -> jax.Array:
        stride = self.strides[0] if isinstance(self.strides, (tuple, list)) else self.strides or 1  # nnx's default: None
        one_pixel = inputs.shape[-3:-1] == (1, 1)
        if jax.default_backend() != "cpu" or (stride == 1 and not one_pixel) or self.out_features == 1:
            return super().__call__(inputs)
        padding = self.kernel_size[0] - 1 - self.padding[0][0]  # back to torch's padding
        bias = self.bias[...] if self.bias is not None else None
        inputs, kernel, bias = self.promote_dtype((inputs, self.kernel[...], bias), dtype=self.dtype)  # as nnx.ConvTranspose
        y = conv_transpose_by_phases(inputs, kernel, stride, padding)  # the float32 accumulation (float64 stays float64)
        return y if bias is None else y + bias


def _phases(k: int, stride: int, padding: int, n_out: int) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Along one axis, per output phase a (outputs stride*m + a): (how many m, offset c, [(t, tap i)]).

    Output stride*m + a receives input m + c - t through the kernel tap i =
    stride*t + r (torch's orientation), r = (a + padding) mod stride.
    """
    phases = []
    for a in range(stride):
        r = (a + padding) % stride
        phases.append((len(range(a, n_out, stride)), (a + padding - r) // stride, [(t, stride * t + r) for t in range(-(-(k - r) // stride))]))
    return phases


def _window_padding(phases: list[tuple[int, int, list[tuple[int, int]]]], size: int) -> tuple[int, int]:
    """Zeros before and after an input axis of `size`, so that every window m + c - t of `phases` lies inside."""
    before = max(max(t - c for _, c, taps in phases for t, _ in taps), 0)
    after = max(max(n - 1 + c for n, c, _ in phases) - (size - 1), 0)
    return before, after


def conv_transpose_by_phases(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """torch's conv_transpose2d(stride, padding) of NHWC `x` with nnx.ConvTranspose's (kh, kw, in, out) kernel, as matmuls.

    The products accumulate in float32 at least, and return so (bfloat16 inputs under compute_in; float64 stays float64).
    """
    b, h, w, c_in = x.shape
    k, c_out = kernel.shape[0], kernel.shape[-1]
    taps = kernel[::-1, ::-1]  # nnx's kernel is torch's flipped in space
    accumulate = jnp.promote_types(x.dtype, jnp.float32)
    if h == w == 1:  # output pixel (i, j) is the input pixel through tap (i + padding, j + padding)
        return jnp.einsum("bc,ijcd->bijd", x[:, 0, 0], taps[padding : k - padding, padding : k - padding], preferred_element_type=accumulate)
    h_out, w_out = (h - 1) * stride - 2 * padding + k, (w - 1) * stride - 2 * padding + k
    rows, cols = _phases(k, stride, padding, h_out), _phases(k, stride, padding, w_out)
    (top, bottom), (left, right) = _window_padding(rows, h), _window_padding(cols, w)
    x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n_h, n_w = -(-h_out // stride), -(-w_out // stride)
    phase_rows = []
    for n_a, c_a, taps_a in rows:
        phase_row = []
        for n_b, c_b, taps_b in cols:
            y = sum(
                jnp.matmul(x[:, top + c_a - t : top + c_a - t + n_a, left + c_b - u : left + c_b - u + n_b, :].reshape(-1, c_in), taps[i, j],
                           preferred_element_type=accumulate)
                for t, i in taps_a
                for u, j in taps_b
            ).reshape(b, n_a, n_b, c_out)
            phase_row.append(jnp.pad(y, ((0, 0), (0, n_h - n_a), (0, n_w - n_b), (0, 0))))  # phases may differ by one row
        phase_rows.append(jnp.stack(phase_row, axis=3))  # (B, n_h, n_w, stride, C)
    out = jnp.stack(phase_rows, axis=2).reshape(b, n_h * stride, n_w * stride, c_out)  # interleave the phases
    return out[:, :h_out, :w_out, :]


def center_crop(x: jax.Array, height: int, width: int) -> jax.Array:
    """The centre height x width window of an NHWC array (the source's undefined CenterCrop)."""
    top, left = (x.shape[1] - height) // 2, (x.shape[2] - width) // 2
    return x[:, top : top + height, left : left + width, :]


class BatchNorm(nnx.Module):
    """Batch normalisation over the last (feature) axis computing what torch's BatchNorm1d/2d compute.

    Train mode normalises with the batch mean and the biased batch variance
    and updates the running statistics the torch way:
        running = (1 - momentum) * running + momentum * batch_statistic,
    with the *unbiased* batch variance (times n / (n - 1)) entering
    running_var, and counts the batches in `num_batches_tracked`. Eval mode
    normalises with the running statistics.

    Why not nnx.BatchNorm: it puts the biased variance into its running
    average and has no batch counter, so its eval-mode outputs (and the
    running_var a weight file carries) would drift from torch's; its momentum
    is also the complement of torch's (flax 0.9 = torch 0.1).

    `replicas` > 1 (set by a data-parallel step with per-replica statistics,
    jax_impl/distributed.py) normalises each of that many equal slices of the
    batch with its own statistics, as each process of torch's
    DistributedDataParallel does without SyncBatchNorm, and the running
    statistics follow the first slice's, as torch's (process 0's, which DDP
    broadcasts). Under the step's "data" sharding each slice is one device's.

    Like nnx.BatchNorm it switches mode through `use_running_average`, which
    `model.train()` / `model.eval()` (and `nnx.view`) set on every module that
    has the attribute. Its state is nnx.BatchStat, so nnx.value_and_grad,
    nnx.jit and jax_impl.training.CompiledStep carry the updated statistics out
    of a training step, and nnx.Optimizer(wrt=nnx.Param) never touches them.
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1, use_running_average: bool = False):
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jnp.int32))
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.use_running_average = use_running_average
        self.replicas = 1

    def __call__(self, x: jax.Array) -> jax.Array:
        wide = jnp.promote_types(x.dtype, jnp.float32)  # a bfloat16 input in float32, as torch's kernel computes it
        return self.normalize_any(x.astype(wide)).astype(x.dtype)

    def normalize_any(self, x: jax.Array) -> jax.Array:
        if self.use_running_average:
            return self.normalize(x, self.mean[...], self.var[...])
        if self.replicas > 1:  # each replica's slice on its own: (replicas, slice, ..., features)
            slices = x.reshape(self.replicas, -1, *x.shape[1:])
            axes = tuple(range(1, slices.ndim - 1))
            mean = slices.mean(axes, keepdims=True)
            var = jnp.square(slices - mean).mean(axes, keepdims=True)
            self.update_running_statistics(mean[0].reshape(-1), var[0].reshape(-1), slices[0].size // x.shape[-1])
            return self.normalize(slices, mean, var).reshape(x.shape)
        axes = tuple(range(x.ndim - 1))  # all but the features: batch (and height, width)
        mean = x.mean(axes)
        var = jnp.square(x - mean).mean(axes)  # biased (divides by n), as torch normalises
        self.update_running_statistics(mean, var, x.size // x.shape[-1])
        return self.normalize(x, mean, var)

    def normalize(self, x: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]

    def update_running_statistics(self, mean: jax.Array, var: jax.Array, n: int) -> None:
        """running = (1 - momentum) * running + momentum * batch statistic, the variance unbiased over the n values."""
        if n < 2:  # torch refuses too: no variance from one value
            raise ValueError(f"BatchNorm in train mode needs more than 1 value per channel, got {n}")  # per replica
        m = self.momentum
        self.mean[...] = jax.lax.stop_gradient((1 - m) * self.mean[...] + m * mean)
        self.var[...] = jax.lax.stop_gradient((1 - m) * self.var[...] + m * (var * (n / (n - 1))))
        self.num_batches_tracked[...] += 1

    def set_view(self, use_running_average: bool | None = None):
        """What nnx.view(model, use_running_average=...) calls, as on nnx.BatchNorm."""
        if use_running_average is not None:
            self.use_running_average = use_running_average


def max_pool2(x: jax.Array) -> jax.Array:
    """2x2 max-pooling with stride 2 of an NHWC array (even height and width), gradient to the first maximum.

    The same values and gradients as nnx.max_pool(x, (2, 2), strides=(2, 2))
    and torch's max_pool2d: where a window holds equal maxima (a flat
    background), the whole gradient goes to the first in row-major order, and
    a NaN wins. The four corners of the windows are compared elementwise, a
    later one kept only when strictly greater, so the gradient is a chain of
    selects that XLA fuses into one loop. nnx.max_pool's gradient
    (reduce_window, transposed to select_and_scatter) is slow on XLA:CPU, and
    an argmax with a gather was too (docs/cpu-performance.md). (A plain
    reshape-and-max would share the gradient among equal maxima: a different
    gradient, which the float64 parity test catches.)
    """
    b, h, w, c = x.shape
    windows = x.reshape(b, h // 2, 2, w // 2, 2, c)
    best = windows[:, :, 0, :, 0, :]
    for row, col in ((0, 1), (1, 0), (1, 1)):
        corner = windows[:, :, row, :, col, :]
        best = jnp.where((corner > best) | jnp.isnan(corner), corner, best)
    return best
