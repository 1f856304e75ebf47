"""The Label Noising Module (LNM) of LAD, paper Eq. 5."""

import math
from typing import Any

import torch
from torch import nn

from ..utils.labels import check_labels


__all__ = ["LabelNoiser", "is_lad_teacher"]

FIXED_CODES = ("standardized", "official")
IGNORE_ENCODINGS = ("class", "zero")


class LabelNoiser(nn.Module):
    r"""Turns a label map into the noised label channel a LAD teacher reads next to the image.

    Paper Eq. 5: `phi(y) = W[y] + alpha * Z`, with `W ~ N(0, 1)^C` drawn per image and per call (class-wise noising:
    it hides *which* class a region is) and `Z ~ N(0, 1)^{H x W}` per pixel (pixel-wise noising: it breaks the exact
    equality inside a region). The output is multiplied by `scale`.

    Args:
        num_labels (`int`): Number of classes `C`; labels hold ids in `[0, C)` or `ignore_index`.
        alpha (`float`, *optional*, defaults to 0.01): Pixel-wise noise level (paper default).
        ignore_index (`int`, *optional*, defaults to 255): Id of unlabelled pixels.
        class_noise (`bool`, *optional*, defaults to `True`): Draw random class codes `W` (the paper). With `False`
            every class gets a fixed code chosen by `fixed_codes` (paper Table 9, "without class-wise noising").
        scale (`float`, *optional*, defaults to 1.0): Output multiplier. The official code uses 100 (its images were
            0-255 mean-subtracted); see `LabelNoiser.official`.
        fixed_codes (`str`, *optional*, defaults to `"standardized"`): The class codes when `class_noise=False`.
            `"standardized"` maps ids to zero mean and unit variance over `0..C-1`, the range of normalised images
            (the paper's "normalised labels"; the exact map is this library's choice). `"official"` uses
            `(k - 11) / 10`, the fixed values of the official code at distillation time.
        ignore_encoding (`str`, *optional*, defaults to `"class"`): `"class"` treats ignore pixels as one more class
            (a random code of their own per image, or the next fixed code); `"zero"` gives them the value 0.

    Shapes:
        labels `(B, H, W)` integer -> noised label `(B, 1, H, W)` float32, on the labels' device.

    Example:
        ```python
        >>> noiser = LabelNoiser(num_labels=19)
        >>> channel = noiser(labels)  # (B, 1, H, W)
        >>> teacher_inputs = torch.cat([pixel_values, channel], dim=1)
        ```
    """

    def __init__(
        self,
        num_labels: int,
        alpha: float = 0.01,
        ignore_index: int = 255,
        class_noise: bool = True,
        scale: float = 1.0,
        fixed_codes: str = "standardized",
        ignore_encoding: str = "class",
    ):
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}.")
        if alpha < 0:
            raise ValueError(f"alpha is a noise level and must be >= 0, got {alpha}.")
        if fixed_codes not in FIXED_CODES:
            raise ValueError(f"fixed_codes must be one of {FIXED_CODES}, got {fixed_codes!r}.")
        if class_noise and fixed_codes != "standardized":
            raise ValueError("fixed_codes only applies with class_noise=False; set class_noise=False to use it.")
        if ignore_encoding not in IGNORE_ENCODINGS:
            raise ValueError(f"ignore_encoding must be one of {IGNORE_ENCODINGS}, got {ignore_encoding!r}.")
        self.num_labels = num_labels
        self.alpha = float(alpha)
        self.ignore_index = ignore_index
        self.class_noise = class_noise
        self.scale = float(scale)
        self.fixed_codes = fixed_codes
        self.ignore_encoding = ignore_encoding

    @classmethod
    def official(cls, num_labels: int, stage: str = "teacher", ignore_index: int = 255) -> "LabelNoiser":
        """The label channel of the official LAD code, which differs from the paper.

        Both stages scale the channel by 100 and treat ignore pixels as a class of their own. At teacher training
        (`stage="teacher"`) the class codes are random with pixel noise 0.03; at distillation (`stage="distill"`)
        they are the fixed values `(k - 11) / 10` with pixel noise 0.02.
        """
        if stage == "teacher":
            return cls(num_labels, alpha=0.03, ignore_index=ignore_index, scale=100.0)
        if stage == "distill":
            return cls(num_labels, 0.02, ignore_index, class_noise=False, scale=100.0, fixed_codes="official")
        raise ValueError(f"stage must be 'teacher' or 'distill', got {stage!r}.")

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments, as recorded in a teacher's config (`config.label_noiser`)."""
        return {
            "num_labels": self.num_labels,
            "alpha": self.alpha,
            "ignore_index": self.ignore_index,
            "class_noise": self.class_noise,
            "scale": self.scale,
            "fixed_codes": self.fixed_codes,
            "ignore_encoding": self.ignore_encoding,
        }

    @classmethod
    def from_config(cls, config) -> "LabelNoiser":
        """The noiser a LAD teacher was trained with, from its config (recorded by `add_label_channel`)."""
        if not is_lad_teacher(config):
            raise ValueError(
                f"This {type(config).__name__} records no label noiser: the model was not made a LAD teacher. "
                "Widen it with `lad_hf.add_label_channel(model, LabelNoiser(...))` first."
            )
        return cls(**config.label_noiser)

    def class_codes(self, batch_size: int, device: torch.device, generator: torch.Generator | None = None):
        """The code of every class and of the ignore slot, shape `(batch_size, num_labels + 1)`."""
        num_codes = self.num_labels + 1
        if self.class_noise:
            codes = torch.randn(batch_size, num_codes, generator=generator, device=device)
        else:
            ids = torch.arange(num_codes, device=device, dtype=torch.float32)
            if self.fixed_codes == "official":
                codes = (ids - 11) / 10
            else:
                k = self.num_labels
                std = math.sqrt((k * k - 1) / 12) if k > 1 else 1.0
                codes = (ids - (k - 1) / 2) / std
            codes = codes.expand(batch_size, num_codes)
        if self.ignore_encoding == "zero":
            codes = torch.cat([codes[:, :-1], codes.new_zeros(batch_size, 1)], dim=1)
        return codes

    def forward(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise a batch of label maps.

        Args:
            labels (`torch.LongTensor` of shape `(B, H, W)`): Class ids in `[0, num_labels)` or `ignore_index`.
            generator (`torch.Generator`, *optional*): A generator on the labels' device, for reproducible draws.

        Returns:
            `torch.FloatTensor` of shape `(B, 1, H, W)`.
        """
        check_labels(labels, self.num_labels, self.ignore_index)
        batch_size, height, width = labels.shape
        # Ignore pixels read the extra slot at index num_labels.
        index = labels.masked_fill(labels == self.ignore_index, self.num_labels).reshape(batch_size, -1)
        codes = self.class_codes(batch_size, labels.device, generator)
        noised = codes.gather(1, index).reshape(batch_size, 1, height, width)  # W[y], Eq. 5
        if self.alpha > 0:
            noise = torch.randn(noised.shape, generator=generator, device=labels.device)
            noised = noised + self.alpha * noise  # + alpha * Z, Eq. 5
        return noised * self.scale if self.scale != 1.0 else noised

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.to_dict().items())


def is_lad_teacher(config) -> bool:
    """Whether a model's config is a LAD teacher's: it records the label noiser of its label channel (`label_noiser`,
    set by `add_label_channel`), so the model is given its label exactly as it was trained.

    A config with a 4th input channel but no noiser raises: such a model cannot be given its label.
    """
    if getattr(config, "label_noiser", None) is not None:
        return True
    if getattr(config, "num_channels", 3) == 4:
        raise ValueError(
            f"This {type(config).__name__} has 4 input channels, an image and a label channel, but records no label "
            "noiser, so the label cannot be given to it. Make LAD teachers with "
            "`lad_hf.add_label_channel(model, LabelNoiser(num_labels))`, which records it; for a model built with 4 "
            "channels, record it with `model.config.label_noiser = LabelNoiser(num_labels).to_dict()`."
        )
    return False
