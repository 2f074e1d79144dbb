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
from dataclasses import dataclass
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


def resumed_flags(args: argparse.Namespace, progress: Progress, framework: str) -> dict[str, Any]:
    """The command's flags with those the user left out taken from the checkpoint's; a one-line error for any that differ."""
    where = f"--resume {args.resume}"
    if progress.framework != framework:
        raise UserError(f"{where}: a {progress.framework} run; resume it with python -m {progress.framework}_impl.train")
    if progress.args["arch"] != args.arch:
        raise UserError(f"{where}: a run of {progress.args['arch']}, not {args.arch}")
    flags = vars(args).copy()
    for flag in RESUMED_FLAGS:
        given, saved = flags[flag], progress.args[flag]
        if given is None:
            flags[flag] = Path(saved) if flag in ("data_dir", "test_dir", "init") and saved else saved
        elif (absolute(given) if isinstance(given, Path) else given) != saved:
            name = f"--{flag.replace('_', '-')}"
            raise UserError(f"{where}: the run was trained with {'no ' + name if saved is None else f'{name} {saved}'}, not {name} {given}")
    if args.out is not None and absolute(args.out) != absolute(args.resume):
        raise UserError(f"{where}: a resumed run writes to its own folder; --out {args.out} names another")
    flags["out"] = args.resume
    if args.epochs is None:
        flags["epochs"] = progress.args["epochs"]
    elif args.epochs < progress.epoch:
        raise UserError(f"{where}: the run has reached epoch {progress.epoch}; --epochs {args.epochs} is behind it")
    return flags


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


@dataclass(frozen=True)
class RunSettings:
    """A training run's settings, resolved once: the user's flags, the checkpoint's where resumed, else the architecture's defaults."""

    framework: str
    arch: str
    variant: str
    epochs: int
    batch_size: int
    lr: float
    seed: int
    precision: str
    device: str
    out: Path
    init: Path | None
    data_dir: Path | None
    test_dir: Path | None
    devices: int | None
    batchnorm: str
    resume: Path | None

    @property
    def name(self) -> str:
        """How the run is titled: the architecture (and variant) and the framework."""
        return f"{label(self.arch, self.variant)}, {self.framework}"

    def resume_record(self, task) -> dict[str, Any]:
        """What progress.json keeps of the run's flags, for a resume to check (shared/checkpoint.py RESUMED_FLAGS)."""
        return {"arch": self.arch, "epochs": self.epochs, "variant": self.variant, "batch_size": self.batch_size, "lr": self.lr,
                "seed": self.seed, "labels": task.config().get("labels"), "data_dir": absolute(self.data_dir),
                "test_dir": absolute(self.test_dir), "init": absolute(self.init), "devices": self.devices, "batchnorm": self.batchnorm,
                "precision": self.precision}


def run_settings(flags: dict[str, Any], task, framework: str) -> RunSettings:
    """The settings of a run of `task` from its flags (parsed, and filled in from a checkpoint where resumed)."""
    hp = task.hp
    epochs = hp.epochs if flags["epochs"] is None else flags["epochs"]
    out = flags["out"] or Path("runs") / f"{label(flags['arch'], task.variant).replace('/', '-')}-{framework}"
    return RunSettings(
        framework=framework, arch=flags["arch"], variant=task.variant, epochs=epochs, batch_size=flags["batch_size"] or hp.batch_size,
        lr=flags["lr"] or hp.lr, seed=flags["seed"] or 0, precision=flags["precision"] or PRECISIONS[0], device=flags["device"], out=out,
        init=flags["init"], data_dir=flags["data_dir"], test_dir=flags["test_dir"], devices=flags["devices"],
        batchnorm=flags["batchnorm"] or BATCHNORM_STATS[0], resume=flags["resume"],
    )


