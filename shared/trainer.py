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
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from shared.checkpoint import RESUMED_FLAGS, Progress, read_progress, read_state, weights_path, write_checkpoint
from shared.contract import PRECISIONS, Inference
from shared.data import batch_indices, num_batches
from shared.distributed import BATCHNORM_STATS, DEFAULT_TIMEOUT_S, check_data_parallel
from shared.errors import EXIT_DIVERGED, RunStopped, UserError
from shared.hparams import HPARAMS, label, variants
from shared.tasks import TASKS
from shared.weights import umasked

MAX_SEED = 2**63 - 1  # jax.random.key takes a signed 64-bit seed (torch up to 2^64 - 1): one range, one run in both
TIMING_KEYS = ("seconds", "elapsed_s")  # the only fields of an epoch's record that differ between two runs of one seed


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
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text}")
    return value


def seed_int(text: str) -> int:
    """A seed both frameworks accept: 0 to 2^63 - 1."""
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2^63 - 1 = {MAX_SEED}, got {text}")
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
    p.add_argument("--seed", type=seed_int, help="seed of the initial weights, batch order, noise and dropout, 0 to 2^63 - 1 (default 0)")
    p.add_argument("--data-dir", type=Path,
                   help="folder of MNIST IDX files (train-*, and t10k-* unless --test-dir; MNIST/raw layout too); for rnn, of Language.txt files")
    p.add_argument("--test-dir", type=Path, help="folder whose t10k-* IDX files are the test split (then --data-dir needs only train-*)")
    p.add_argument("--labels", type=positive_int, metavar="N",
                   help="aae --variant semisupervised: training images that keep their labels, N/10 per digit (default 100)")
    p.add_argument("--init", type=Path, metavar="WEIGHTS", help="start from this safetensors file")
    p.add_argument("--out", type=Path, help="output folder (default: runs/ARCH-FRAMEWORK)")
    p.add_argument("--resume", type=Path, metavar="DIR",
                   help="continue the run in DIR from its last checkpoint (DIR/checkpoint, written after each epoch), "
                        "bit for bit; its flags are the run's own, --epochs may go further")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="float32 (default), or bfloat16 mixed precision: float32 weights and optimizer state, the layers in bfloat16 "
                        "(docs/precision.md)")
    add_parallel_flags(p, framework)
    return p


def add_parallel_flags(p: argparse.ArgumentParser, framework: str) -> None:
    """The data-parallel flags (docs/distributed.md)."""
    local = ("processes, one per device, launched as torchrun --nproc-per-node N does; under torchrun, its own"
             if framework == "torch" else "local devices (on a CPU, XLA simulates them, one per core)")
    p.add_argument("--devices", type=positive_int, metavar="N",
                   help=f"train data-parallel on N devices of this machine: {local} (default 1); the global batch is --batch-size")
    p.add_argument("--batchnorm", choices=BATCHNORM_STATS,
                   help="data-parallel BatchNorm statistics: of the global batch (default, as one device computes them) or of each device's slice")
    p.add_argument("--dist-timeout", type=positive_float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help=f"how long a process waits for its peers to join, then a one-line error (default {DEFAULT_TIMEOUT_S:g})")
    if framework == "jax":
        p.add_argument("--coordinator", metavar="HOST:PORT", help="several processes (jax.distributed): process 0's address, the same in every one")
        p.add_argument("--num-processes", type=positive_int, default=1, help="several processes: how many (default 1)")
        p.add_argument("--process-id", type=non_negative_int, default=0, help="several processes: this one's index, 0 to N-1 (default 0)")


def strict_json(obj: Any) -> Any:
    """obj with every non-finite float as null: JSON has no NaN or infinity (json.dump writes them as bare NaN)."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write strict JSON atomically (temporary file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, umasked(0o666))
    with os.fdopen(fd, "w") as f:
        json.dump(strict_json(obj), f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def prepare_out_dir(out: Path) -> Path:
    """The --out folder, created and proven writable before any work is done."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"--out {out}: cannot write there ({e.strerror})") from None
    return out


def absolute(path: Path | None) -> str | None:
    return None if path is None else str(path.resolve())


