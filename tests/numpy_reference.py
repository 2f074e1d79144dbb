"""Float64 numpy versions of the layers the parity tests check both frameworks against.

They share no code with either framework: torch's NCHW / OIHW conventions,
written out with numpy.
"""
from __future__ import annotations

import numpy as np


def numpy_conv2d(a: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride: int = 1, padding: int = 0):
    """torch.nn.functional.conv2d in float64 numpy: NCHW input, OIHW weight, by im2col."""
    out_ch, in_ch, kh, kw = weight.shape
    a = np.pad(a, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    h, w = (a.shape[2] - kh) // stride + 1, (a.shape[3] - kw) // stride + 1
    cols = np.stack(
        [a[:, :, i : i + stride * (h - 1) + 1 : stride, j : j + stride * (w - 1) + 1 : stride] for i in range(kh) for j in range(kw)],
        axis=2,
    )  # (B, C, kh*kw, h, w): the receptive field of every output position
    out = np.einsum("bckhw,ock->bohw", cols, weight.reshape(out_ch, in_ch, kh * kw))
    return out if bias is None else out + bias[None, :, None, None]


def numpy_conv_transpose2d(a: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride: int = 1, padding: int = 0):
    """torch.nn.functional.conv_transpose2d in float64 numpy: NCHW input, (in, out, kh, kw) weight.

    By its definition: input pixel (i, j) adds weight[c, :, ki, kj] * a[:, c, i, j]
    to output pixel (i * stride + ki - padding, j * stride + kj - padding).
    """
    in_ch, out_ch, kh, kw = weight.shape
    b, _, h, w = a.shape
    full = np.zeros((b, out_ch, (h - 1) * stride + kh, (w - 1) * stride + kw))
    for ki in range(kh):
        for kj in range(kw):
            contribution = np.einsum("bchw,co->bohw", a, weight[:, :, ki, kj])
            full[:, :, ki : ki + stride * (h - 1) + 1 : stride, kj : kj + stride * (w - 1) + 1 : stride] += contribution
    out = full[:, :, padding : full.shape[2] - padding, padding : full.shape[3] - padding]
    return out if bias is None else out + bias[None, :, None, None]


def numpy_batchnorm(a: np.ndarray, weight, bias, mean=None, var=None, eps: float = 1e-5) -> np.ndarray:
    """BatchNorm of (B, C) or (B, C, H, W): with the given running mean and var, or batch statistics (biased var)."""
    shape = (1, -1) + (1,) * (a.ndim - 2)
    if mean is None:
        axes = (0,) + tuple(range(2, a.ndim))
        mean, var = a.mean(axes), a.var(axes)
    return (a - np.reshape(mean, shape)) / np.sqrt(np.reshape(var, shape) + eps) * np.reshape(weight, shape) + np.reshape(bias, shape)
