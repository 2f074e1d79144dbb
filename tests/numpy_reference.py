"""Float64 numpy versions of the layers and models the tests check both frameworks against.

They share no code with either framework: torch's NCHW / OIHW conventions,
written out with numpy, reading torch state_dict names (a weights file).
"""
from __future__ import annotations

import numpy as np

from shared.hparams import VAE


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


# ---------------------------------------------------------------- whole models, from a state_dict
def numpy_autoencoder_logits(state_dict: dict[str, np.ndarray], x: np.ndarray, variant: str) -> np.ndarray:
    """Either autoencoder in float64 numpy, from a torch state_dict."""
    p = {k: v.astype(np.float64) for k, v in state_dict.items()}

    def relu(a):
        return np.maximum(a, 0.0)

    if variant == "mlp":
        a = x.astype(np.float64)
        for name in ("encoder1", "encoder2", "encoder3", "decoder1", "decoder2"):  # ReLU after the code too
            a = relu(a @ p[f"{name}.weight"].T + p[f"{name}.bias"])
        return a @ p["decoder3.weight"].T + p["decoder3.bias"]

    def max_pool(a):  # 2x2, stride 2
        b, c, h, w = a.shape
        return a.reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))

    a = x.astype(np.float64).reshape(-1, 1, 28, 28)
    a = max_pool(relu(numpy_conv2d(a, p["conv1.weight"], p["conv1.bias"], padding=1)))
    a = max_pool(relu(numpy_conv2d(a, p["conv2.weight"], p["conv2.bias"], padding=1)))
    a = relu(numpy_conv_transpose2d(a, p["deconv1.weight"], p["deconv1.bias"], stride=2))
    assert a.shape[2:] == (15, 15)
    a = numpy_conv_transpose2d(a, p["deconv2.weight"], p["deconv2.bias"], stride=2, padding=1)
    assert a.shape[2:] == (29, 29)
    return a[:, 0, 0:28, 0:28].reshape(len(a), -1)  # the centre 28x28 of 29x29: (29 - 28) // 2 = 0 from the top left


def numpy_bce(logits: np.ndarray, x: np.ndarray) -> float:
    """The source's nn.BCELoss() on the Sigmoid output, in float64: mean over the batch and the pixels."""
    p = 1 / (1 + np.exp(-logits))
    return float(-np.mean(x * np.log(p) + (1 - x) * np.log(1 - p)))


def numpy_vae(state_dict: dict[str, np.ndarray], x: np.ndarray, eps: np.ndarray, batch_statistics: bool = False, z=None):
    """The VAE in float64 numpy, from a torch state_dict: (logits, mean, logvar, running statistics after the pass).

    Eval mode, or train mode with `batch_statistics`, where the running
    statistics move the torch way (momentum 0.1, unbiased variance). With
    `z`, the decoder decodes z rather than mean + std * eps (sampling).
    """
    p = {k: v.astype(np.float64) for k, v in state_dict.items()}
    running = {}

    def batchnorm(a, name):  # a is (B, C, H, W)
        w, b = p[f"{name}.weight"], p[f"{name}.bias"]
        if not batch_statistics:
            return numpy_batchnorm(a, w, b, p[f"{name}.running_mean"], p[f"{name}.running_var"], VAE.batchnorm_eps)
        n = a.size // a.shape[1]
        m = VAE.batchnorm_momentum
        running[f"{name}.running_mean"] = (1 - m) * p[f"{name}.running_mean"] + m * a.mean((0, 2, 3))
        running[f"{name}.running_var"] = (1 - m) * p[f"{name}.running_var"] + m * a.var((0, 2, 3)) * n / (n - 1)
        return numpy_batchnorm(a, w, b, eps=VAE.batchnorm_eps)

    def leaky_relu(a):
        return np.where(a > 0, a, VAE.leaky_relu_slope * a)

    a = batchnorm(x.astype(np.float64).reshape(-1, 1, 28, 28), "input_bn")
    a = leaky_relu(batchnorm(numpy_conv2d(a, p["conv1.weight"], p["conv1.bias"], stride=2, padding=1), "bn1"))
    a = leaky_relu(batchnorm(numpy_conv2d(a, p["conv2.weight"], p["conv2.bias"], stride=2, padding=1), "bn2"))
    h = a.reshape(len(a), -1)  # (C, H, W) order
    mean = h @ p["mean.weight"].T + p["mean.bias"]
    logvar = h @ p["logvar.weight"].T + p["logvar.bias"]
    if z is None:
        z = mean + np.sqrt(np.exp(logvar)) * eps  # standard deviation = sqrt(variance)
    a = (z @ p["develop.weight"].T + p["develop.bias"]).reshape(-1, 64, 7, 7)
    a = np.maximum(batchnorm(numpy_conv_transpose2d(a, p["deconv1.weight"], p["deconv1.bias"], stride=2), "bn3"), 0.0)
    a = numpy_conv_transpose2d(a, p["deconv2.weight"], p["deconv2.bias"], stride=2, padding=1)
    assert a.shape[1:] == (1, 29, 29)
    logits = a[:, 0, 0:28, 0:28].reshape(len(a), -1)  # the centre 28x28 of 29x29: (29 - 28) // 2 = 0
    return logits, mean, logvar, running


def numpy_vae_mlp(state_dict: dict[str, np.ndarray], x: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Flux-style MLP VAE in float64 numpy, from a torch state_dict: (decoder logits at mu + sigma * eps, mu, log sigma)."""
    sd = {k: v.astype(np.float64) for k, v in state_dict.items()}

    def dense(name, a):
        return a @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    h = np.tanh(dense("encoder.hidden", np.asarray(x, np.float64)))
    mu, logsigma = dense("encoder.mu", h), dense("encoder.logsigma", h)
    z = mu + np.exp(logsigma) * eps
    return dense("decoder.out", np.tanh(dense("decoder.hidden", z))), mu, logsigma


def numpy_neg_elbo(logits: np.ndarray, mean: np.ndarray, logvar: np.ndarray, x: np.ndarray) -> dict[str, float]:
    """-ELBO in nats per image, averaged, with its parts: -sum(x log p + (1 - x) log(1 - p)) + KL, p = sigmoid(logits).

    The KL of N(mean, exp(logvar)) to N(0, I); a log-sigma posterior passes logvar = 2 log sigma.
    """
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    log_lik = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=1)
    kl = 0.5 * np.sum(np.exp(logvar) + np.square(mean) - 1 - logvar, axis=1)
    return {"neg_elbo": float(np.mean(kl - log_lik)), "neg_log_likelihood": float(-np.mean(log_lik)), "kl": float(np.mean(kl))}


def numpy_rnn_log_probs(state_dict: dict[str, np.ndarray], chars: np.ndarray, hidden_dim: int) -> np.ndarray:
    """The source's loop over one name (L, 57) in float64 numpy: log_softmax(out_fc(combined)) at the last character.

    Each step: combined = concat(char, hidden), hidden = hid_fc(combined).
    """
    sd = {k: v.astype(np.float64) for k, v in state_dict.items()}
    hidden = np.zeros(hidden_dim)
    for char in np.asarray(chars, np.float64):
        combined = np.concatenate([char, hidden])
        out = sd["out_fc.weight"] @ combined + sd["out_fc.bias"]
        hidden = sd["hid_fc.weight"] @ combined + sd["hid_fc.bias"]
    return out - out.max() - np.log(np.sum(np.exp(out - out.max())))
