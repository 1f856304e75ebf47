"""Class colours for pictures of label maps and predictions."""

import numpy as np


__all__ = ["class_palette", "overlay"]


def class_palette() -> np.ndarray:
    """`(256, 3)` uint8 colours for class ids: black for class 0, then distinct colours."""
    palette = [[0, 0, 0]] + [[(37 * k) % 256, (97 * k) % 256, (173 * k) % 256] for k in range(1, 256)]
    return np.array(palette, dtype=np.uint8)


def overlay(image: np.ndarray, classes: np.ndarray, alpha: float = 0.5, background: int | None = None) -> np.ndarray:
    """Class colours blended over an image.

    Args:
        image (`np.ndarray` of shape `(H, W, 3)`, uint8): The image.
        classes (`np.ndarray` of shape `(H, W)`): Class ids (0-255).
        alpha (`float`, *optional*, defaults to 0.5): Opacity of the colours.
        background (`int`, *optional*): Pixels of this class show the image alone.

    Returns:
        `np.ndarray` of shape `(H, W, 3)`, uint8.
    """
    blended = image.astype(np.float32) * (1 - alpha) + class_palette()[np.clip(classes, 0, 255)] * alpha
    if background is not None:
        blended[classes == background] = image[classes == background]
    return blended.astype(np.uint8)