def train_main(argv: list[str] | None = None, *, backend_cls) -> dict:
    """The training command: flags -> settings, the framework's Backend, set_up, train (docs/adding-an-architecture.md#how-a-training-step-runs)."""
    began = time.perf_counter()
    framework = backend_cls.framework
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(framework).parse_args(argv)
    progress = read_progress(args.resume) if args.resume else None
    flags = resumed_flags(args, progress, framework) if progress else vars(args)
    if flags["variant"] is not None and flags["variant"] not in variants(args.arch):
        raise UserError(f"--variant {flags['variant']}: {args.arch} has {', '.join(variants(args.arch))}")
    task = TASKS[args.arch].load(flags["variant"], flags["data_dir"], flags["test_dir"], flags["labels"])
    run = run_settings(flags, task, framework)
    check_batch_size(task, run.arch, run.batch_size, run.epochs)
    distributed_flags = {k: flags[k] for k in ("coordinator", "num_processes", "process_id") if k in flags}
    check_data_parallel(run.arch, run.variant, task.fixed_batch_size, run.batch_size, (run.devices or 1) * distributed_flags.get("num_processes", 1))
    parallel = backend_cls.start_parallel(argv, run.devices, run.device, run.batchnorm, args.dist_timeout, **distributed_flags)
    if parallel is None:  # this process started the run's processes (torch --devices N), which trained and wrote it
        return json.loads((run.out / "metrics.json").read_text())
    check_data_parallel(run.arch, run.variant, task.fixed_batch_size, run.batch_size, parallel.replicas)
    if parallel.writer:
        prepare_out_dir(run.out)
    backend = backend_cls(run.arch, run.device, parallel, run.precision, variant=run.variant)
    try:
        return train(set_up(run, backend, task, progress, began))
    finally:
        backend.finish()


@dataclass
class Training:
    """A run set up to train: its settings, backend, task, model, optimizer, compiled step, and what it has written so far."""

    run: RunSettings
    backend: Any  # shared.contract.Backend
    task: Any  # shared.tasks.Task
    model: Any
    optimizer: Any
    step: Any  # shared.contract.CompiledStep
    inference: Inference
    config: dict  # metrics.json's "config"
    history: list[dict]  # one record per complete epoch
    first_epoch: int
    began: float  # when the command began (perf_counter)

    def say(self, *args, **kwargs) -> None:
        """Print, in the one process that speaks for a data-parallel run."""
        if self.backend.parallel.writer:
            print(*args, **kwargs)


def set_up(run: RunSettings, backend, task, progress: Progress | None, began: float) -> Training:
    """The model (from --init, or the checkpoint where resumed), its optimizer and compiled step; the run's config."""
    parallel = backend.parallel
    model = backend.init_model(run.seed, weights_path(run.out) if progress else run.init, expected=task.weights_spec(), **task.model_kwargs)
    config = {
        "arch": run.arch, "variant": run.variant, "framework": run.framework, "device": backend.device_name(),
        "epochs": run.epochs, "batch_size": run.batch_size, "lr": run.lr, "seed": run.seed,
        "data": task.source, "examples": {"train": task.n_train, "test": task.n_infer}, "init": str(run.init) if run.init else None,
        **task.config(),
        "replicas": parallel.replicas, "processes": parallel.processes, "batchnorm": parallel.batchnorm,
        "precision": backend.precision, "versions": backend.versions(),
    }
    if progress is not None:
        check_same_data(f"--resume {run.resume}", {"replicas": 1, **progress.config}, config, ["data", "examples", *task.config(), "replicas"])
    optimizer = backend.make_optimizer(model, run.lr)
    if progress is not None:
        backend.restore_state(model, optimizer, read_state(run.out), str(weights_path(run.out).parent))
    training = Training(run, backend, task, model, optimizer, backend.compile_step(model, optimizer), Inference(backend, model), config,
                        history=list(progress.history) if progress else [], first_epoch=progress.epoch + 1 if progress else 1, began=began)
    resumed = f", resumed after epoch {progress.epoch}" if progress else ""
    training.say(f"{label(run.arch, run.variant)} in {run.framework} on {config['device']}: {config['data']}{resumed}", file=sys.stderr)
    return training


