"""Segmentation data: loading from the Hub or local files, transforms, and the built-in digit-scenes benchmark."""

from .digit_scenes import DIGIT_SCENES_ID2LABEL, build_digit_scenes
from .loading import dataset_id2label, find_id2label, label_lookup_table, load_segmentation_dataset
from .presets import PRESETS, SegmentationPreset
from .transforms import SegmentationCollator, SegmentationTransforms


__all__ = [
    "DIGIT_SCENES_ID2LABEL",
    "PRESETS",
    "SegmentationCollator",
    "SegmentationPreset",
    "SegmentationTransforms",
    "build_digit_scenes",
    "dataset_id2label",
    "find_id2label",
    "label_lookup_table",
    "load_segmentation_dataset",
]
