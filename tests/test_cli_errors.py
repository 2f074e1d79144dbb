"""Bad input to `python -m {torch,jax}_impl.train` gives a one-line error and exit status 2, no traceback.

A few cases run as real subprocesses (end to end: no traceback reaches the
terminal); the rest run in-process through shared.errors.run_cli, which is
what the `__main__` block of both train modules calls.
"""
from __future__ import annotations

import gzip
import importlib
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from shared.errors import run_cli
from tests.conftest import MNIST_TEST_DIR, REPO_ROOT

IMAGES_GZ = MNIST_TEST_DIR / "t10k-images-idx3-ubyte.gz"
LABELS_GZ = MNIST_TEST_DIR / "t10k-labels-idx1-ubyte.gz"
FRAMEWORKS = ["torch", "jax"]



# ---------------------------------------------------------------- helpers
def one_line_error(stderr: str) -> str:
    """The single 'error: ...' line of stderr; fails on a traceback or extra lines."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def run_subprocess(framework: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"{framework}_impl.train", *map(str, args)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )


def expect_subprocess_error(framework: str, *args: str) -> str:
    proc = run_subprocess(framework, *args)
    assert proc.returncode == 2, f"exit status {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stdout
    return one_line_error(proc.stderr)


def expect_error(framework: str, argv: list[str], capsys) -> str:
    """Run the training command in-process as its __main__ block does; return its one error line."""
    main = importlib.import_module(f"{framework}_impl.train").main
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_cli(main, [str(a) for a in argv])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    return one_line_error(err)


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


@pytest.fixture(scope="module")
def mnist_raw() -> tuple[bytes, bytes]:
    return gzip.decompress(IMAGES_GZ.read_bytes()), gzip.decompress(LABELS_GZ.read_bytes())


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A --data-dir whose train-* files are copies of the official t10k files (valid, 10000 digits)."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for split in ("train", "t10k"):
        shutil.copyfile(IMAGES_GZ, folder / f"{split}-images-idx3-ubyte.gz")
        shutil.copyfile(LABELS_GZ, folder / f"{split}-labels-idx1-ubyte.gz")
    return folder


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    """weights.safetensors of an untrained vae_mlp, written by the torch training command."""
    out = tmp_path_factory.mktemp("vae_mlp-weights")
    proc = run_subprocess("torch", "vae_mlp", "--epochs", "0", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert (out / "weights.safetensors").is_file()
    return out


@pytest.fixture(scope="module")
def good_weights(weights_dir) -> dict[str, np.ndarray]:
    weights = load_file(weights_dir / "weights.safetensors")
    assert weights["encoder.mu.weight"].shape == (5, 500)
    return weights


@pytest.fixture(scope="module")
def missing_key_weights(weights_dir, good_weights) -> Path:
    path = weights_dir / "missing_key.safetensors"
    save_file({k: v for k, v in good_weights.items() if k != "encoder.mu.weight"}, path)
    return path


@pytest.fixture(scope="module")
def wrong_shape_weights(weights_dir, good_weights) -> Path:
    path = weights_dir / "wrong_shape.safetensors"
    save_file({**good_weights, "decoder.hidden.weight": np.zeros((500, 4), np.float32)}, path)
    return path


# ---------------------------------------------------------------- end to end (subprocess)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_subprocess_unknown_architecture(framework):
    line = expect_subprocess_error(framework, "foo")
    assert "argument arch: invalid choice: 'foo'" in line
    assert "vae_mlp" in line  # names the valid choices


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_subprocess_truncated_training_images(framework, data_dir, mnist_raw, tmp_path):
    bad = data_dir / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(mnist_raw[0][:-784]))
    line = expect_subprocess_error(framework, "vae_mlp", "--data-dir", data_dir, "--out", tmp_path / "out")
    assert line == f"error: {bad}: 7839232 bytes, expected 7840016 for 10000x28x28 items (truncated)"
    assert not (tmp_path / "out").exists()  # nothing written before the data is checked


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_subprocess_init_missing_key(framework, missing_key_weights, tmp_path):
    line = expect_subprocess_error(framework, "vae_mlp", "--init", missing_key_weights, "--out", tmp_path)
    assert line == f"error: {missing_key_weights}: missing key 'encoder.mu.weight' (the model expects shape (5, 500))"


# ---------------------------------------------------------------- flags (in-process)
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--batch-size", "0"], "error: argument --batch-size: expected a positive integer, got 0"),
        (["--batch-size", "-5"], "error: argument --batch-size: expected a positive integer, got -5"),
        (["--batch-size", "abc"], "error: argument --batch-size: invalid positive_int value: 'abc'"),
        (["--epochs", "-1"], "error: argument --epochs: expected 0 or more, got -1"),
        (["--lr", "0"], "error: argument --lr: expected a finite positive number, got 0"),
        (["--lr", "nan"], "error: argument --lr: expected a finite positive number, got nan"),
        (["--lr", "inf"], "error: argument --lr: expected a finite positive number, got inf"),
        (["--lr=-inf"], "error: argument --lr: expected a finite positive number, got -inf"),
        (["--seed", "-1"], f"error: argument --seed: expected an integer from 0 to 2^63 - 1 = {2**63 - 1}, got -1"),
        (["--seed", str(2**63)], f"error: argument --seed: expected an integer from 0 to 2^63 - 1 = {2**63 - 1}, got {2**63}"),
        (["--seed", str(2**64)], f"error: argument --seed: expected an integer from 0 to 2^63 - 1 = {2**63 - 1}, got {2**64}"),
        (["--device", "tpu"], "error: argument --device: invalid choice: 'tpu'"),
    ],
)
def test_bad_flag(framework, flags, expected, capsys, tmp_path):
    line = expect_error(framework, ["vae_mlp", *flags, "--out", tmp_path / "out"], capsys)
    assert line.startswith(expected), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_missing_architecture(framework, capsys):
    line = expect_error(framework, [], capsys)
    assert "arch" in line and "required" in line


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_out_is_a_file(framework, capsys, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("not a folder")
    line = expect_error(framework, ["vae_mlp", "--epochs", "0", "--out", out], capsys)
    assert line == f"error: --out {out}: exists and is not a folder"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_batch_size_larger_than_training_set(framework, capsys, tmp_path):
    argv = ["vae_mlp", "--epochs", "1", "--batch-size", "4001", "--out", tmp_path / "out"]
    # only found when the first epoch yields no batch, after the run's header line and progress bar:
    # the error must still be the last line, with no traceback
    main = importlib.import_module(f"{framework}_impl.train").main
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_cli(main, [str(a) for a in argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].strip().endswith(
        "error: --batch-size 4001 is larger than the 4000 training examples"
    )
    assert not (tmp_path / "out" / "weights.safetensors").exists()


def _has_gpu(framework: str) -> bool:
    if framework == "torch":
        import torch

        return torch.cuda.is_available()
    import jax

    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_device_gpu_without_gpu(framework, capsys, tmp_path):
    if _has_gpu(framework):
        pytest.skip(f"{framework} sees a GPU")
    line = expect_error(framework, ["vae_mlp", "--epochs", "0", "--device", "gpu", "--out", tmp_path / "out"], capsys)
    assert line.startswith(f"error: --device gpu: {'torch' if framework == 'torch' else 'JAX'} sees no")


# ---------------------------------------------------------------- data (in-process)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_data_dir_missing(framework, capsys, tmp_path):
    missing = tmp_path / "no-such-folder"
    line = expect_error(framework, ["vae_mlp", "--data-dir", missing, "--out", tmp_path / "out"], capsys)
    assert line == f"error: data folder {missing} does not exist"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_test_dir_missing(framework, capsys, tmp_path):
    missing = tmp_path / "no-such-folder"
    line = expect_error(framework, ["vae_mlp", "--test-dir", missing, "--out", tmp_path / "out"], capsys)
    assert line == f"error: data folder {missing} does not exist"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_data_dir_without_files(framework, capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = expect_error(framework, ["vae_mlp", "--data-dir", empty, "--out", tmp_path / "out"], capsys)
    assert line.startswith(f"error: {empty}: no MNIST train images file (looked for train-images-idx3-ubyte[.gz]")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_data_dir_truncated_gzip(framework, data_dir, capsys, tmp_path):
    bad = data_dir / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(LABELS_GZ.read_bytes()[:2000])
    line = expect_error(framework, ["vae_mlp", "--data-dir", data_dir, "--out", tmp_path / "out"], capsys)
    assert line.startswith(f"error: {bad}: corrupt or truncated gzip data")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_data_dir_wrong_magic(framework, data_dir, capsys, tmp_path):
    # the labels file saved under the training images' name
    bad = data_dir / "train-images-idx3-ubyte.gz"
    shutil.copyfile(LABELS_GZ, bad)
    line = expect_error(framework, ["vae_mlp", "--data-dir", data_dir, "--out", tmp_path / "out"], capsys)
    assert line == f"error: {bad}: magic number 0x00000801, expected 0x00000803 (unsigned bytes, 3 dimensions)"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_data_dir_count_mismatch(framework, data_dir, mnist_raw, capsys, tmp_path):
    labels = np.frombuffer(mnist_raw[1], np.uint8, offset=8)
    bad = data_dir / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(idx_bytes(labels[:9999])))
    line = expect_error(framework, ["vae_mlp", "--data-dir", data_dir, "--out", tmp_path / "out"], capsys)
    images = data_dir / "train-images-idx3-ubyte.gz"
    assert line == f"error: {images} holds 10000 images but {bad} holds 9999 labels"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_data_dir_bad_test_split(framework, data_dir, mnist_raw, capsys, tmp_path):
    # train files fine, test labels contain a 10
    labels = np.frombuffer(mnist_raw[1], np.uint8, offset=8).copy()
    labels[123] = 10
    bad = data_dir / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(idx_bytes(labels)))
    line = expect_error(framework, ["vae_mlp", "--data-dir", data_dir, "--out", tmp_path / "out"], capsys)
    assert line == f"error: {bad}: label 10 found, expected digits 0-9"


# ---------------------------------------------------------------- --init (in-process)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_init_missing_file(framework, capsys, tmp_path):
    missing = tmp_path / "nope.safetensors"
    line = expect_error(framework, ["vae_mlp", "--epochs", "0", "--init", missing, "--out", tmp_path / "out"], capsys)
    assert line == f"error: weights file {missing} does not exist"


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("content", [b"", b"abc", bytes(range(256)) * 8], ids=["empty", "short", "random"])
def test_init_not_safetensors(framework, content, capsys, tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(content)
    line = expect_error(framework, ["vae_mlp", "--epochs", "0", "--init", path, "--out", tmp_path / "out"], capsys)
    assert line.startswith(f"error: {path}: not a readable safetensors file (")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_init_missing_key(framework, missing_key_weights, capsys, tmp_path):
    argv = ["vae_mlp", "--epochs", "0", "--init", missing_key_weights, "--out", tmp_path / "out"]
    line = expect_error(framework, argv, capsys)
    assert line == f"error: {missing_key_weights}: missing key 'encoder.mu.weight' (the model expects shape (5, 500))"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_init_wrong_shape(framework, wrong_shape_weights, capsys, tmp_path):
    argv = ["vae_mlp", "--epochs", "0", "--init", wrong_shape_weights, "--out", tmp_path / "out"]
    line = expect_error(framework, argv, capsys)
    assert line == (
        f"error: {wrong_shape_weights}: key 'decoder.hidden.weight' has shape (500, 4), the model expects (500, 5)"
    )


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_init_unexpected_key(framework, weights_dir, good_weights, capsys, tmp_path):
    path = tmp_path / "extra.safetensors"
    save_file({**good_weights, "encoder.extra.weight": np.zeros((3, 2), np.float32)}, path)
    line = expect_error(framework, ["vae_mlp", "--epochs", "0", "--init", path, "--out", tmp_path / "out"], capsys)
    assert line == f"error: {path}: unexpected key 'encoder.extra.weight' of shape (3, 2) (not in the model)"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_init_transposed_linear(framework, good_weights, capsys, tmp_path):
    # a JAX-layout kernel (in, out) saved under the torch name is a shape error, not silently accepted
    path = tmp_path / "transposed.safetensors"
    save_file({**good_weights, "encoder.hidden.weight": good_weights["encoder.hidden.weight"].T.copy()}, path)
    line = expect_error(framework, ["vae_mlp", "--epochs", "0", "--init", path, "--out", tmp_path / "out"], capsys)
    assert line == f"error: {path}: key 'encoder.hidden.weight' has shape (784, 500), the model expects (500, 784)"


# ---------------------------------------------------------------- bugs found by these tests, fixed
def test_out_under_a_file(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = expect_error("torch", ["vae_mlp", "--epochs", "0", "--out", blocker / "sub"], capsys)
    assert "--out" in line and str(blocker / "sub") in line


def test_subprocess_init_bfloat16_file(good_weights, tmp_path):
    import torch
    from safetensors.torch import save_file as save_torch

    tensors = {k: torch.from_numpy(v) for k, v in good_weights.items()}
    tensors["encoder.mu.bias"] = tensors["encoder.mu.bias"].bfloat16()
    path = tmp_path / "bf16.safetensors"
    save_torch(tensors, path)
    proc = run_subprocess("torch", "vae_mlp", "--epochs", "0", "--init", path, "--out", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert str(path) in one_line_error(proc.stderr) and "float32" in proc.stderr


# ---------------------------------------------------------------- classifiers and names (in-process)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_variant_the_architecture_does_not_have(framework, capsys, tmp_path):
    line = expect_error(framework, ["mlp", "--variant", "per-name", "--out", tmp_path / "out"], capsys)
    assert line == "error: --variant per-name: mlp has default"
    line = expect_error(framework, ["rnn", "--variant", "loop", "--out", tmp_path / "out"], capsys)
    assert line == "error: --variant loop: rnn has batched, per-name"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_per_name_rnn_takes_one_name_per_step(framework, capsys, tmp_path):
    line = expect_error(framework, ["rnn", "--variant", "per-name", "--batch-size", "8", "--out", tmp_path / "out"], capsys)
    assert line == "error: --batch-size 8: rnn --variant per-name takes 1 example per step"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_rnn_has_no_mnist_test_dir(framework, capsys, tmp_path):
    line = expect_error(framework, ["rnn", "--test-dir", tmp_path, "--out", tmp_path / "out"], capsys)
    assert line.startswith("error: --test-dir: rnn takes its test split from the names data")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_names_folder_problems_name_the_file(framework, capsys, tmp_path):
    names = tmp_path / "names"
    names.mkdir()
    line = expect_error(framework, ["rnn", "--data-dir", names, "--out", tmp_path / "out"], capsys)
    assert str(names) in line and "Language.txt" in line
    (names / "English.txt").write_text("Smith\nJones\n")
    (names / "French.txt").write_bytes(b"Dupont\nL\xe9vy\n")  # Latin-1, not UTF-8
    line = expect_error(framework, ["rnn", "--data-dir", names, "--out", tmp_path / "out"], capsys)
    assert str(names / "French.txt") in line and "line 2" in line and "UTF-8" in line


# ---------------------------------------------------------------- issue 13: batch sizes, folders, weight files that know what they hold
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_batch_size_a_model_cannot_train_with(framework, capsys, tmp_path):
    line = expect_error(framework, ["cnn", "--batch-size", "1", "--out", tmp_path / "out"], capsys)
    assert line == "error: --batch-size 1: cnn trains on at least 2 examples per step (BatchNorm normalises over the batch)"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_out_that_cannot_be_written_is_refused_before_training(framework, capsys, tmp_path):
    from tests.conftest import unwritable_folder

    locked = unwritable_folder(tmp_path)
    line = expect_error(framework, ["vae_mlp", "--epochs", "1", "--out", locked], capsys)
    assert line.startswith(f"error: --out {locked}: cannot write there (")
    assert "epoch" not in capsys.readouterr().out  # nothing trained


def saved(tmp_path: Path, name: str, arrays: dict, metadata: dict | None = None) -> Path:
    path = tmp_path / name
    save_file(arrays, path, metadata=metadata)
    return path


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda w: {**w, "encoder.mu.weight": w["encoder.mu.weight"].astype(np.float64)}, "has dtype float64, the model holds float32"),
        (lambda w: {**w, "encoder.mu.bias": w["encoder.mu.bias"].astype(np.float16)}, "has dtype float16, the model holds float32"),
        (lambda w: {**w, "encoder.mu.bias": np.zeros(5, np.int32)}, "has dtype int32, the model holds float32"),
        (lambda w: {**w, "decoder.out.bias": np.where(np.arange(784) == 3, np.nan, 0).astype(np.float32)},
         "key 'decoder.out.bias' holds 1 non-finite values (NaN or infinity) of 784"),
        (lambda w: {**w, "encoder.mu.weight": np.full((5, 500), np.inf, np.float32)}, "holds 2500 non-finite values"),
    ],
    ids=["float64", "float16", "int32", "nan", "inf"],
)
def test_init_of_another_dtype_or_non_finite_is_refused(framework, change, expected, good_weights, capsys, tmp_path):
    path = saved(tmp_path, "w.safetensors", change(good_weights))
    line = expect_error(framework, ["vae_mlp", "--epochs", "0", "--init", path, "--out", tmp_path / "out"], capsys)
    assert line.startswith(f"error: {path}: key '") and expected in line, line


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_init_written_for_another_architecture_or_variant(framework, capsys, tmp_path):
    from shared.weights import WeightsSpec
    from torch_impl import autoencoder, mlp
    from torch_impl.weights import save_model

    save_model(mlp.init_model(0), tmp_path / "mlp.safetensors", WeightsSpec("mlp", "default"))
    line = expect_error(framework, ["vae_mlp", "--epochs", "0", "--init", tmp_path / "mlp.safetensors", "--out", tmp_path / "o"], capsys)
    assert line == f"error: {tmp_path / 'mlp.safetensors'}: holds arch 'mlp', expected 'vae_mlp'"
    save_model(autoencoder.init_model(0, "conv"), tmp_path / "conv.safetensors", WeightsSpec("autoencoder", "conv"))
    argv = ["autoencoder", "--variant", "mlp", "--epochs", "0", "--init", tmp_path / "conv.safetensors", "--out", tmp_path / "o"]
    assert expect_error(framework, argv, capsys) == f"error: {tmp_path / 'conv.safetensors'}: holds variant 'conv', expected 'mlp'"
    old = saved(tmp_path, "old.safetensors", {"w": np.zeros(1, np.float32)}, {"arch": "gan", "written_by": "torch_impl"})
    line = expect_error(framework, ["vae_mlp", "--epochs", "0", "--init", old, "--out", tmp_path / "o"], capsys)
    assert line == f"error: {old}: holds weights of gan, expected vae_mlp"  # a file from before the format version


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("format_version", "99", "format version '99', this code reads versions up to 1"),
        ("format_version", "x", "format version 'x', this code reads versions up to 1"),
        ("depends", "5", "metadata 'depends' is not a JSON object: '5'"),
        ("depends", "[1, 2]", "metadata 'depends' is not a JSON object: '[1, 2]'"),
        ("depends", "{", "metadata 'depends' is not a JSON object: '{'"),
        ("depends", '{"z_dim": 2}', "z_dim differ: 2 in the file, none here"),
    ],
)
def test_init_with_metadata_this_code_cannot_read_is_refused(framework, field, value, expected, good_weights, capsys, tmp_path):
    from shared.weights import WeightsSpec

    metadata = {**WeightsSpec("vae_mlp", "default").metadata("torch_impl"), field: value}
    path = saved(tmp_path, "new.safetensors", good_weights, metadata)
    line = expect_error(framework, ["vae_mlp", "--epochs", "0", "--init", path, "--out", tmp_path / "o"], capsys)
    assert line == f"error: {path}: {expected}"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_init_without_metadata_loads_with_one_warning(framework, good_weights, capsys, tmp_path):
    """A file written by safetensors.torch.save_file from any state_dict: keys and shapes fit, so it loads, saying so."""
    import torch
    from safetensors.torch import save_file as save_torch

    path = tmp_path / "plain.safetensors"
    save_torch({k: torch.from_numpy(v) for k, v in good_weights.items()}, path)
    main = importlib.import_module(f"{framework}_impl.train").main
    capsys.readouterr()
    run_cli(main, ["vae_mlp", "--epochs", "0", "--init", str(path), "--out", str(tmp_path / "out")])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {path} has no torch-jax-zoo metadata (architecture, variant, format version); "
                        "loaded as vae_mlp --variant default since its keys and shapes fit"]
    written = load_file(tmp_path / "out" / "weights.safetensors")
    for key, value in good_weights.items():  # untrained (--epochs 0): the file's values came through
        np.testing.assert_array_equal(written[key], value)


def write_names(folder: Path, classes: list[str]) -> Path:
    folder.mkdir()
    for i, language in enumerate(classes):
        (folder / f"{language}.txt").write_text("".join(f"{language[:3]}{chr(97 + j % 26)}{i}x{j}\n" for j in range(20)))
    return folder


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_rnn_weights_on_data_of_other_classes_are_refused(framework, capsys, tmp_path):
    """Same number of classes, other names: today's silent mislabelling is a one-line error naming both lists."""
    first = write_names(tmp_path / "a", ["English", "French"])
    other = write_names(tmp_path / "b", ["German", "Italian"])
    main = importlib.import_module(f"{framework}_impl.train").main
    run_cli(main, ["rnn", "--data-dir", str(first), "--epochs", "0", "--out", str(tmp_path / "run")])
    argv = ["rnn", "--data-dir", other, "--epochs", "0", "--init", tmp_path / "run" / "weights.safetensors", "--out", tmp_path / "o"]
    line = expect_error(framework, argv, capsys)
    assert line == (f"error: {tmp_path / 'run' / 'weights.safetensors'}: classes differ: "
                    '["English", "French"] in the file, ["German", "Italian"] here')
