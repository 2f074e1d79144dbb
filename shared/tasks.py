"""What each architecture trains on and how it is judged, framework-free.

A task loads its data, turns it into the numpy arguments of the
architecture's training step (after model and optimizer; the Backend holds
the step itself, shared/contract.py train_step_of), computes test metrics
from what the model returns, and draws the pictures. It evaluates through
the module's inference functions bound to the model (`Inference`: eval mode,
numpy in and out, in slices). Both frameworks therefore train on the same
batches and noise and are judged by the same numpy code.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from shared.contract import AaeModule, AutoencoderModule, ClassifierModule, GanModule, Inference, ModelModule, RnnModule, VaeModule
from shared.data import IMAGE_DIM, Mnist, binarize, load_mnist
from shared.errors import UserError
from shared.frechet import class_histogram, sample_quality
from shared.hparams import EVAL_NOISE_SEED, hparams, label, variants
from shared.metrics import accuracy, bernoulli_log_likelihood, confusion_matrix, cross_entropy, neg_elbo
from shared.names import Names, load_names, one_hot_batch, one_hot_name
from shared.weights import WeightsSpec

LENGTH_BUCKET = 8  # RNN batches are padded to a multiple of this many letters


class Task:
    """Common interface; see the subclasses."""

    arch: str
    contract: type = ModelModule  # the protocol the architecture's modules satisfy (shared/contract.py)
    loss_names: tuple[str, ...] = ("loss",)  # what the step returns: one loss, or a vector of these
    fixed_batch_size: int | None = None  # set when the variant defines its batch size
    min_train_batch: int = 1  # the smallest batch a training step is defined on
    n_train: int
    n_infer: int  # the examples infer_batch draws from: the test split
    quality: tuple[str, str]  # the test metric a run is judged by, and whether "max" or "min" is better
    source: str  # where the data came from, for the metrics file

    def __init__(self, variant: str | None = None):
        self.variant = variant or variants(self.arch)[0]
        self.hp = hparams(self.arch, self.variant)
        self.model_kwargs: dict = {}  # data-dependent model arguments (the RNN's number of classes)
        if getattr(self.hp, "batch_size_fixed", False):
            self.fixed_batch_size = self.hp.batch_size

    @classmethod
    def load(cls, variant: str | None = None, data_dir: Path | None = None, test_dir: Path | None = None, labels: int | None = None) -> Task:
        """The task on the embedded data, or on the folders the user named; `labels`: --labels."""
        task = cls(load_mnist(data_dir, test_dir), variant)
        if labels is not None:
            task.set_labels(labels)
        return task

    def config(self) -> dict:
        """Settings of the task beyond the hyperparameters, for the metrics file."""
        return {}

    def weights_spec(self) -> WeightsSpec:
        """What this task's weight files hold, written into each and checked when one is loaded."""
        return WeightsSpec(self.arch, self.variant)

    def set_labels(self, count: int) -> None:
        """--labels: only the semi-supervised AAE trains on a labelled subset."""
        raise UserError(f"--labels: only aae --variant semisupervised takes labels, not {label(self.arch, self.variant)}")

    def train_batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def infer_step(self, arch: ModelModule) -> Callable:
        """The inference function the benchmark times (the model in eval mode, no gradient): eval_outputs by default."""
        return arch.eval_outputs

    def infer_batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """The arguments of infer_step after the model, for test examples `idx`."""
        raise NotImplementedError

    def evaluate(self, model: Inference) -> dict[str, float]:
        raise NotImplementedError

    def save_pictures(self, out_dir: Path, model: Inference, title: str) -> list[Path]:
        raise NotImplementedError


