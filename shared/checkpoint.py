"""Per-epoch checkpoints of a training run: written atomically, read back with every check a resume needs.

`RUN/checkpoint/` holds
- `weights.safetensors`: the model, in the weights format both frameworks read (shared/weights.py);
- `state.safetensors`: the rest of what the next step depends on, in the framework's own terms
  (Backend.checkpoint_state: every optimizer's state, the dropout generator's or keys' state);
- `progress.json`, written last: the epoch reached, the metrics history, the run's resolved flags and
  its config. A folder without it is half-written and refused.

The folder is written as `RUN/.checkpoint-XXXX` and renamed into place; the
one it replaces is first renamed to `RUN/.checkpoint-old`, then removed, so
that at every instant one complete checkpoint exists under one of the two
names (read_progress looks at both).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import UserError
from shared.weights import FORMAT, FORMAT_VERSION, StateDict, WeightsError, load_weights, save_weights, umasked

FOLDER, OLD = "checkpoint", ".checkpoint-old"
WEIGHTS, STATE, PROGRESS = "weights.safetensors", "state.safetensors", "progress.json"
RESUMED_FLAGS = ("variant", "batch_size", "lr", "seed", "labels", "data_dir", "test_dir", "init", "devices", "batchnorm",
                 "precision")  # a resume must find these unchanged
FLAGS_SINCE = {"devices": None, "batchnorm": "global", "precision": "float32"}  # flags added after format version 1 began, as a checkpoint without them ran


@dataclass
class Progress:
    """What progress.json holds."""

    framework: str
    epoch: int  # the last complete epoch
    args: dict[str, Any]  # the run's resolved flags that a resume must find unchanged (resume_args)
    config: dict[str, Any]  # metrics.json's config, data source included
    history: list[dict[str, Any]]  # one record per epoch, as metrics.json's "epochs"


def write_checkpoint(run_dir: Path, progress: Progress, save_weights_to, state: StateDict) -> Path:
    """Write RUN/checkpoint/ atomically; `save_weights_to(path)` writes the model's weights file."""
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".checkpoint-"))
    try:
        tmp.chmod(umasked(0o777))
        save_weights_to(tmp / WEIGHTS)
        save_weights(tmp / STATE, state, {"format": FORMAT, "format_version": str(FORMAT_VERSION), "framework": progress.framework})
        (tmp / PROGRESS).write_text(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **progress.__dict__}, indent=1) + "\n")
        final, old = run_dir / FOLDER, run_dir / OLD
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        for stale in run_dir.glob(".checkpoint-*"):  # this one's predecessor, and any a killed run left half-written
            shutil.rmtree(stale, ignore_errors=True)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def checkpoint_dir(run_dir: Path) -> Path:
    """RUN/checkpoint, or the previous one if a write was cut between its two renames."""
    final, old = run_dir / FOLDER, run_dir / OLD
    return old if not final.exists() and (old / PROGRESS).exists() else final


def read_progress(run_dir: Path) -> Progress:
    """progress.json of the run's checkpoint; a one-line error if there is none or it is half-written or damaged."""
    folder = checkpoint_dir(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--resume {run_dir}: {'not a folder' if run_dir.exists() else 'no such folder'}")
    if not folder.is_dir():
        raise UserError(f"--resume {run_dir}: no checkpoint there (a run writes {run_dir / FOLDER} after each epoch)")
    try:
        raw = json.loads((folder / PROGRESS).read_text())
    except FileNotFoundError:
        raise UserError(f"--resume {run_dir}: {folder} is half-written (no {PROGRESS}); resume from another copy or start again") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--resume {run_dir}: {folder / PROGRESS} is damaged ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
        raise UserError(f"--resume {run_dir}: {folder / PROGRESS} is not a checkpoint of format version {FORMAT_VERSION}")
    try:
        progress = Progress(**{k: raw[k] for k in Progress.__dataclass_fields__})
    except KeyError as e:
        raise UserError(f"--resume {run_dir}: {folder / PROGRESS} lacks {e}") from None
    if not (isinstance(progress.epoch, int) and progress.epoch >= 1 and isinstance(progress.args, dict)
            and isinstance(progress.config, dict) and isinstance(progress.history, list) and len(progress.history) == progress.epoch):
        raise UserError(f"--resume {run_dir}: {folder / PROGRESS} is damaged (epoch, args, config or history of the wrong type)")
    progress.args = {**FLAGS_SINCE, **progress.args}
    missing = [flag for flag in ("arch", "epochs", *RESUMED_FLAGS) if flag not in progress.args]
    if missing:
        raise UserError(f"--resume {run_dir}: {folder / PROGRESS} lacks the flags {', '.join(missing)}")
    for name in (WEIGHTS, STATE):
        if not (folder / name).is_file():
            raise UserError(f"--resume {run_dir}: {folder} is half-written (no {name})")
    return progress


def read_state(run_dir: Path) -> StateDict:
    """The checkpoint's state.safetensors (Backend.restore_state's input)."""
    try:
        return load_weights(checkpoint_dir(run_dir) / STATE)
    except WeightsError as e:
        raise UserError(f"--resume {run_dir}: {e}") from None


def weights_path(run_dir: Path) -> Path:
    return checkpoint_dir(run_dir) / WEIGHTS
