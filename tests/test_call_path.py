"""How far the training command is from the architecture's functions: the calls from `python -m FRAMEWORK_impl.train`
to the module's train_step and eval_outputs, recorded from a real run and held against the list in
docs/adding-an-architecture.md ("How a training step runs")."""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "adding-an-architecture.md"
MAX_CALLS = 5
# The project's functions between the command and the architecture's function, the command's own first (main is train_main).
EXPECTED = {
    ("torch", "train_step"): ["shared/trainer.py:train_main", "shared/trainer.py:train", "shared/trainer.py:run_epoch",
                              "torch_impl/training.py:CompiledStep.__call__"],
    ("jax", "train_step"): ["shared/trainer.py:train_main", "shared/trainer.py:train", "shared/trainer.py:run_epoch",
                            "jax_impl/training.py:CompiledStep.__call__", "jax_impl/training.py:CompiledStep.__init__.<locals>.pure_step"],
    ("torch", "eval_outputs"): ["shared/trainer.py:train_main", "shared/trainer.py:train", "shared/tasks.py:ClassifierTask.evaluate",
                                "shared/contract.py:Inference._in_batches", "torch_impl/training.py:Backend.predict"],
}
EXPECTED[("jax", "eval_outputs")] = [*EXPECTED[("torch", "eval_outputs")][:-1], "jax_impl/training.py:Backend.predict"]


def project_callers() -> list[str]:
    """file:function of every project frame calling the current function, outermost first (the tests' own left out)."""
    callers = []
    for frame in inspect.stack()[2:]:
        path = Path(frame.filename).resolve()
        if not frame.filename.startswith("<") and path.is_relative_to(REPO_ROOT) and path.parts[len(REPO_ROOT.parts)] != "tests":
            callers.append(f"{path.relative_to(REPO_ROOT)}:{frame.frame.f_code.co_qualname}")
    return callers[::-1]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict[tuple[str, str], list[str]]:
    """The callers of the MLP's train_step and eval_outputs in a one-epoch run of each training command."""
    paths = {}
    for framework in ("torch", "jax"):
        arch = importlib.import_module(f"{framework}_impl.mlp")
        originals = {name: getattr(arch, name) for name in ("train_step", "eval_outputs")}

        def recording(framework, name, original):
            def record(*args):
                paths.setdefault((framework, name), project_callers())
                return original(*args)

            return record

        with pytest.MonkeyPatch.context() as patch:
            for name in originals:
                patch.setattr(arch, name, recording(framework, name, originals[name]))
            main = importlib.import_module(f"{framework}_impl.train").main
            main(["mlp", "--epochs", "1", "--batch-size", "1000", "--out", str(tmp_path_factory.mktemp(framework))])
    return paths


@pytest.mark.parametrize("key", list(EXPECTED), ids=["-".join(k) for k in EXPECTED])
def test_the_command_reaches_the_architecture_in_at_most_five_calls(recorded, key):
    path = recorded[key]  # each function of it calls the next, the last the architecture's: one call each
    assert path == EXPECTED[key] and len(path) <= MAX_CALLS, f"{key}: {path}"


def test_the_docs_list_the_calls_the_command_makes():
    text = PAGE.read_text()
    section = re.search(r"^## How a training step runs$(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, f"{PAGE}: no section 'How a training step runs'"
    for key, path in EXPECTED.items():
        for hop in path:
            file, function = hop.split(":")
            assert f"{file}" in section.group(1) and function.split(".<locals>.")[-1] in section.group(1), f"{PAGE} does not name {hop} ({key})"
