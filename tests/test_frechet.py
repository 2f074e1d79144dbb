"""shared/frechet.py: the Frechet distance, the shipped classifier and its numpy forward pass."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from shared.data import load_embedded_mnist, load_mnist
from shared.frechet import CLASSIFIER_PATH, FEATURE_DIM, Classifier, class_histogram, classifier_shapes, default_classifier, frechet_distance, sample_quality
from shared.metrics import accuracy
from shared.weights import WeightsError, load_weights, save_weights
from torch_impl import mlp as tmlp
from torch_impl.weights import load_model

# python -m torch_impl.train mlp --seed 0 --out /tmp/classifier, weights.safetensors: its tensors
# come out bit for bit the same run after run here (6 runs), but safetensors writes the header's two
# metadata entries in either order, so the file itself hashes to one of two values
# (72e9d024... as shipped, or 37fbc926...). Pinned: a digest of the tensors alone.
CLASSIFIER_TENSORS_SHA256 = "fb32593d37b4b7c9380dc396fbec12c4f448aff96996f0c49676560a0773e4e0"


# ---------------------------------------------------------------- helpers
def with_moments(rng: np.random.Generator, n: int, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """n samples whose sample mean is `mean` and sample covariance (ddof=1) is `cov`, exactly up to rounding."""
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.atleast_2d(np.cov(z, rowvar=False)))).T  # sample covariance I
    return mean + z @ np.linalg.cholesky(cov).T


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def random_rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def box_blur(images: np.ndarray, k: int) -> np.ndarray:
    img = images.reshape(-1, 28, 28)
    out = np.zeros_like(img)
    for dy in range(-(k // 2), k // 2 + 1):
        for dx in range(-(k // 2), k // 2 + 1):
            out += np.roll(img, (dy, dx), axis=(1, 2))
    return out.reshape(len(images), -1) / k**2


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return default_classifier()


@pytest.fixture(scope="module")
def mnist():
    return load_embedded_mnist()


@pytest.fixture(scope="module")
def official(mnist_test_dir):
    return load_mnist(None, mnist_test_dir)


# ---------------------------------------------------------------- the distance
def test_exact_moments_helper():
    rng = np.random.default_rng(0)
    cov = random_spd(rng, 4)
    x = with_moments(rng, 12, np.arange(4.0), cov)
    np.testing.assert_allclose(x.mean(axis=0), np.arange(4.0), atol=1e-12)
    np.testing.assert_allclose(np.cov(x, rowvar=False), cov, atol=1e-12)


def test_diagonal_closed_form():
    """||mu1 - mu2||^2 + sum(s1 + s2 - 2 sqrt(s1 s2)); few samples, so ddof=0 would be 10% off."""
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 4.0, 5), rng.uniform(0.1, 4.0, 5)
    a = with_moments(rng, 10, mu1, np.diag(s1))
    b = with_moments(rng, 10, mu2, np.diag(s2))
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)


def test_one_dimension_closed_form():
    """In 1-d the Frechet distance of two Gaussians is (m1 - m2)^2 + (sigma1 - sigma2)^2."""
    rng = np.random.default_rng(2)
    a = with_moments(rng, 50, np.array([1.5]), np.array([[4.0]]))
    b = with_moments(rng, 30, np.array([-0.5]), np.array([[0.25]]))
    assert frechet_distance(a, b) == pytest.approx(2.0**2 + (2.0 - 0.5) ** 2, rel=1e-10)


@pytest.mark.parametrize("d", [3, 20, 100])
def test_non_commuting_covariances_match_scipy_sqrtm(d):
    """S_a S_b is not symmetric here: the eigh route must agree with a general matrix square root."""
    scipy_linalg = pytest.importorskip("scipy.linalg")  # installed with mlxtend
    rng = np.random.default_rng(d)
    cov_a, cov_b = random_spd(rng, d), random_spd(rng, d)
    assert not np.allclose(cov_a @ cov_b, cov_b @ cov_a)
    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    a = with_moments(rng, 3 * d, mu_a, cov_a)
    b = with_moments(rng, 2 * d + 5, mu_b, cov_b)
    root = scipy_linalg.sqrtm(cov_a @ cov_b)
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root).real
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_symmetric_zero_and_invariant_under_rotation_and_translation():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8))
    b = rng.standard_t(3, size=(200, 8)) + 0.3
    d_ab = frechet_distance(a, b)
    assert d_ab > 0.1
    assert frechet_distance(b, a) == pytest.approx(d_ab, rel=1e-10)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9 * np.trace(np.cov(a, rowvar=False)))
    assert frechet_distance(a, a[::-1].copy()) == pytest.approx(0.0, abs=1e-9 * np.trace(np.cov(a, rowvar=False)))
    q, shift = random_rotation(rng, 8), rng.normal(size=8) * 10
    assert frechet_distance(a @ q + shift, b @ q + shift) == pytest.approx(d_ab, rel=1e-9)
    assert frechet_distance(3 * a, 3 * b) == pytest.approx(9 * d_ab, rel=1e-9)  # a squared distance
    assert frechet_distance(a + 1.0, a) == pytest.approx(8.0, rel=1e-9)  # a shift of 1 in 8 coordinates


def test_fewer_samples_than_dimensions():
    """Singular covariances (N < d) still give a finite, non-negative distance, 0 for identical sets."""
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(20, FEATURE_DIM)), rng.normal(size=(30, FEATURE_DIM)) + 0.1
    assert np.isfinite(frechet_distance(a, b)) and frechet_distance(a, b) > 0
    assert frechet_distance(a, a) < 1e-8 * np.trace(np.cov(a, rowvar=False))


@pytest.mark.parametrize(
    "a, b, fragment",
    [
        (np.zeros((5, 3)), np.zeros((5, 4)), "same d"),
        (np.zeros(5), np.zeros(5), "same d"),
        (np.zeros((1, 3)), np.zeros((5, 3)), "at least 2 samples"),
        (np.full((5, 3), np.nan), np.zeros((5, 3)), "NaN"),
    ],
)
def test_bad_features(a, b, fragment):
    with pytest.raises(ValueError, match=fragment):
        frechet_distance(a, b)


# ---------------------------------------------------------------- the classifier
def test_asset_is_the_documented_classifier():
    state_dict = load_weights(CLASSIFIER_PATH)
    assert {k: v.shape for k, v in state_dict.items()} == classifier_shapes()
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].astype("<f4").tobytes())
    assert digest.hexdigest() == CLASSIFIER_TENSORS_SHA256, (
        f"{CLASSIFIER_PATH} holds other weights: update CLASSIFIER_TENSORS_SHA256 and the README's numbers"
    )


def test_numpy_forward_equals_torch_mlp(classifier, mnist):
    model = tmlp.MLP()
    load_model(model, CLASSIFIER_PATH)
    model.eval()
    x = mnist.test_x[::4]
    with torch.no_grad():
        t = torch.from_numpy(x)
        h = torch.relu(model.hidden3(torch.relu(model.hidden2(torch.relu(model.hidden1(t))))))
        torch_features, torch_logits = h.numpy(), model(t).numpy()
    features, logits = classifier.forward(x)
    assert features.dtype == np.float64 and features.shape == (len(x), FEATURE_DIM) and logits.shape == (len(x), 10)
    assert (features >= 0).all() and (features > 0).mean() > 0.2  # the ReLU output, not a pre-activation
    np.testing.assert_allclose(features, torch_features, rtol=1e-5, atol=1e-5 * np.abs(torch_features).max())
    np.testing.assert_allclose(logits, torch_logits, rtol=1e-5, atol=1e-5 * np.abs(torch_logits).max())


def test_classifier_accuracy(classifier, mnist, official):
    assert accuracy(classifier.logits(mnist.test_x), mnist.test_y) >= 0.93  # 0.949 measured
    assert accuracy(classifier.logits(official.test_x), official.test_y) >= 0.92  # 0.9388 measured


def test_images_in_other_layouts_and_ranges(classifier, mnist):
    x = mnist.test_x[:10]
    np.testing.assert_array_equal(classifier.features(x.reshape(10, 1, 28, 28)), classifier.features(x))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        classifier.features(x * 2 - 1)  # a generator's tanh range, not rescaled
    with pytest.raises(ValueError, match="shape"):
        classifier.features(x[:, :700])


# ---------------------------------------------------------------- on real digits
def test_frechet_distance_on_real_and_corrupted_digits(classifier, mnist, official):
    rng = np.random.default_rng(0)
    real = classifier.features(mnist.test_x)
    other_real = frechet_distance(real, classifier.features(official.test_x[rng.choice(10_000, 1000, replace=False)]))
    noise = frechet_distance(real, classifier.features(rng.uniform(0, 1, mnist.test_x.shape)))
    shuffled = frechet_distance(real, classifier.features(mnist.test_x[:, rng.permutation(784)]))
    blurred = frechet_distance(real, classifier.features(box_blur(mnist.test_x, 5)))
    assert other_real < 50  # ~13 measured (7-25 over subsets)
    assert noise > 50 * other_real and noise > 1000  # ~4000
    assert shuffled > 50 * other_real  # ~2400
    assert blurred > 10 * other_real  # ~450


def test_histogram_and_sample_quality_of_one_class(classifier, mnist):
    ones = mnist.test_x[mnist.test_y == 1]
    counts = class_histogram(ones)
    assert counts.dtype == np.int64 and counts.shape == (10,) and counts.sum() == len(ones)
    assert counts[1] >= 0.9 * len(ones)
    np.testing.assert_array_equal(counts, class_histogram(classifier.logits(ones)))  # logits or images
    quality = sample_quality(mnist.test_x, ones)
    assert quality["classes_covered"] <= 3 and quality["largest_class_fraction"] >= 0.9
    assert quality["frechet_distance"] > 1000


def test_sample_quality_of_real_digits(mnist):
    rng = np.random.default_rng(0)
    quality = sample_quality(mnist.test_x, mnist.train_x[rng.choice(len(mnist.train_x), 1000, replace=False)])
    assert set(quality) == {"frechet_distance", "classes_covered", "largest_class_fraction"}
    assert all(isinstance(v, (int, float)) for v in quality.values())  # the training log formats them
    assert quality["frechet_distance"] < 30  # ~9 measured
    assert quality["classes_covered"] == 10 and quality["largest_class_fraction"] < 0.15


def test_sample_quality_of_a_diverged_generator(mnist):
    quality = sample_quality(mnist.test_x, np.full((100, 784), np.nan, np.float32))
    assert np.isnan(quality["frechet_distance"]) and quality["classes_covered"] == 0


def test_class_histogram_counts_argmax():
    logits = np.zeros((6, 10))
    logits[[0, 1, 2, 3, 4, 5], [3, 3, 3, 0, 9, 9]] = 1.0
    np.testing.assert_array_equal(class_histogram(logits), [1, 0, 0, 3, 0, 0, 0, 0, 0, 2])


# ---------------------------------------------------------------- bad weight files
def test_missing_asset(tmp_path):
    path = tmp_path / "nowhere.safetensors"
    with pytest.raises(WeightsError, match="nowhere.safetensors"):
        Classifier.load(path)


def test_corrupt_asset(tmp_path):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(CLASSIFIER_PATH.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="corrupt.safetensors"):
        Classifier.load(path)


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (lambda sd: sd.update({"hidden3.kernel": sd.pop("hidden3.weight")}), ["missing key 'hidden3.weight'"]),
        (lambda sd: sd.update({"extra.weight": np.zeros(3, np.float32)}), ["unexpected key 'extra.weight'"]),
        (lambda sd: sd.update({"out.weight": np.zeros((10, 99), np.float32)}), ["'out.weight'", "(10, 99)"]),
    ],
    ids=["renamed-key", "extra-key", "wrong-shape"],
)
def test_asset_with_wrong_keys(tmp_path, edit, fragments):
    state_dict = load_weights(CLASSIFIER_PATH)
    edit(state_dict)
    path = tmp_path / "wrong.safetensors"
    save_weights(path, state_dict)
    with pytest.raises(WeightsError) as info:
        Classifier.load(path)
    for fragment in ["wrong.safetensors", *fragments]:
        assert fragment in str(info.value)


def test_frechet_module_imports_neither_torch_nor_jax():
    code = "import sys, shared.frechet; bad = {'torch', 'jax'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)
