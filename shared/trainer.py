"""The training command, written once for both frameworks.

`python -m torch_impl.train ARCH` and `python -m jax_impl.train ARCH` parse
the same flags and run this loop with their framework's Backend (see
torch_impl/training.py and jax_impl/training.py, which define the same
methods). Batches and noise come from numpy, seeded by --seed, so both
frameworks see the same data in the same order.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from shared.contract import Inference
from shared.data import batch_indices, num_batches
from shared.errors import UserError
from shared.hparams import HPARAMS, label, variants
from shared.tasks import TASKS


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (exit status 2, no usage dump)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def build_parser(framework: str) -> ArgumentParser:
    p = ArgumentParser(
        prog=f"python -m {framework}_impl.train",
        description=f"Train an architecture in {framework}: MNIST (embedded 5k subset by default), or names for rnn.",
    )
    p.add_argument("arch", choices=sorted(TASKS), help="architecture to train")
    choices = "; ".join(f"{a}: {', '.join(v)}" for a, v in HPARAMS.items() if len(v) > 1)
    p.add_argument("--variant", help=f"the architecture's variant, the first by default ({choices})")
    p.add_argument("--epochs", type=non_negative_int, help="epochs (default: the architecture's); 0 only evaluates")
    p.add_argument("--batch-size", type=positive_int, help="minibatch size (default: the architecture's)")
    p.add_argument("--lr", type=positive_float, help="learning rate (default: the architecture's)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the initial weights, batch order and noise")
    p.add_argument("--data-dir", type=Path, help="folder of MNIST IDX files (train-*, t10k-*; MNIST/raw layout too); for rnn, of Language.txt files")
    p.add_argument("--test-dir", type=Path, help="folder whose t10k-* IDX files replace the test split")
    p.add_argument("--labels", type=positive_int, metavar="N",
                   help="aae --variant semisupervised: training images that keep their labels, N/10 per digit (default 100)")
    p.add_argument("--init", type=Path, metavar="WEIGHTS", help="start from this safetensors file")
    p.add_argument("--out", type=Path, help="output folder (default: runs/ARCH-FRAMEWORK)")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    return p


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temporary file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def prepare_out_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create the folder ({e.strerror})") from None
    return out


def train_main(argv: list[str] | None, backend_cls) -> dict:
    began = time.perf_counter()
    args = build_parser(backend_cls.framework).parse_args(argv)
    if args.variant is not None and args.variant not in variants(args.arch):
        raise UserError(f"--variant {args.variant}: {args.arch} has {', '.join(variants(args.arch))}")
    task = TASKS[args.arch].load(args.variant, args.data_dir, args.test_dir)
    if args.labels is not None:
        task.set_labels(args.labels)
    hp = task.hp
    epochs = hp.epochs if args.epochs is None else args.epochs
    batch_size = args.batch_size or hp.batch_size
    if task.fixed_batch_size and batch_size != task.fixed_batch_size:
        raise UserError(f"--batch-size {batch_size}: {args.arch} --variant {task.variant} takes {task.fixed_batch_size} example per step")
    lr = args.lr or hp.lr
    if epochs and num_batches(task.n_train, batch_size) == 0:
        raise UserError(f"--batch-size {batch_size} is larger than the {task.n_train} training examples")
    run_name = label(args.arch, task.variant).replace("/", "-")
    out = prepare_out_dir(args.out or Path("runs") / f"{run_name}-{backend_cls.framework}")

    backend = backend_cls(args.arch, args.device)
    model = backend.init_model(args.seed, args.init, **task.model_kwargs)
    inference = Inference(backend, model)
    config = {
        "arch": args.arch, "variant": task.variant, "framework": backend.framework, "device": backend.device_name(),
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": args.seed,
        "data": task.source, "init": str(args.init) if args.init else None,
        **task.config(),
        "versions": backend.versions(),
    }
    print(f"{label(args.arch, task.variant)} in {backend.framework} on {config['device']}: {config['data']}", file=sys.stderr)

    history = []
    if epochs:
        optimizer = backend.make_optimizer(model, lr)
        step = backend.compile_step(model, optimizer, task.train_step(backend.arch))
        steps_per_epoch = num_batches(task.n_train, batch_size)
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            train_losses = run_epoch(task, step, backend, args.seed, epoch, batch_size, steps_per_epoch, epochs)
            step.write_back()
            record = {"epoch": epoch, **train_losses, **task.evaluate(inference)}
            record["seconds"] = round(time.perf_counter() - start, 3)
            record["elapsed_s"] = round(time.perf_counter() - began, 3)  # since the command began (data, model, compilation)
            history.append(record)
            print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
    final = {**(history[-1] if history else task.evaluate(inference))}
    final.pop("seconds", None)
    final.pop("elapsed_s", None)
    if not history:
        print(" ".join(f"{k}={v:.4f}" for k, v in final.items()))

    backend.save_model(model, out / "weights.safetensors")
    pictures = task.save_pictures(out, inference, f"{label(args.arch, task.variant)}, {backend.framework}, {epochs} epochs")
    metrics = {"config": config, "epochs": history, "final": final}
    write_json(out / "metrics.json", metrics)
    print(f"wrote {out / 'metrics.json'}, {out / 'weights.safetensors'}, " + ", ".join(str(p) for p in pictures))
    return metrics


def run_epoch(task, step, backend, seed: int, epoch: int, batch_size: int, total: int, epochs: int) -> dict[str, float]:
    """One pass over the training set; returns the mean training loss (each of them, for a step with several).

    A step returns one loss, or a vector of `task.loss_names` (the GAN: the
    discriminator's and the generator's): {"train_loss": ...} or {"train_d_loss": ..., ...}.
    """
    noise_rng = np.random.default_rng([seed, epoch, 1])
    losses = []
    bar = tqdm(
        batch_indices(task.n_train, batch_size, seed, epoch), total=total,
        desc=f"epoch {epoch}/{epochs}", leave=False, mininterval=0.5, file=sys.stderr,
    )
    for i, idx in enumerate(bar):
        losses.append(step(*map(backend.to_device, task.train_batch(idx, noise_rng))))
        if i % 20 == 0:
            bar.set_postfix(loss=" ".join(f"{v:.3f}" for v in np.atleast_1d(backend.to_numpy(losses[-1]))))
    means = np.mean([np.atleast_1d(backend.to_numpy(loss)) for loss in losses], axis=0, dtype=np.float64)
    names = ["train_loss"] if len(means) == 1 else [f"train_{name}" for name in task.loss_names]
    return dict(zip(names, map(float, means), strict=True))
