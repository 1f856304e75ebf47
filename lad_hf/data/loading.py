"""Loading segmentation datasets from the Hub, local Hub-format folders, parquet files or imagefolders."""

import io
import json
import os
import re
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Image, IterableDataset, load_dataset, load_dataset_builder
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from transformers.utils import logging

from ..hub import check_local_path, is_hub_id, not_found_error
from ..utils.labels import check_labels
from .presets import PRESETS, SegmentationPreset
from .transforms import SegmentationTransforms


__all__ = ["dataset_id2label", "find_id2label", "label_lookup_table", "load_segmentation_dataset"]

logger = logging.get_logger(__name__)

IMAGE_COLUMNS = ("image", "pixel_values", "img")
LABEL_COLUMNS = ("label", "annotation", "semantic_map", "mask", "segmentation", "semantic_segmentation")


def label_lookup_table(
    ignore_index: int = 255, reduce_labels: bool = False, label_mapping: dict[int, int] | None = None
) -> np.ndarray | None:
    """A table `lut` such that `lut[raw_label_map]` is the label map the models train on (None: labels as stored).

    `reduce_labels` (ADE20K): 0 ("other") becomes `ignore_index` and every other id `k` becomes `k - 1`.
    `label_mapping` (e.g. Cityscapes labelIds to trainIds): listed ids map as given, all others to `ignore_index`.
    """
    if reduce_labels and label_mapping:
        raise ValueError("Give reduce_labels or label_mapping, not both: fold the reduction into the mapping.")
    if label_mapping:
        lut = np.full(65536, ignore_index, dtype=np.int64)
        for raw, train in label_mapping.items():
            lut[int(raw)] = int(train)
        return lut
    if reduce_labels:
        lut = np.arange(65536, dtype=np.int64) - 1
        lut[0] = ignore_index
        lut[ignore_index] = ignore_index
        return lut
    return None


def find_id2label(
    name_or_path: str | Sequence[str],
    features=None,
    label_column: str | None = None,
    id2label: dict | None = None,
    preset: SegmentationPreset | None = None,
    revision: str | None = None,
) -> dict[int, str] | None:
    """The class names of a segmentation dataset, from (first found): the `id2label` argument, the preset, a
    `ClassLabel` feature of the label column, or an `id2label.json` file in the dataset folder or Hub repo."""
    if id2label:
        return {int(k): v for k, v in id2label.items()}
    if preset is not None:
        return dict(preset.id2label)
    feature = features.get(label_column) if features is not None and label_column else None
    while feature is not None and not isinstance(feature, ClassLabel):
        feature = getattr(feature, "feature", None)  # label maps stored as nested sequences of class ids
    if isinstance(feature, ClassLabel):
        return dict(enumerate(feature.names))
    if isinstance(name_or_path, str) and os.path.isdir(name_or_path):
        path = Path(name_or_path, "id2label.json")
        return {int(k): v for k, v in json.loads(path.read_text()).items()} if path.exists() else None
    if is_hub_id(name_or_path):
        try:
            path = hf_hub_download(name_or_path, "id2label.json", repo_type="dataset", revision=revision)
        except (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError):
            return None
        return {int(k): v for k, v in json.loads(Path(path).read_text()).items()}
    return None


def _open(value: dict) -> PILImage.Image:
    """An undecoded `datasets.Image` value (`{"bytes", "path"}`) as a PIL image."""
    if value.get("bytes") is not None:
        image = PILImage.open(io.BytesIO(value["bytes"]))
    else:
        image = PILImage.open(value["path"])
    image.load()  # decode now, so that a corrupt file fails here
    return image


