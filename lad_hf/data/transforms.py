"""Training and evaluation transforms for (image, label map) pairs, and the collator that batches them.

Each transform works on whole tensors (interpolate, pad, slice, flip): no Python loop over pixels. Images are
resized bilinearly, label maps always by nearest neighbour, so no label value is ever invented.
"""

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


__all__ = ["SegmentationCollator", "SegmentationTransforms"]

EVAL_MODES = ("resize", "pad", "original")


def _as_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """`(H, W, 3)` uint8 and `(H, W)` int arrays -> `(3, H, W)` float in [0, 1] and `(H, W)` long."""
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
    return pixels, torch.from_numpy(np.ascontiguousarray(label)).long()


def _resize(pixels: torch.Tensor, label: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels, label
    pixels = F.interpolate(pixels[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    label = F.interpolate(label[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
    return pixels, label


@dataclass
class SegmentationTransforms:
    """Turns decoded `(image, label)` pairs into the `pixel_values` and `labels` the models and trainers take.

    Training (`train=True`): random rescale by a ratio in `scale_range`, random crop to `crop_size` (padding with 0
    for the image and `ignore_index` for the label where the image is smaller), horizontal flip, normalisation.
    Evaluation: resize to `crop_size` (`eval_mode="resize"`), pad to it (`eval_mode="pad"`, images larger than it
    are resized down first, keeping their aspect), or keep the image's own size (`eval_mode="original"`, for
    sliding-window and multi-scale inference at batch size 1), then normalisation. Labels are resized by nearest
    neighbour.

    Args:
        crop_size (`tuple[int, int]`): `(height, width)` of the output.
        train (`bool`, *optional*, defaults to `True`): Random augmentation or deterministic evaluation.
        image_mean, image_std (`list[float]`, *optional*): Normalisation; ImageNet's by default. Use
            `SegmentationTransforms.from_image_processor` to take a model's.
        scale_range (`tuple[float, float]`, *optional*, defaults to `(0.5, 2.0)`): Rescale ratios.
        ignore_index (`int`, *optional*, defaults to 255): Label of padded pixels.
        eval_mode (`str`, *optional*, defaults to `"resize"`): `"resize"`, `"pad"` or `"original"`.
        seed (`int`, *optional*): Seed of the augmentation. Called with a dataset row's `index` (as
            `load_segmentation_dataset`'s map-style datasets do), the draws for that row are a function of
            `(seed, epoch, index)` alone: the same in any process, with any number of dataloader workers, and after
            resuming from a checkpoint; `set_epoch` (called by lad_hf's trainers at each epoch) gives every epoch new
            draws. Without an index (or a seed), draws come from the transform's own generator, in call order.
    """

    crop_size: tuple[int, int]
    train: bool = True
    image_mean: list[float] = field(default_factory=lambda: list(IMAGENET_DEFAULT_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(IMAGENET_DEFAULT_STD))
    scale_range: tuple[float, float] = (0.5, 2.0)
    ignore_index: int = 255
    eval_mode: str = "resize"
    seed: int | None = None

    def __post_init__(self):
        self.crop_size = tuple(self.crop_size)
        if len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be (height, width) with positive sizes, got {self.crop_size}.")
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}.")
        if self.eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {EVAL_MODES}, got {self.eval_mode!r}.")
        self._mean = torch.tensor(self.image_mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(self.image_std, dtype=torch.float32).view(-1, 1, 1)
        self._generator = torch.Generator()
        if self.seed is not None:
            self._generator.manual_seed(self.seed)
        else:
            self._generator.seed()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The training epoch: rows drawn by index get new augmentation draws in every epoch."""
        self.epoch = epoch

    def _row_generator(self, index: int) -> torch.Generator:
        """The generator of one row's draws in this epoch."""
        (seed,) = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)
        return torch.Generator().manual_seed(int(seed))

    @classmethod
    def from_image_processor(cls, image_processor, crop_size: tuple[int, int], **kwargs) -> "SegmentationTransforms":
        """Take the normalisation of a transformers image processor (e.g. `AutoImageProcessor.from_pretrained`, the
        one saved with a model); `None` keeps ImageNet's."""
        if image_processor is not None:
            kwargs.update(image_mean=image_processor.image_mean, image_std=image_processor.image_std)
        return cls(crop_size, **kwargs)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """`(..., 3, H, W)` values in [0, 1] -> normalised with `image_mean` and `image_std`."""
        return (pixels - self._mean) / self._std

    def _train(
        self, pixels: torch.Tensor, label: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = pixels.shape[-2:]
        low, high = self.scale_range
        ratio = low + (high - low) * float(torch.rand((), generator=generator))
        pixels, label = _resize(pixels, label, (max(1, round(height * ratio)), max(1, round(width * ratio))))
        crop_h, crop_w = self.crop_size
        pad_h, pad_w = max(crop_h - pixels.shape[-2], 0), max(crop_w - pixels.shape[-1], 0)
        if pad_h or pad_w:
            pixels = F.pad(pixels, (0, pad_w, 0, pad_h), value=0.0)
            label = F.pad(label, (0, pad_w, 0, pad_h), value=self.ignore_index)
        top = int(torch.randint(pixels.shape[-2] - crop_h + 1, (), generator=generator))
        left = int(torch.randint(pixels.shape[-1] - crop_w + 1, (), generator=generator))
        pixels = pixels[:, top : top + crop_h, left : left + crop_w]
        label = label[top : top + crop_h, left : left + crop_w]
        if float(torch.rand((), generator=generator)) < 0.5:
            pixels, label = pixels.flip(-1), label.flip(-1)
        return pixels, label

    def _eval(self, pixels: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.eval_mode == "original":
            return pixels, label
        if self.eval_mode == "resize":
            return _resize(pixels, label, self.crop_size)
        height, width = pixels.shape[-2:]
        shrink = min(1.0, self.crop_size[0] / height, self.crop_size[1] / width)
        if shrink < 1.0:
            pixels, label = _resize(pixels, label, (max(1, int(height * shrink)), max(1, int(width * shrink))))
        pad_h, pad_w = self.crop_size[0] - pixels.shape[-2], self.crop_size[1] - pixels.shape[-1]
        pixels = F.pad(pixels, (0, pad_w, 0, pad_h), value=0.0)
        label = F.pad(label, (0, pad_w, 0, pad_h), value=self.ignore_index)
        return pixels, label

    def __call__(
        self, image: np.ndarray, label: np.ndarray, index: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One pair: `(H, W, 3)` uint8 image and `(H, W)` int label -> normalised `(3, h, w)` and `(h, w)` long.
        `index` is the pair's row in its dataset (see `seed`)."""
        pixels, label = _as_tensors(image, label)
        if self.train:
            keyed = index is not None and self.seed is not None
            pixels, label = self._train(pixels, label, self._row_generator(index) if keyed else self._generator)
        else:
            pixels, label = self._eval(pixels, label)
        # Padding is black (0 before normalisation), as in the paper's code.
        return self.normalize(pixels), label


class SegmentationCollator:
    """Stacks `pixel_values` and `labels` of equally sized samples into a batch, and their dataset rows (`row`, when
    the samples carry them) for the trainers' error messages."""

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        sizes = {tuple(torch.as_tensor(f["pixel_values"]).shape[-2:]) for f in features}
        label_sizes = {tuple(torch.as_tensor(f["labels"]).shape[-2:]) for f in features}
        if len(sizes) > 1 or len(label_sizes) > 1:
            which = f"; dataset rows {[int(f['row']) for f in features]}" if all("row" in f for f in features) else ""
            raise ValueError(
                f"Samples of one batch have different sizes (images {sorted(sizes)}, label maps "
                f"{sorted(label_sizes)}{which}): crop or resize them to one size (SegmentationTransforms with a "
                "crop_size)."
            )
        batch = {
            "pixel_values": torch.stack([torch.as_tensor(f["pixel_values"]) for f in features]),
            "labels": torch.stack([torch.as_tensor(f["labels"]) for f in features]),
        }
        if all("row" in f for f in features):
            batch["row"] = torch.tensor([int(f["row"]) for f in features])
        return batch
