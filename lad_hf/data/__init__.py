"""Segmentation data: loading from the Hub or local files, the paper's dataset presets, and transforms."""

from .loading import dataset_id2label, find_id2label, label_lookup_table, load_segmentation_dataset
from .presets import PRESETS, SegmentationPreset
from .transforms import SegmentationCollator, SegmentationTransforms


__all__ = [
    "PRESETS",
    "SegmentationCollator",
    "SegmentationPreset",
    "SegmentationTransforms",
    "dataset_id2label",
    "find_id2label",
    "label_lookup_table",
    "load_segmentation_dataset",
]


def __getattr__(name: str):  # the digit-scenes benchmark moved to lad_hf.benchmark
    from .._compat import moved_attribute

    return moved_attribute(__name__, name)