def apply_resume(args: argparse.Namespace, progress: Progress, framework: str) -> None:
    """Fill the flags the user left out from the checkpoint's; refuse any that differ (a one-line error naming it)."""
    where = f"--resume {args.resume}"
    if progress.framework != framework:
        raise UserError(f"{where}: a {progress.framework} run; resume it with python -m {progress.framework}_impl.train")
    if progress.args["arch"] != args.arch:
        raise UserError(f"{where}: a run of {progress.args['arch']}, not {args.arch}")
    for flag in RESUMED_FLAGS:
        given, saved = getattr(args, flag), progress.args[flag]
        if given is None:
            setattr(args, flag, Path(saved) if flag in ("data_dir", "test_dir", "init") and saved else saved)
        elif (absolute(given) if isinstance(given, Path) else given) != saved:
            name = f"--{flag.replace('_', '-')}"
            raise UserError(f"{where}: the run was trained with {'no ' + name if saved is None else f'{name} {saved}'}, not {name} {given}")
    if args.out is not None and absolute(args.out) != absolute(args.resume):
        raise UserError(f"{where}: a resumed run writes to its own folder; --out {args.out} names another")
    args.out = args.resume
    if args.epochs is None:
        args.epochs = progress.args["epochs"]
    elif args.epochs < progress.epoch:
        raise UserError(f"{where}: the run has reached epoch {progress.epoch}; --epochs {args.epochs} is behind it")


def check_same_data(where: str, saved: dict, config: dict, keys: list[str]) -> None:
    for key in keys:
        if saved.get(key) != config.get(key):
            raise UserError(f"{where}: the run's {key} was {saved.get(key)!r}, now it is {config.get(key)!r}")


class StopSignals:
    """SIGINT and SIGTERM ask the run to stop after the current step (`signum` set); a second one stops it at once."""

    def __enter__(self) -> StopSignals:
        self.signum: int | None = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
            self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


class StepStop(Exception):
    """Raised by run_epoch: a signal arrived (`signum`) or a loss was not finite (`losses`), at step `step` of the epoch."""

    def __init__(self, step: int, signum: int | None = None, losses: np.ndarray | None = None):
        self.step, self.signum, self.losses = step, signum, losses


def train_main(argv: list[str] | None, backend_cls) -> dict:
    began = time.perf_counter()
    framework = backend_cls.framework
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(framework).parse_args(argv)
    progress = read_progress(args.resume) if args.resume else None
    if progress is not None:
        apply_resume(args, progress, framework)
    if args.variant is not None and args.variant not in variants(args.arch):
        raise UserError(f"--variant {args.variant}: {args.arch} has {', '.join(variants(args.arch))}")
    task = TASKS[args.arch].load(args.variant, args.data_dir, args.test_dir, args.labels)
    hp = task.hp
    epochs = hp.epochs if args.epochs is None else args.epochs
    batch_size = args.batch_size or hp.batch_size
    seed = args.seed or 0
    check_batch_size(task, args.arch, batch_size, epochs)
    batchnorm = args.batchnorm or BATCHNORM_STATS[0]
    distributed_flags = {k: getattr(args, k) for k in ("coordinator", "num_processes", "process_id") if hasattr(args, k)}
    check_data_parallel(args.arch, task.variant, task.fixed_batch_size, batch_size, (args.devices or 1) * distributed_flags.get("num_processes", 1))
    run_name = label(args.arch, task.variant).replace("/", "-")
    out = args.out or Path("runs") / f"{run_name}-{framework}"
    parallel = backend_cls.start_parallel(argv, args.devices, args.device, batchnorm, args.dist_timeout, **distributed_flags)
    if parallel is None:  # this process started the run's processes (torch --devices N), which trained and wrote it
        return json.loads((out / "metrics.json").read_text())
    check_data_parallel(args.arch, task.variant, task.fixed_batch_size, batch_size, parallel.replicas)
    lr = args.lr or hp.lr
    if parallel.writer:
        prepare_out_dir(out)

    args.epochs, args.batch_size, args.lr, args.seed = epochs, batch_size, lr, seed  # resolved
    args.precision = args.precision or PRECISIONS[0]
    backend = backend_cls(args.arch, args.device, parallel, args.precision)
    try:
        return train(args, backend, task, progress, out, began)
    finally:
        backend.finish()


