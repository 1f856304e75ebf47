"""Feature maps as the feature-based methods compare them: resized to the teacher's grid, pooled to a cap."""

import math

import torch
import torch.nn.functional as F


__all__ = ["pool_to", "to_size"]


def pool_to(features: torch.Tensor, max_positions: int, mode: str = "max", factor: int = 1) -> torch.Tensor:
    """Pool `(B, C, h, w)` features by `factor`, then by the smallest larger factor that leaves at most
    `max_positions` positions (ceil mode: no pixel is dropped)."""
    height, width = features.shape[-2:]
    while math.ceil(height / factor) * math.ceil(width / factor) > max_positions:
        factor += 1
    if factor == 1:
        return features
    pool = F.max_pool2d if mode == "max" else F.avg_pool2d
    return pool(features, kernel_size=factor, stride=factor, ceil_mode=True)


def to_size(features: torch.Tensor, size) -> torch.Tensor:
    """`(B, C, h, w)` features resized bilinearly to `size` (unchanged when they have it)."""
    if features.shape[-2:] == tuple(size):
        return features
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)
