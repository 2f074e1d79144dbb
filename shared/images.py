"""PNG pictures of digit grids, from numpy arrays."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from shared.data import IMAGE_SIDE  # noqa: E402


def tile(images: np.ndarray, ncols: int = 10, pad: int = 1) -> np.ndarray:
    """Arrange (N, 784) or (N, 28, 28) images in a grid with `ncols` columns."""
    images = np.asarray(images, np.float32).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    nrows = -(-len(images) // ncols)
    cell = IMAGE_SIDE + pad
    grid = np.ones((nrows * cell + pad, ncols * cell + pad), np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        grid[pad + r * cell : pad + r * cell + IMAGE_SIDE, pad + c * cell : pad + c * cell + IMAGE_SIDE] = img
    return grid


def _save(fig, path: str | Path) -> None:
    """Lay out, write (making the folder) and close a figure."""
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_panels(path: str | Path, panels: Sequence[tuple[str, np.ndarray]], ncols: int = 10, suptitle: str = "") -> None:
    """Save side-by-side titled grids of digits as one PNG."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, images) in zip(axes[0], panels):
        ax.imshow(tile(images, ncols), cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    _save(fig, path)


def save_confusion(path: str | Path, counts: np.ndarray, class_names: Sequence[str], title: str = "") -> None:
    """A labelled confusion matrix (rows: true class, columns: predicted), each row normalised."""
    counts = np.asarray(counts)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    size = 2.5 + 0.42 * n
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7 if n > 10 else 8,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), class_names, rotation=90 if n > 10 else 0, fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title}\ntest accuracy {accuracy:.2%} ({counts.sum()} examples; colour: fraction of the row)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    _save(fig, path)


def save_class_histogram(path: str | Path, counts: np.ndarray, title: str = "") -> None:
    """A bar chart of how many generated digits the classifier puts in each class."""
    counts = np.asarray(counts)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.bar(range(len(counts)), counts, color="#4477aa")
    ax.axhline(counts.sum() / len(counts), color="gray", linestyle="--", linewidth=1, label="uniform")
    for digit, count in enumerate(counts):
        ax.text(digit, count, str(count), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(counts)))
    ax.set_xlabel("digit (the classifier's argmax)")
    ax.set_ylabel("generated digits")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)


def save_latent_scatter(path: str | Path, z: np.ndarray, labels: np.ndarray, title: str = "", prior_std: float = 1.0) -> None:
    """2-d codes coloured by digit, with circles at 1 and 2 standard deviations of the Gaussian prior."""
    z = np.asarray(z)
    fig, ax = plt.subplots(figsize=(6.2, 5.6))
    cmap = plt.get_cmap("tab10")
    for digit in range(10):
        points = z[np.asarray(labels) == digit, :2]
        ax.scatter(points[:, 0], points[:, 1], s=4, color=cmap(digit), label=str(digit), alpha=0.7)
    for k in (1, 2):
        ax.add_patch(plt.Circle((0, 0), k * prior_std, fill=False, color="gray", linestyle="--", linewidth=0.8))
    ax.set_aspect("equal")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title(title, fontsize=10)
    ax.legend(markerscale=3, fontsize=8, loc="upper right", ncol=2)
    _save(fig, path)
