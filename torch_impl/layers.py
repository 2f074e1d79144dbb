"""Small layers the sources use but torch.nn does not have (twin of jax_impl/layers.py's extras)."""
from __future__ import annotations

import torch


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The centre height x width window of an NCHW tensor (the source's undefined CenterCrop)."""
    top, left = (x.shape[2] - height) // 2, (x.shape[3] - width) // 2
    return x[:, :, top : top + height, left : left + width]