def _rgb(image: PILImage.Image, name: str) -> np.ndarray:
    """An image as `(H, W, 3)` uint8. 16-bit grayscale is scaled to 8 bits (PIL's own conversion clips it to white);
    other images that are not 8-bit are refused."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image).astype(np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise ValueError(
                f"{name}: a {image.mode} image with values from {values.min()} to {values.max()}, beyond 16 bits: "
                "store images as 8-bit RGB or grayscale (or 16-bit grayscale)."
            )
        gray = (values >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "F":
        raise ValueError(f"{name}: a floating-point image; store images as 8-bit RGB or grayscale.")
    return np.array(image.convert("RGB"))


class SegmentationDecoder:
    """Decodes a batch of undecoded image/label pairs, checks them, remaps labels and optionally transforms them.

    Used as `Dataset.set_transform` (map-style: the batch carries each pair's dataset row in a `row` column, which
    names the pair in errors and keys its augmentation draws) or in `IterableDataset.map(batched=True,
    with_indices=True)` (streaming: the position in the stream names the pair; augmentation draws come in order).
    """

    def __init__(
        self,
        num_labels: int | None,
        ignore_index: int,
        lut: np.ndarray | None,
        transform: Callable | None,
        skip_corrupt: bool,
    ):
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        self.lut = lut
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.skipped: set[str] = set()

    def _decode(self, image_value: dict, label_value: dict, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            image, label = _open(image_value), _open(label_value)
        except (OSError, UnidentifiedImageError, SyntaxError) as error:
            # PIL names in-memory files by their object (<_io.BytesIO object at 0x...>): say "its bytes" instead.
            reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "its bytes", str(error))
            if not self.skip_corrupt:
                raise ValueError(f"Cannot decode {name}: {reason}. Remove or repair the file.") from error
            if name not in self.skipped:  # once per row, not once per epoch
                self.skipped.add(name)
                logger.warning(f"Skipped {name}, which cannot be decoded ({reason}); {len(self.skipped)} so far.")
            return None
        if image.size != label.size:
            raise ValueError(
                f"{name}: the image is {image.size[0]}x{image.size[1]} but its label map {label.size[0]}x"
                f"{label.size[1]} (width x height); image and label must have the same size."
            )
        label_ids = np.asarray(label)
        if label_ids.dtype.kind == "f":
            if not np.isfinite(label_ids).all() or (label_ids != np.round(label_ids)).any():
                raise ValueError(
                    f"{name}: the label map holds floats that are not whole numbers (e.g. "
                    f"{label_ids[label_ids != np.round(label_ids)].flat[0]:g}), but label maps hold class ids. Store "
                    "them as integers (a PNG of class ids), not normalised."
                )
        label_ids = label_ids.astype(np.int64)
        if label_ids.ndim == 3:  # some datasets store class ids in all three channels of an RGB PNG
            if not (label_ids == label_ids[..., :1]).all():
                raise ValueError(
                    f"{name}: the label map has mode {label.mode} with different channels, but label maps must hold "
                    "one class id per pixel (a single channel, a palette PNG, or R = G = B). Convert colour-coded "
                    "masks to class ids first."
                )
            label_ids = label_ids[..., 0]
        if self.lut is not None:
            label_ids = self.lut[label_ids]
        if self.num_labels is not None:
            try:
                check_labels(torch.from_numpy(label_ids)[None], self.num_labels, self.ignore_index)
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from None
        return _rgb(image, name), label_ids

    def set_epoch(self, epoch: int) -> None:
        """Pass the training epoch on to the transform, whose augmentation draws depend on it."""
        if hasattr(self.transform, "set_epoch"):
            self.transform.set_epoch(epoch)

    def __call__(self, batch: dict[str, list], indices: list[int] | None = None) -> dict[str, list]:
        images, labels, kept_rows = [], [], []
        rows = batch.get("row", indices)
        for i, (image_value, label_value) in enumerate(zip(batch["image"], batch["label"], strict=True)):
            row = None if rows is None else int(rows[i])
            name = f"row {row}" if row is not None else f"sample {i} of its batch"
            if image_value.get("path"):
                name += f" ({image_value['path']})"
            decoded = self._decode(image_value, label_value, name)
            if decoded is None:
                continue
            if self.transform is not None:
                # Map-style rows key their augmentation draws; a stream's positions are not rows.
                keyed = "row" in batch and isinstance(self.transform, SegmentationTransforms)
                decoded = self.transform(*decoded, index=row) if keyed else self.transform(*decoded)
            images.append(decoded[0])
            labels.append(decoded[1])
            kept_rows.append(row)
        output = (
            {"pixel_values": images, "labels": labels}
            if self.transform is not None
            else {"image": images, "label": labels}
        )
        if rows is not None:
            output["row"] = kept_rows  # names a batch's rows in the trainers' errors
        return output


def _load_raw(name_or_path, split: str, streaming: bool, config_name: str | None, revision: str | None, **kwargs):
    if not isinstance(name_or_path, str) or name_or_path.endswith(".parquet"):
        files = [str(f) for f in name_or_path] if not isinstance(name_or_path, str) else [name_or_path]
        return load_dataset("parquet", data_files={split: files}, split=split, streaming=streaming, **kwargs)
    if os.path.isdir(name_or_path) and "data_files" not in kwargs:
        # datasets caches a local folder under its name and config only, so a rebuilt folder would load stale data:
        # naming the files keys the cache on their paths and file metadata.
        builder = load_dataset_builder(name_or_path, config_name)
        kwargs["data_files"] = {name: list(files) for name, files in builder.config.data_files.items()}
    return load_dataset(name_or_path, config_name, split=split, streaming=streaming, revision=revision, **kwargs)


def _pick(columns: list[str], given: str | None, candidates: tuple[str, ...], what: str, name_or_path) -> str:
    if given is not None:
        if given not in columns:
            raise ValueError(f"{name_or_path} has no {what} column {given!r}; its columns are {columns}.")
        return given
    for candidate in candidates:
        if candidate in columns:
            return candidate
    raise ValueError(
        f"Found no {what} column in {name_or_path} among {list(candidates)}; its columns are {columns}. "
        f"Name it with {what}_column=..."
    )


@contextmanager
def _clear_not_found(name_or_path):
    """Turn "not found" and "unreachable" errors of a dataset name into one that says which path and which Hub id on
    which endpoint were looked for (parquet file lists keep datasets' own errors)."""
    if not isinstance(name_or_path, str) or name_or_path.endswith(".parquet"):
        yield
        return
    check_local_path(name_or_path, "the dataset", "dataset")
    try:
        yield
    except (OSError, HFValidationError) as error:  # not found locally nor on the Hub, or the Hub is unreachable
        raise not_found_error("the dataset", name_or_path, error, "dataset") from None


def _resolve_preset(name_or_path, preset: str | None, config_name: str | None, revision: str | None):
    """`(name_or_path, SegmentationPreset or None, config_name, revision)`, a preset name replaced by its Hub id."""
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; the presets are {sorted(PRESETS)}.")
    if preset is None and isinstance(name_or_path, str) and name_or_path in PRESETS:
        preset, name_or_path = name_or_path, PRESETS[name_or_path].hub_id
        config_name = config_name or PRESETS[preset].config_name
        revision = revision or PRESETS[preset].revision
    return name_or_path, PRESETS[preset] if preset is not None else None, config_name, revision


def dataset_id2label(
    name_or_path: str | os.PathLike | Sequence[str],
    *,
    preset: str | None = None,
    label_column: str | None = None,
    config_name: str | None = None,
    revision: str | None = None,
) -> dict[int, str] | None:
    """The class names of the dataset `load_segmentation_dataset` would load (see `find_id2label`), reading its
    metadata only."""
    name_or_path, preset, config_name, revision = _resolve_preset(name_or_path, preset, config_name, revision)
    if preset is not None:
        return dict(preset.id2label)
    features = None
    if isinstance(name_or_path, str) and not name_or_path.endswith(".parquet"):
        with _clear_not_found(name_or_path):
            features = load_dataset_builder(name_or_path, config_name, revision=revision).info.features
    if features is not None and label_column is None:
        label_column = next((c for c in LABEL_COLUMNS if c in features), None)
    return find_id2label(name_or_path, features, label_column, revision=revision)


def load_segmentation_dataset(
    name_or_path: str | os.PathLike | Sequence[str],
    split: str = "train",
    streaming: bool = False,
    *,
    preset: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    id2label: dict | None = None,
    num_labels: int | None = None,
    ignore_index: int | None = None,
    reduce_labels: bool | None = None,
    label_mapping: dict[int, int] | None = None,
    transform: SegmentationTransforms | Callable | None = None,
    shuffle_buffer_size: int | None = None,
    seed: int = 0,
    config_name: str | None = None,
    revision: str | None = None,
    **load_kwargs,
) -> Dataset | IterableDataset:
    """Load a semantic-segmentation dataset ready for the lad_hf trainers.

    Args:
        name_or_path: A Hub dataset id, a preset name (`"cityscapes"`, `"ade20k"`, `"pascal_voc_aug"`,
            `"coco_stuff_10k"`, `"coco_stuff_164k"`: its Hub id and settings), a local Hub-format folder or
            imagefolder (with a `metadata.csv` naming `file_name` and `label_file_name`), or parquet file(s).
        preset: Apply a preset's settings (columns, classes, ignore index, label preprocessing) to data loaded
            from `name_or_path`, e.g. a local copy of Cityscapes.
        split: The split to load.
        streaming: Return an `IterableDataset` that reads as it goes (give the Trainer `max_steps`). In several
            processes, with `dispatch_batches=False` (the lad_hf configs' default) and at least one shard per
            process, each process reads its own shards.
        image_column, label_column: Found among the common names when not given.
        id2label: Class names; else from the preset, a `ClassLabel` feature, or `id2label.json` (`find_id2label`).
        num_labels: Needed only when no class names can be found; used to check label values.
        ignore_index: Label id of unlabelled pixels (default 255, or the preset's).
        reduce_labels, label_mapping: Label preprocessing applied once, at decoding (`label_lookup_table`).
        transform: Applied to each decoded `(image, label)` pair, e.g. `SegmentationTransforms`; rows then hold
            `pixel_values` and `labels`. Without it rows hold `image` (H, W, 3 uint8) and `label` (H, W int) arrays.
        shuffle_buffer_size: With `streaming=True`, shuffle through a buffer of this many rows.
        seed: Seed of the streaming shuffle.
        config_name, revision, **load_kwargs: Passed to `datasets.load_dataset`.

    Images in grayscale, RGBA or palette modes are converted to RGB. Label maps must be single-channel class ids.
    Bad samples fail with an error naming the sample: image and label sizes that differ, label values beyond the
    classes. A file that cannot be decoded fails likewise in a map-style dataset; in a stream it is skipped with a
    warning that counts the skipped samples, so that one broken file does not end a long run.
    """
    name_or_path, preset, config_name, revision = _resolve_preset(name_or_path, preset, config_name, revision)
    if preset is not None:
        image_column, label_column = image_column or preset.image_column, label_column or preset.label_column
        ignore_index = preset.ignore_index if ignore_index is None else ignore_index
        reduce_labels = preset.reduce_labels if reduce_labels is None else reduce_labels
        label_mapping = label_mapping or preset.label_mapping
    ignore_index = 255 if ignore_index is None else ignore_index

    with _clear_not_found(name_or_path):
        try:
            raw = _load_raw(name_or_path, split, streaming, config_name, revision, **load_kwargs)
        except ValueError as error:
            if "split" not in str(error).lower() and "corresponds to no data" not in str(error):
                raise
            raise ValueError(
                f"The dataset '{name_or_path}' has no data in split '{split}' ({error}). Name one of its splits with "
                "data (--train_split / --eval_split, or no evaluation: --eval_split none)."
            ) from None
    if not streaming and len(raw) == 0:
        raise ValueError(f"Split '{split}' of the dataset '{name_or_path}' holds no rows: name a split with data.")
    columns = list(raw.features) if raw.features is not None else list(next(iter(raw)))
    image_column = _pick(columns, image_column, IMAGE_COLUMNS, "image", name_or_path)
    label_column = _pick(columns, label_column, LABEL_COLUMNS, "label", name_or_path)
    id2label = find_id2label(name_or_path, raw.features, label_column, id2label, preset, revision)
    if id2label is not None and num_labels is not None and len(id2label) != num_labels:
        raise ValueError(f"num_labels={num_labels} but {name_or_path} names {len(id2label)} classes.")
    num_labels = len(id2label) if id2label is not None else num_labels

    raw = raw.select_columns([image_column, label_column])
    raw = (
        raw.rename_columns({image_column: "image", label_column: "label"})
        if image_column != "image" or label_column != "label"
        else raw
    )
    raw = raw.cast_column("image", Image(decode=False)).cast_column("label", Image(decode=False))
    lut = label_lookup_table(ignore_index, bool(reduce_labels), label_mapping)
    decoder = SegmentationDecoder(num_labels, ignore_index, lut, transform, skip_corrupt=streaming)
    if not streaming:
        raw = raw.add_column("row", np.arange(len(raw)))
        raw.set_transform(decoder)
        return raw
    if shuffle_buffer_size:
        raw = raw.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if raw.n_shards < world_size:
        logger.warning(
            f"The stream has {raw.n_shards} shard(s) for {world_size} processes: every process will read all of it "
            "and keep its part. Store the dataset in at least as many files as processes."
        )
    return raw.map(decoder, batched=True, batch_size=16, with_indices=True, remove_columns=["image", "label"])