class GaussianVaeTask(Task):
    """A VAE on binarised MNIST with a Gaussian posterior; judged by the test negative ELBO in nats.

    The subclasses say how the model reports its posterior (log sigma or log variance).
    """

    contract = VaeModule
    quality = ("test_neg_elbo", "min")

    def __init__(self, data: Mnist, variant: str | None = None):
        super().__init__(variant)
        self.train_x = binarize(data.train_x)
        self.test_x = binarize(data.test_x)
        self.n_train, self.n_infer = len(self.train_x), len(self.test_x)
        self.source = data.source

    def posterior(self, out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(mean, log sigma) of q(z|x) from what eval_outputs returned."""
        raise NotImplementedError

    def train_batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(x, eps) for train_step: binary images and the reparameterisation noise."""
        eps = rng.standard_normal((len(idx), self.hp.latent_dim), dtype=np.float32)
        return self.train_x[idx], eps

    def infer_step(self, arch: VaeModule) -> Callable:
        return arch.reconstruct

    def infer_batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(x,) for reconstruct: binary test images."""
        return (self.test_x[idx],)

    def eval_noise(self) -> np.ndarray:
        """The same eps for every evaluation, whatever the framework."""
        rng = np.random.default_rng(EVAL_NOISE_SEED)
        return rng.standard_normal((len(self.test_x), self.hp.latent_dim), dtype=np.float32)

    def evaluate(self, model: Inference) -> dict[str, float]:
        out = model.eval_outputs(self.test_x, self.eval_noise())
        metrics = neg_elbo(self.test_x, out["logits"], *self.posterior(out))
        return {f"test_{k}": v for k, v in metrics.items()}

    def save_pictures(self, out_dir: Path, model: Inference, title: str) -> list[Path]:
        from shared.images import save_panels  # matplotlib only when pictures are drawn

        rng = np.random.default_rng(EVAL_NOISE_SEED + 1)
        z = rng.standard_normal((100, self.hp.latent_dim), dtype=np.float32)
        u = rng.random((100, IMAGE_DIM), dtype=np.float32)
        samples = model.sample(z, u)
        save_panels(
            out_dir / "samples.png",
            [("Bernoulli means p = f(z), z ~ N(0, I)", samples["means"]), ("samples x ~ Bernoulli(p)", samples["pixels"])],
            suptitle=title,
        )
        x = spread_over_test_set(self.test_x, 50)
        save_panels(
            out_dir / "reconstructions.png",
            [("binarised test digits", x), ("reconstructions sigmoid(f(mean(x)))", model.reconstruct(x)["images"])],
            suptitle=title,
        )
        return [out_dir / "samples.png", out_dir / "reconstructions.png"]


def spread_over_test_set(images: np.ndarray, count: int) -> np.ndarray:
    """`count` images evenly spaced over the split (all digits, not only the first class)."""
    return images[np.linspace(0, len(images) - 1, count).astype(int)]


class VaeMlpTask(GaussianVaeTask):
    """Flux-style MLP VAE: the encoder returns mu and log sigma."""

    arch = "vae_mlp"

    def posterior(self, out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return out["mu"], out["logsigma"]


class VaeTask(GaussianVaeTask):
    """Convolutional VAE: the encoder returns the mean and the log variance."""

    arch = "vae"

    def posterior(self, out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return out["mean"], 0.5 * np.asarray(out["logvar"], np.float64)  # log sigma = log(variance) / 2


class AutoencoderTask(Task):
    """Autoencoder (MLP or convolutional) on MNIST in [0, 1]; judged by the test binary cross-entropy.

    test_bce is the source's loss, the mean over pixels (nats per pixel);
    test_bce_per_image its sum over the 784 pixels, comparable with a VAE's
    reconstruction term.
    """

    arch = "autoencoder"
    contract = AutoencoderModule
    quality = ("test_bce", "min")

    def __init__(self, data: Mnist, variant: str | None = None):
        super().__init__(variant)
        self.train_x, self.test_x = data.train_x, data.test_x
        self.n_train, self.n_infer = len(self.train_x), len(self.test_x)
        self.source = data.source
        self.model_kwargs = {"variant": self.variant}

    def train_batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(x,) for train_step: the images are their own targets."""
        return (self.train_x[idx],)

    def infer_step(self, arch: AutoencoderModule) -> Callable:
        return arch.reconstruct

    def infer_batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(x,) for reconstruct: test images."""
        return (self.test_x[idx],)

    def evaluate(self, model: Inference) -> dict[str, float]:
        logits = model.eval_outputs(self.test_x)["logits"]
        bce_per_image = -bernoulli_log_likelihood(self.test_x, logits)
        return {"test_bce": float(bce_per_image.mean() / IMAGE_DIM), "test_bce_per_image": float(bce_per_image.mean())}

    def save_pictures(self, out_dir: Path, model: Inference, title: str) -> list[Path]:
        from shared.images import save_panels  # matplotlib only when pictures are drawn

        x = spread_over_test_set(self.test_x, 50)
        save_panels(
            out_dir / "reconstructions.png",
            [("test digits", x), ("reconstructions sigmoid(decoder(encoder(x)))", model.reconstruct(x)["images"])],
            suptitle=title,
        )
        return [out_dir / "reconstructions.png"]


class GanTask(Task):
    """DCGAN on MNIST scaled to [-1, 1]; judged by the Frechet distance and the class histogram of its samples.

    After each epoch the generator (eval mode: running statistics) draws as
    many digits as the test split holds, from fixed latents; shared/frechet.py
    compares them with the test images in the feature space of a fixed MNIST
    classifier and counts the classes it sees.
    """

    arch = "gan"
    contract = GanModule
    loss_names = ("d_loss", "g_loss")
    quality = ("frechet_distance", "min")

    def __init__(self, data: Mnist, variant: str | None = None):
        super().__init__(variant)
        if len(data.test_x) < 2:  # the Frechet distance compares covariances, and one image has none
            raise UserError(
                f"gan: the test split ({data.source}) holds {len(data.test_x)} image(s), expected at least 2 "
                "(the Frechet distance needs the covariance of the test images' features)"
            )
        self.train_x = to_tanh_range(data.train_x)
        self.real_test_x = data.test_x  # in [0, 1], as the classifier reads them
        self.n_train, self.n_infer = len(self.train_x), len(self.real_test_x)
        self.source = data.source

    def train_batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(x, z_d, z_g) for train_step: real images in [-1, 1], the D step's and the G step's latents."""
        z_d = rng.standard_normal((len(idx), self.hp.latent_dim), dtype=np.float32)
        z_g = rng.standard_normal((len(idx), self.hp.latent_dim), dtype=np.float32)
        return self.train_x[idx], z_d, z_g

    def infer_step(self, arch: GanModule) -> Callable:
        return arch.sample

    def infer_batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(z,) for sample: as many latents as examples asked for."""
        return (rng.standard_normal((len(idx), self.hp.latent_dim), dtype=np.float32),)

    def eval_latents(self, count: int, offset: int = 0) -> np.ndarray:
        rng = np.random.default_rng(EVAL_NOISE_SEED + offset)
        return rng.standard_normal((count, self.hp.latent_dim), dtype=np.float32)

    def generate(self, model: Inference, z: np.ndarray) -> np.ndarray:
        """Generated digits in [0, 1] (the generator's tanh output, rescaled)."""
        return (model.sample(z)["images"] + 1.0) / 2.0

    def evaluate(self, model: Inference) -> dict[str, float]:
        generated = self.generate(model, self.eval_latents(len(self.real_test_x)))
        return sample_quality(self.real_test_x, generated)

    def save_pictures(self, out_dir: Path, model: Inference, title: str) -> list[Path]:
        from shared.images import save_class_histogram, save_panels  # matplotlib only when pictures are drawn

        samples = self.generate(model, self.eval_latents(100, offset=1))
        save_panels(out_dir / "samples.png", [("generated digits G(z), z ~ N(0, I)", samples)], suptitle=title)
        generated = self.generate(model, self.eval_latents(len(self.real_test_x)))
        counts = class_histogram(generated)
        save_class_histogram(out_dir / "class_histogram.png", counts, f"{title}\nclasses of {len(generated)} generated digits")
        return [out_dir / "samples.png", out_dir / "class_histogram.png"]


class AaeTask(Task):
    """Adversarial autoencoder (three variants) on MNIST in [0, 1].

    unsupervised / supervised: judged by the test reconstruction BCE; pictures:
    the test set's codes coloured by digit (z[0] and z[1], all of z but the
    semi-supervised variant's 10-d one; the prior's 1 and 2 standard
    deviations drawn), and a style grid (rows: one z each, columns: the digit
    given to the decoder; supervised and semi-supervised).
    semisupervised: `labels` training images (as many of each digit) keep
    their labels, the rest are used unlabelled; judged by the test
    classification error (argmax of the encoder's class logits).
    """

    arch = "aae"
    contract = AaeModule
    labelled_seed = 17  # which training images keep their labels: the same in every run

    def __init__(self, data: Mnist, variant: str | None = None, labels: int | None = None):
        super().__init__(variant)
        self.data = data
        self.source = data.source
        self.model_kwargs = {"variant": self.variant}
        self.semisupervised = self.variant == "semisupervised"
        if self.semisupervised:
            self.loss_names = ("recon_loss", "d_loss", "d_cat_loss", "g_loss", "class_loss")
        else:
            self.loss_names = ("recon_loss", "d_loss", "g_loss")
        self.unlabelled = np.arange(len(data.train_x))
        self.labelled = np.arange(0)
        self.n_train, self.n_infer = len(self.unlabelled), len(data.test_x)
        self.quality = ("test_error", "min") if self.semisupervised else ("test_bce", "min")
        if self.semisupervised:
            self.set_labels(labels or self.hp.labels)

    @classmethod
    def load(cls, variant: str | None = None, data_dir: Path | None = None, test_dir: Path | None = None, labels: int | None = None) -> AaeTask:
        task = cls(load_mnist(data_dir, test_dir), variant, labels)
        if labels is not None and not task.semisupervised:
            task.set_labels(labels)  # the one-line error
        return task

    def set_labels(self, count: int) -> None:
        if not self.semisupervised:
            super().set_labels(count)
        n_classes = self.hp.n_classes
        per_class = count // n_classes
        available = np.bincount(self.data.train_y, minlength=n_classes).min()
        if count % n_classes or not 1 <= per_class < available:
            raise UserError(
                f"--labels {count}: expected a multiple of {n_classes} between {n_classes} and "
                f"{n_classes * (available - 1)} (the training split has {available} images of its rarest digit)"
            )
        rng = np.random.default_rng(self.labelled_seed)
        self.labelled = np.sort(np.concatenate(
            [rng.choice(np.flatnonzero(self.data.train_y == digit), per_class, replace=False) for digit in range(n_classes)]
        ))
        self.unlabelled = np.setdiff1d(np.arange(len(self.data.train_x)), self.labelled)
        self.n_train = len(self.unlabelled)

    def config(self) -> dict:
        return {"labels": len(self.labelled), "unlabelled": len(self.unlabelled)} if self.semisupervised else {}

    def weights_spec(self) -> WeightsSpec:
        return WeightsSpec(self.arch, self.variant, {"n_classes": self.hp.n_classes, "z_dim": self.hp.z_dim})

    def infer_step(self, arch: AaeModule) -> Callable:
        return arch.encode

    def infer_batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(x,) for encode: test images."""
        return (self.data.test_x[idx],)

    def prior(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return (self.hp.prior_std * rng.standard_normal((count, self.hp.z_dim))).astype(np.float32)

    def train_batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """unsupervised: (x, z_prior); supervised: (x, y, z_prior);
        semisupervised: (x, z_prior, y_prior one-hot, x_labelled, y_labelled), x from the unlabelled images."""
        rows = self.unlabelled[idx]
        x, z = self.data.train_x[rows], self.prior(rng, len(idx))
        if self.variant == "unsupervised":
            return x, z
        if self.variant == "supervised":
            return x, self.data.train_y[rows], z
        y_prior = one_hot(rng.integers(self.hp.n_classes, size=len(idx)), self.hp.n_classes)
        picked = self.labelled[rng.choice(len(self.labelled), len(idx), replace=len(self.labelled) < len(idx))]
        return x, z, y_prior, self.data.train_x[picked], self.data.train_y[picked]

    def evaluate(self, model: Inference) -> dict[str, float]:
        x, y = self.data.test_x, self.data.test_y
        out = model.eval_outputs(x, one_hot(y, self.hp.n_classes))
        metrics = {"test_bce": float(-bernoulli_log_likelihood(x, out["logits"]).mean() / IMAGE_DIM)}
        if self.semisupervised:
            metrics["test_error"] = float(np.mean(out["class_logits"].argmax(-1) != y))
        return metrics

    def save_pictures(self, out_dir: Path, model: Inference, title: str) -> list[Path]:
        from shared.images import save_confusion, save_latent_scatter, save_panels  # matplotlib only when pictures are drawn

        codes = model.encode(self.data.test_x)
        paths = [out_dir / "latent.png"]
        save_latent_scatter(paths[0], codes["z"], self.data.test_y, f"{title}\ntest codes z = Q(x)", self.hp.prior_std)
        if self.variant != "unsupervised":
            rows = 10  # one z per row, the ten digits across
            z = np.repeat(self.prior(np.random.default_rng(EVAL_NOISE_SEED), rows), self.hp.n_classes, axis=0)
            y = one_hot(np.tile(np.arange(self.hp.n_classes), rows), self.hp.n_classes)
            images = model.decode(z, y)["images"]
            paths.append(out_dir / "style_grid.png")
            save_panels(paths[-1], [("rows: z ~ prior; columns: the digit given to the decoder", images)], suptitle=title)
        if self.semisupervised:
            predictions = codes["class_logits"].argmax(-1)
            paths.append(out_dir / "confusion.png")
            save_confusion(paths[-1], confusion_matrix(self.data.test_y, predictions, self.hp.n_classes), [str(d) for d in range(self.hp.n_classes)], title)
        return paths


def padded_batch(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One-hot names and their lengths, padded to the longest rounded up to a multiple of LENGTH_BUCKET.

    Few distinct shapes to compile, few wasted time steps.
    """
    return one_hot_batch(names, -(-max(map(len, names)) // LENGTH_BUCKET) * LENGTH_BUCKET)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[labels]


def to_tanh_range(images: np.ndarray) -> np.ndarray:
    """[0, 1] -> [-1, 1], the range of the generator's tanh."""
    return images * 2.0 - 1.0


class ClassifierTask(Task):
    """A classifier judged by accuracy; the subclasses say what an example is.

    evaluate() runs the model in eval mode over the training and the test set:
    train_accuracy, test_loss (mean cross-entropy, nats) and test_accuracy.
    """

    class_names: list[str]
    quality = ("test_accuracy", "max")

    def eval_arrays(self, split: str) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """(the arguments of eval_outputs for the whole split, its labels)."""
        raise NotImplementedError

    def evaluate(self, model: Inference) -> dict[str, float]:
        (train_arrays, train_y), (test_arrays, test_y) = self.eval_arrays("train"), self.eval_arrays("test")
        train_logits, test_logits = model.eval_outputs(*train_arrays)["logits"], model.eval_outputs(*test_arrays)["logits"]
        return {
            "train_accuracy": accuracy(train_logits, train_y),
            "test_loss": cross_entropy(test_logits, test_y),
            "test_accuracy": accuracy(test_logits, test_y),
        }

    def save_pictures(self, out_dir: Path, model: Inference, title: str) -> list[Path]:
        from shared.images import save_confusion  # matplotlib only when pictures are drawn

        arrays, labels = self.eval_arrays("test")
        counts = confusion_matrix(labels, model.eval_outputs(*arrays)["logits"].argmax(-1), len(self.class_names))
        save_confusion(out_dir / "confusion.png", counts, self.class_names, title)
        return [out_dir / "confusion.png"]


class MnistClassifierTask(ClassifierTask):
    """Digit classification on MNIST images in [0, 1]."""

    contract = ClassifierModule
    class_names = [str(d) for d in range(10)]

    def __init__(self, data: Mnist, variant: str | None = None):
        super().__init__(variant)
        self.data = data
        self.n_train, self.n_infer = len(data.train_x), len(data.test_x)
        self.source = data.source

    def train_batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(x, y) for train_step: images (B, 784) and integer labels."""
        return self.data.train_x[idx], self.data.train_y[idx]

    def infer_batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(x,) for eval_outputs: test images."""
        return (self.data.test_x[idx],)

    def eval_arrays(self, split: str) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        if split == "train":
            return (self.data.train_x,), self.data.train_y
        return (self.data.test_x,), self.data.test_y


class MlpTask(MnistClassifierTask):
    arch = "mlp"


class CnnTask(MnistClassifierTask):
    arch = "cnn"
    min_train_batch = 2  # BatchNorm1d after the convolutions normalises over the batch alone


class RnnTask(ClassifierTask):
    """Surname -> language with the character-level RNN, in its batched or per-name form.

    The batched form gets one-hot names zero-padded to a common length, with
    their lengths; the per-name form gets one name, unpadded. Evaluation
    always runs the batched form (a test shows the two forms agree).
    """

    arch = "rnn"
    contract = RnnModule

    def __init__(self, names: Names, variant: str | None = None):
        super().__init__(variant)
        self.names = names
        self.source = names.source
        self.class_names = names.classes
        self.n_train, self.n_infer = len(names.train_names), len(names.test_names)
        self.length = names.max_length
        self.model_kwargs = {"n_classes": len(names.classes)}
        self._eval_arrays: dict[str, tuple[tuple[np.ndarray, ...], np.ndarray]] = {}

    @classmethod
    def load(cls, variant: str | None = None, data_dir: Path | None = None, test_dir: Path | None = None, labels: int | None = None) -> RnnTask:
        if test_dir is not None:
            raise UserError("--test-dir: rnn takes its test split from the names data (--data-dir), not from MNIST files")
        task = cls(load_names(data_dir), variant)
        if labels is not None:
            task.set_labels(labels)
        return task

    def weights_spec(self) -> WeightsSpec:
        """Variant "any": the two forms train one model. The ordered class list: output i is class i, so a file fits only that list."""
        return WeightsSpec(self.arch, "any", {"classes": list(self.class_names)})

    def train_batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """batched: (chars (B, T, 57), lengths (B,), y (B,)); per-name: (chars (L, 57), y (1,))."""
        names = [self.names.train_names[i] for i in idx]
        if self.variant == "per-name":
            return one_hot_name(names[0]), self.names.train_y[idx]
        return (*padded_batch(names), self.names.train_y[idx])

    def infer_batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(chars (B, T, 57), lengths (B,)) for eval_outputs, test names padded as train_batch pads (both forms: B = 1 per name)."""
        return padded_batch([self.names.test_names[i] for i in idx])

    def eval_arrays(self, split: str) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        if split not in self._eval_arrays:  # encoded once, then reused by every evaluation
            names, labels = (
                (self.names.train_names, self.names.train_y) if split == "train" else (self.names.test_names, self.names.test_y)
            )
            self._eval_arrays[split] = one_hot_batch(names, self.length), labels
        return self._eval_arrays[split]


TASKS: dict[str, type[Task]] = {
    "vae_mlp": VaeMlpTask, "mlp": MlpTask, "cnn": CnnTask, "rnn": RnnTask,
    "autoencoder": AutoencoderTask, "vae": VaeTask, "gan": GanTask, "aae": AaeTask,
}
