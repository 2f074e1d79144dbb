"""How near the truth the CNN's float32 gradients are, with each of YNNPACK's fusion types turned off in XLA:CPU.

    python -m benchmarks.repro.ynn_precision          # from the repository root; about 4 minutes on 2 cores

For every setting of --xla_cpu_experimental_ynn_fusion_type (XLA's default, all off, and the default without one
type) it starts a process with that XLA_FLAGS, takes the CNN's loss gradient on 2 seeds x 2 batches of the
embedded MNIST in torch float32, JAX float32 and torch float64 (the truth), and prints the largest error of each
framework's float32 gradient against the float64 one, relative to each tensor's largest entry, over all tensors: once
on one CPU and once on all of them (the thread count changes how XLA:CPU splits its sums).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

SETTINGS = ["", "-reduce", "-individual_convolution", "-eltwise", "-dot", "off"]  # "" = XLA's default, "off" = none
SEEDS, BATCHES, BATCH = (0, 1), 2, 100


def flags(setting: str) -> str:
    value = "" if setting == "off" else setting
    return "" if setting == "" else f"--xla_cpu_experimental_ynn_fusion_type={value}"


def worst_errors() -> dict[str, float]:
    """{"torch": worst relative error, "jax": ...} of float32 gradients against float64, in this process's XLA_FLAGS."""
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx

    from jax_impl import cnn as jcnn
    from jax_impl import weights as jax_weights
    from shared.data import shuffled_mnist
    from torch_impl import cnn as tcnn
    from torch_impl import weights as torch_weights

    images, labels, _ = shuffled_mnist()  # the parity tests' batches
    worst = {"torch": 0.0, "jax": 0.0}
    for seed in SEEDS:
        torch_model = tcnn.init_model(seed, dropout=0.0)
        jax_model = jcnn.init_model(seed, dropout=0.0)
        jax_weights.load_state_dict(jax_model, torch_weights.state_dict_from_model(torch_model))
        exact = tcnn.init_model(seed, dropout=0.0).double()
        for b in range(BATCHES):
            x, y = images[b * BATCH:(b + 1) * BATCH], labels[b * BATCH:(b + 1) * BATCH]
            grads = {}
            for name, model, dtype in (("torch", torch_model, torch.float32), ("exact", exact, torch.float64)):
                model.zero_grad(set_to_none=True)
                tcnn.loss_fn(model, torch.as_tensor(x, dtype=dtype), torch.as_tensor(y)).backward()
                grads[name] = {k: p.grad.numpy().astype(np.float64) for k, p in model.named_parameters()}
            _, g = nnx.jit(nnx.value_and_grad(jcnn.loss_fn))(jax_model, jnp.asarray(x), jnp.asarray(y))
            grads["jax"] = {k: np.asarray(v, np.float64) for k, v in jax_weights.state_dict_from_grads(jax_model, g).items()}
            for k, truth in grads["exact"].items():
                scale = np.abs(truth).max()
                for name in worst:
                    worst[name] = max(worst[name], float(np.abs(grads[name][k] - truth).max() / scale))
    return worst


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(worst_errors()))
        return
    cpus = sorted(os.sched_getaffinity(0))
    counts = sorted({1, len(cpus)})
    print("CNN loss gradient, float32 against float64: worst entry / tensor max, on " + " and on ".join(f"{n} CPU{'s' * (n > 1)}" for n in counts))
    print(f"{'YNNPACK fusion types off':28s}" + "".join(f"{f'torch, {n} CPU':>16s}{f'JAX, {n} CPU':>14s}" for n in counts))
    for setting in SETTINGS:
        env = {**os.environ, "XLA_FLAGS": flags(setting), "TF_CPP_MIN_LOG_LEVEL": "2"}
        cells = []
        for n in counts:
            out = subprocess.run([sys.executable, "-m", "benchmarks.repro.ynn_precision", "--child"], env=env, capture_output=True, text=True,
                                 check=True, preexec_fn=lambda n=n: os.sched_setaffinity(0, cpus[:n])).stdout  # XLA and torch size their pools from it
            errors = json.loads(out.strip().splitlines()[-1])
            cells.append(f"{errors['torch']:16.2e}{errors['jax']:14.2e}")
        label = {"": "none (XLA's default)", "off": "all"}.get(setting, setting.lstrip("-"))
        print(f"{label:28s}" + "".join(cells))


if __name__ == "__main__":
    main()
