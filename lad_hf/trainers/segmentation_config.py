"""Training arguments shared by every lad_hf trainer: segmentation defaults for the `Trainer`."""

import os
from dataclasses import dataclass, field

from transformers import TrainingArguments


__all__ = ["SegmentationConfig"]


@dataclass
class SegmentationConfig(TrainingArguments):
    r"""`TrainingArguments` for semantic segmentation.

    Evaluation defaults to `batch_eval_metrics=True` (mIoU from a streaming confusion matrix, the same in one or
    several processes), DDP to `ddp_find_unused_parameters=False`, `remove_unused_columns=False` (datasets decode
    their columns on the fly), and `accelerator_config.dispatch_batches=False`, so that in several processes each
    one reads its own shards of a streamed dataset.
    """

    ignore_index: int = field(default=255, metadata={"help": "Label id of unlabelled pixels."})
    batch_eval_metrics: bool = field(
        default=True,
        metadata={"help": "Compute the evaluation metrics batch by batch (a streaming confusion matrix)."},
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={
            "help": "Drop dataset columns the model does not take. Off: load_segmentation_dataset decodes the "
            "image and label columns on the fly into pixel_values and labels."
        },
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={"help": "Let DDP look for parameters that got no gradient (slower; needed by few models)."},
    )
    channels_last: bool = field(
        default=False,
        metadata={
            "help": "Keep the model's (and a teacher's) weights and the images in channels-last memory format: "
            "faster convolutions with bf16 or fp16 on recent GPUs."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "The lad-hf commands refuse an output_dir holding a finished run, and resume an unfinished one "
            "from its last checkpoint; with this, they train from scratch over it instead."
        },
    )

    def __post_init__(self):
        if self.accelerator_config is None:
            self.accelerator_config = {"dispatch_batches": False}
        super().__post_init__()
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched > 1 and self.world_size != launched:
            # On a machine without GPUs, TrainingArguments ignores the launcher's processes unless use_cpu=True:
            # every process would train alone on the whole data.
            raise ValueError(
                f"{launched} processes were launched but training would run in {self.world_size}. On a machine "
                "without GPUs pass use_cpu=True (--use_cpu) so that the processes train together over gloo."
            )