def train(t: Training) -> dict:
    """The epochs left, each followed by evaluation, a checkpoint and the run's files (process 0 alone evaluates and writes)."""
    run, backend = t.run, t.backend
    if t.first_epoch > run.epochs:  # nothing to train (--epochs 0, or a finished run resumed): evaluate and write
        return evaluate_only(t)
    pictures = PictureSchedule(t.began)
    metrics: dict = {}
    with StopSignals() as signals:
        for epoch in range(t.first_epoch, run.epochs + 1):
            start = time.perf_counter()
            try:
                train_losses = run_epoch(t, epoch, signals)
            except StepStop as stop:
                raise stopped(stop, t, epoch) from None
            t.step.write_back()
            state = backend.checkpoint_state(t.model, t.optimizer)  # in every process: torch gathers each one's generator state
            if backend.parallel.writer:
                record = {"epoch": epoch, **train_losses, **t.task.evaluate(t.inference)}
                record["seconds"] = round(time.perf_counter() - start, 3)
                record["elapsed_s"] = round(time.perf_counter() - t.began, 3)  # since this command began (data, model, compilation)
                t.history.append(record)
                t.say(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
                progress = Progress(run.framework, epoch, run.resume_record(t.task), t.config, t.history)
                write_checkpoint(run.out, progress, lambda path: backend.save_model(t.model, path, t.task.weights_spec()), state)
                metrics = write_outputs(t, record, pictures)
            else:
                t.history.append({"epoch": epoch})
            if backend.any_process(signals.signum is not None) and epoch < run.epochs:  # arrived while evaluating or writing
                raise stopped(StepStop(0, signals.signum or signal.SIGTERM), t, epoch + 1)
    t.say(f"wrote {run.out / 'metrics.json'}, {run.out / 'weights.safetensors'}, {run.out / 'checkpoint'} and the pictures")
    return metrics


def evaluate_only(t: Training) -> dict:
    """A run with no epoch left: its last record (or the model evaluated, at epoch 0) and its files written again."""
    if not t.backend.parallel.writer:
        return {}
    final = t.history[-1] if t.history else {"epoch": 0, **t.task.evaluate(t.inference)}
    t.say(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in final.items()))
    return write_outputs(t, final)


def check_batch_size(task, arch: str, batch_size: int, epochs: int) -> None:
    """One-line errors for a batch size the model cannot train with."""
    if task.fixed_batch_size and batch_size != task.fixed_batch_size:
        raise UserError(f"--batch-size {batch_size}: {arch} --variant {task.variant} takes {task.fixed_batch_size} example per step")
    if batch_size < task.min_train_batch:
        raise UserError(f"--batch-size {batch_size}: {arch} trains on at least {task.min_train_batch} examples per step "
                        "(BatchNorm normalises over the batch)")
    if epochs and num_batches(task.n_train, batch_size) == 0:
        raise UserError(f"--batch-size {batch_size} is larger than the {task.n_train} training examples")


def stopped(stop: StepStop, t: Training, epoch: int) -> RunStopped:
    """The one-line message and exit status of a run that stopped early; the last complete epoch's checkpoint stays."""
    run, steps = t.run, num_batches(t.task.n_train, t.run.batch_size)
    at = f"epoch {epoch}, step {stop.step} of {steps}" if stop.step else f"the end of epoch {epoch - 1}"
    if t.history:
        kept = f"the checkpoint of epoch {t.history[-1]['epoch']} is in {run.out / 'checkpoint'}"
        hint = f"; resume with: python -m {run.framework}_impl.train {run.arch} --resume {run.out}"
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


def write_outputs(t: Training, last: dict, pictures: PictureSchedule | None = None) -> dict:
    """The run folder as a user reads it, after every epoch: weights, pictures (as `pictures` schedules them), metrics.json last."""
    out = t.run.out
    t.backend.save_model(t.model, out / "weights.safetensors", t.task.weights_spec())
    draw = lambda: t.task.save_pictures(out, t.inference, f"{t.run.name}, {last['epoch']} epochs")  # noqa: E731
    if pictures is None:
        draw()
    else:
        pictures.draw(draw, last["epoch"] == t.run.epochs)
    final = {k: v for k, v in last.items() if k not in TIMING_KEYS}
    metrics = {"config": t.config, "epochs": t.history, "final": final, "finished": final["epoch"] == t.run.epochs}
    write_json(out / "metrics.json", metrics)
    return metrics


def run_epoch(t: Training, epoch: int, signals: StopSignals) -> dict[str, float]:
    """One pass over the training set; returns the mean training loss (each of them, for a step with several).

    A step returns one loss, or a vector of `task.loss_names` (the GAN: the
    discriminator's and the generator's): {"train_loss": ...} or {"train_d_loss": ..., ...}.
    Each loss is checked once the next step is queued (so that the device
    never waits on the host); StepStop on a non-finite one, or on a signal.
    """
    run, task, backend = t.run, t.task, t.backend
    noise_rng = np.random.default_rng([run.seed, epoch, 1])
    losses: list[np.ndarray] = []
    pending = None
    total = num_batches(task.n_train, run.batch_size)
    bar = tqdm(
        batch_indices(task.n_train, run.batch_size, run.seed, epoch), total=total, disable=not backend.parallel.writer,
        desc=f"epoch {epoch}/{run.epochs}", leave=False, mininterval=0.5, file=sys.stderr,
    )
    for i, idx in enumerate(bar, start=1):
        loss = t.step(*backend.put_batch(task.train_batch(idx, noise_rng)))  # a data-parallel step takes its slice
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