def train(args: argparse.Namespace, backend, task, progress: Progress | None, out: Path, began: float) -> dict:
    """The run with its resolved flags, in each process of a data-parallel one (process 0 alone evaluates and writes)."""
    framework, parallel = backend.framework, backend.parallel
    epochs, batch_size, lr, seed = args.epochs, args.batch_size, args.lr, args.seed
    spec = task.weights_spec()
    start_from = weights_path(out) if progress else args.init
    model = backend.init_model(seed, start_from, expected=spec, **task.model_kwargs)
    backend.seed_dropout(seed)
    inference = Inference(backend, model)
    config = {
        "arch": args.arch, "variant": task.variant, "framework": framework, "device": backend.device_name(),
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
        "data": task.source, "examples": {"train": task.n_train, "test": task.n_infer}, "init": str(args.init) if args.init else None,
        **task.config(),
        "replicas": parallel.replicas, "processes": parallel.processes, "batchnorm": parallel.batchnorm,
        "precision": backend.precision, "versions": backend.versions(),
    }
    flags = {"arch": args.arch, "epochs": epochs, "variant": task.variant, "batch_size": batch_size, "lr": lr, "seed": seed,
             "labels": task.config().get("labels"), "data_dir": absolute(args.data_dir), "test_dir": absolute(args.test_dir),
             "init": absolute(args.init), "devices": args.devices, "batchnorm": parallel.batchnorm, "precision": backend.precision}
    if progress is not None:
        check_same_data(f"--resume {args.resume}", {"replicas": 1, **progress.config}, config, ["data", "examples", *task.config(), "replicas"])
    title = f"{label(args.arch, task.variant)}, {framework}"
    resumed = f", resumed after epoch {progress.epoch}" if progress else ""
    say = print if parallel.writer else lambda *a, **k: None  # one process speaks for all
    say(f"{label(args.arch, task.variant)} in {framework} on {config['device']}: {config['data']}{resumed}", file=sys.stderr)

    history = list(progress.history) if progress else []
    first = progress.epoch + 1 if progress else 1
    if first > epochs:  # nothing to train (--epochs 0, or a finished run resumed): evaluate and write
        if not parallel.writer:
            return {}
        final = history[-1] if history else {"epoch": 0, **task.evaluate(inference)}
        say(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in final.items()))
        return write_outputs(out, backend, model, spec, task, inference, config, history, final, f"{title}, {len(history)} epochs")

    optimizer = backend.make_optimizer(model, lr)
    if progress is not None:
        backend.restore_state(model, optimizer, read_state(out), str(weights_path(out).parent))
    step = backend.compile_step(model, optimizer, task.train_step(backend.arch), networks=task.networks)
    steps_per_epoch = num_batches(task.n_train, batch_size)
    pictures = PictureSchedule(began)
    metrics: dict = {}
    with StopSignals() as signals:
        for epoch in range(first, epochs + 1):
            start = time.perf_counter()
            try:
                train_losses = run_epoch(task, step, backend, seed, epoch, batch_size, steps_per_epoch, epochs, signals)
            except StepStop as stop:
                raise stopped(stop, framework, args.arch, out, epoch, steps_per_epoch, history) from None
            step.write_back()
            state = backend.checkpoint_state(model, optimizer)  # in every process: torch gathers each one's generator state
            if parallel.writer:
                record = {"epoch": epoch, **train_losses, **task.evaluate(inference)}
                record["seconds"] = round(time.perf_counter() - start, 3)
                record["elapsed_s"] = round(time.perf_counter() - began, 3)  # since this command began (data, model, compilation)
                history.append(record)
                say(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
                write_checkpoint(out, Progress(framework, epoch, flags, config, history), lambda path: backend.save_model(model, path, spec), state)
                metrics = write_outputs(out, backend, model, spec, task, inference, config, history, record, f"{title}, {epoch} epochs", pictures)
            else:
                history.append({"epoch": epoch})
            if backend.any_process(signals.signum is not None) and epoch < epochs:  # arrived while evaluating or writing
                raise stopped(StepStop(0, signals.signum or signal.SIGTERM), framework, args.arch, out, epoch + 1, steps_per_epoch, history)
    say(f"wrote {out / 'metrics.json'}, {out / 'weights.safetensors'}, {out / 'checkpoint'} and the pictures")
    return metrics


def check_batch_size(task, arch: str, batch_size: int, epochs: int) -> None:
    """One-line errors for a batch size the model cannot train with."""
    if task.fixed_batch_size and batch_size != task.fixed_batch_size:
        raise UserError(f"--batch-size {batch_size}: {arch} --variant {task.variant} takes {task.fixed_batch_size} example per step")
    if batch_size < task.min_train_batch:
        raise UserError(f"--batch-size {batch_size}: {arch} trains on at least {task.min_train_batch} examples per step "
                        "(BatchNorm normalises over the batch)")
    if epochs and num_batches(task.n_train, batch_size) == 0:
        raise UserError(f"--batch-size {batch_size} is larger than the {task.n_train} training examples")


def stopped(stop: StepStop, framework: str, arch: str, out: Path, epoch: int, steps: int, history: list) -> RunStopped:
    """The one-line message and exit status of a run that stopped early; the last complete epoch's checkpoint stays."""
    at = f"epoch {epoch}, step {stop.step} of {steps}" if stop.step else f"the end of epoch {epoch - 1}"
    if history:
        kept = f"the checkpoint of epoch {history[-1]['epoch']} is in {out / 'checkpoint'}"
        hint = f"; resume with: python -m {framework}_impl.train {arch} --resume {out}"
    else:
        kept, hint = "no epoch was complete, nothing was written", ""
    if stop.signum is not None:
        name = signal.Signals(stop.signum).name
        return RunStopped(f"stopped by {name} at {at}; {kept}{hint}", 128 + stop.signum)
    losses = " ".join(f"{v:g}" for v in np.atleast_1d(stop.losses))
    return RunStopped(f"the training loss is not finite at {at} (loss {losses}); {kept} (try a smaller --lr)", EXIT_DIVERGED)


class PictureSchedule:
    """Pictures after an epoch while drawing them has taken at most 10% of the run's time; always after the last epoch.

    Drawn after every epoch, the pictures can take longer than a short epoch (docs/training.md, "What a run writes").
    """

    SHARE = 0.1

    def __init__(self, began: float):
        self.began, self.drawing_s = began, 0.0

    def draw(self, draw: Callable[[], object], last: bool) -> None:
        if last or self.drawing_s <= self.SHARE * (time.perf_counter() - self.began):
            start = time.perf_counter()
            draw()
            self.drawing_s += time.perf_counter() - start


def write_outputs(out: Path, backend, model, spec, task, inference, config: dict, history: list, last: dict, title: str,
                  pictures: PictureSchedule | None = None) -> dict:
    """The run folder as a user reads it, after every epoch: weights, pictures (as `pictures` schedules them), metrics.json last."""
    backend.save_model(model, out / "weights.safetensors", spec)
    draw = lambda: task.save_pictures(out, inference, title)  # noqa: E731
    if pictures is None:
        draw()
    else:
        pictures.draw(draw, last["epoch"] == config["epochs"])
    final = {k: v for k, v in last.items() if k not in TIMING_KEYS}
    metrics = {"config": config, "epochs": history, "final": final, "finished": final["epoch"] == config["epochs"]}
    write_json(out / "metrics.json", metrics)
    return metrics


def run_epoch(task, step, backend, seed: int, epoch: int, batch_size: int, total: int, epochs: int, signals: StopSignals) -> dict[str, float]:
    """One pass over the training set; returns the mean training loss (each of them, for a step with several).

    A step returns one loss, or a vector of `task.loss_names` (the GAN: the
    discriminator's and the generator's): {"train_loss": ...} or {"train_d_loss": ..., ...}.
    Each loss is checked once the next step is queued (so that the device
    never waits on the host); StepStop on a non-finite one, or on a signal.
    """
    noise_rng = np.random.default_rng([seed, epoch, 1])
    losses: list[np.ndarray] = []
    pending = None
    bar = tqdm(
        batch_indices(task.n_train, batch_size, seed, epoch), total=total, disable=not backend.parallel.writer,
        desc=f"epoch {epoch}/{epochs}", leave=False, mininterval=0.5, file=sys.stderr,
    )
    for i, idx in enumerate(bar, start=1):
        loss = step(*backend.put_batch(task.train_batch(idx, noise_rng)))  # a data-parallel step takes its slice
        if pending is not None:
            check_finite(losses, backend.to_numpy(pending), i - 1)
        pending = loss
        if backend.any_process(signals.signum is not None):  # every process of a data-parallel run stops after the same step
            raise StepStop(i, signum=signals.signum or signal.SIGTERM)
        if i % 20 == 1 and losses:
            bar.set_postfix(loss=" ".join(f"{v:.3f}" for v in losses[-1]))
    check_finite(losses, backend.to_numpy(pending), total)
    means = np.mean(losses, axis=0, dtype=np.float64)
    names = ["train_loss"] if len(means) == 1 else [f"train_{name}" for name in task.loss_names]
    return dict(zip(names, map(float, means), strict=True))


def check_finite(losses: list[np.ndarray], loss: np.ndarray, step: int) -> None:
    """Append the step's loss(es), or raise StepStop if one is NaN or infinite."""
    loss = np.atleast_1d(loss)
    if not np.isfinite(loss).all():
        raise StepStop(step, losses=loss)
    losses.append(loss)
