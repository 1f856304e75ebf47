"""The arguments of the `lad-hf` commands: dataclasses read by `HfArgumentParser`, from a flat YAML recipe
(`--config`) and the command line, the command line winning."""

import argparse
import difflib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from ..label_channel.noising import LabelNoiser
from ..trainers.distillation_config import DistillationConfig
from ..trainers.lad_teacher_config import LadTeacherConfig
from ..trainers.self_distillation_config import SelfDistillationConfig


__all__ = [
    "DataArguments",
    "InferenceArguments",
    "LabelChannelArguments",
    "LoraArguments",
    "ModelArguments",
    "PredictArguments",
    "parse_arguments",
]


@dataclass
class ModelArguments:
    """The model to train: a transformers segmentation model to start from, or a lad_hf model built from options."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A segmentation model to start from (Hub id or local folder): any transformers semantic-"
            "segmentation model or a saved lad_hf model. Its head is replaced when the class count differs. "
            "Without it, a LadSeg model is built from backbone / decode_head."
        },
    )
    backbone: str = field(
        default="resnet-18",
        metadata={
            "help": "LadSeg backbone: resnet-18/34/50/101 (built without download), or a Hub id such as "
            "microsoft/resnet-18 (with use_pretrained_backbone for its ImageNet weights)."
        },
    )
    use_pretrained_backbone: bool = field(
        default=False, metadata={"help": "Load the backbone's pretrained weights from its Hub id."}
    )
    decode_head: str = field(
        default="aspp", metadata={"help": "LadSeg head: fcn, psp (PSPNet), aspp (DeepLabV3) or ocr (OCRNet)."}
    )
    output_stride: int | None = field(
        default=None,
        metadata={
            "help": "8, 16 or 32 for LadSeg ResNet backbones (default 8); with model_name_or_path, the model's own "
            "output_stride option (MobileNetV2's DeepLabV3: 8 or 16)."
        },
    )
    decode_channels: int | None = field(default=None, metadata={"help": "Width of the decode head (paper's)."})


@dataclass
class LabelChannelArguments:
    """`train-teacher`: the teacher's label channel. The noiser's settings are recorded in the teacher's config, so
    that distillation gives the teacher its label exactly as it was trained."""

    label_noise_alpha: float = field(
        default=0.01, metadata={"help": "Pixel-wise noise level alpha of the label noising module (paper Eq. 5)."}
    )
    label_class_noise: bool = field(
        default=True,
        metadata={"help": "Random class codes per image (the paper). False: fixed codes, see label_fixed_codes."},
    )
    label_fixed_codes: str = field(
        default="standardized",
        metadata={
            "help": "Class codes without class noise: 'standardized' (paper Table 9) or 'official' ((k-11)/10)."
        },
    )
    label_ignore_encoding: str = field(
        default="class", metadata={"help": "Ignore pixels: 'class' (a random code of their own) or 'zero'."}
    )
    label_scale: float = field(
        default=1.0,
        metadata={
            "help": "Multiplier of the label channel (a remedy for a teacher that ignores it; lad_hf's option, the "
            "official code uses 100). Small prototypes found unit-scale teachers ignoring the channel."
        },
    )
    label_stem_channels: int | None = field(
        default=None,
        metadata={
            "help": "Read the label channel with a separate stem of this width (lad_hf's option); default: one more "
            "channel of the input convolution, as in the paper."
        },
    )

    def __post_init__(self):
        self.label_noiser(num_labels=1, ignore_index=255)  # LabelNoiser checks its settings: fail before any work

    def label_noiser(self, num_labels: int, ignore_index: int) -> LabelNoiser:
        """The label noising module these options describe."""
        return LabelNoiser(
            num_labels,
            alpha=self.label_noise_alpha,
            ignore_index=ignore_index,
            class_noise=self.label_class_noise,
            scale=self.label_scale,
            fixed_codes=self.label_fixed_codes,
            ignore_encoding=self.label_ignore_encoding,
        )


@dataclass
class LoraArguments:
    """`distill`: train the student through LoRA adapters (peft)."""

    lora_r: int | None = field(
        default=None,
        metadata={
            "help": "Train the student through LoRA adapters of this rank (peft), the head in full; the run saves the "
            "adapter, and the base model in output_dir/base_model. Default targets: DINOv2's attention."
        },
    )
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scaling numerator)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: str | None = field(
        default=None,
        metadata={"help": "Regex of the module names to adapt (default: the backbone's attention projections)."},
    )


@dataclass
class DataArguments:
    """The dataset and its transforms."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A Hub dataset id, a preset (cityscapes, ade20k, pascal_voc_aug, coco_stuff_10k, "
            "coco_stuff_164k), a local Hub-format folder or imagefolder, or a parquet file."
        },
    )
    dataset_preset: str | None = field(
        default=None, metadata={"help": "Apply a preset's columns, classes and label mapping to dataset_name."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(
        default="validation", metadata={"help": "Split to evaluate on; empty or 'none' for no evaluation."}
    )
    image_column: str | None = field(default=None, metadata={"help": "Image column (found if not given)."})
    label_column: str | None = field(default=None, metadata={"help": "Label-map column (found if not given)."})
    streaming: bool = field(default=False, metadata={"help": "Stream the training split (needs max_steps)."})
    shuffle_buffer_size: int | None = field(default=None, metadata={"help": "Shuffle buffer of a streamed split."})
    crop_size: list[int] | None = field(
        default=None,
        metadata={
            "help": "Training crop: height width (default: 512 512, or the images' own size where they are smaller "
            "on both sides)."
        },
    )
    scale_range: list[float] = field(
        default_factory=lambda: [0.5, 2.0], metadata={"help": "Random rescale ratios of training: low high."}
    )
    eval_size: list[int] | None = field(
        default=None,
        metadata={"help": "Evaluation size: height width (default: crop_size); see eval_mode."},
    )
    eval_mode: str = field(
        default="resize",
        metadata={
            "help": "Evaluation images: 'resize' to eval_size, 'pad' to it, or 'original' (full size, batch size 1; "
            "for sliding-window or multi-scale inference)."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N samples only."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N samples only."})

    def __post_init__(self):
        for name, meaning in (
            ("crop_size", "height width"),
            ("eval_size", "height width"),
            ("scale_range", "low high"),
        ):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, list | tuple) or len(value) != 2):
                raise ValueError(f"{name} takes two numbers, {meaning} (in YAML: [512, 1024]); got {value!r}.")
        if self.eval_mode not in ("resize", "pad", "original"):
            raise ValueError(f"eval_mode must be 'resize', 'pad' or 'original', got {self.eval_mode!r}.")
        if self.eval_split is not None and self.eval_split.lower() in ("", "none"):
            self.eval_split = None


@dataclass
class InferenceArguments:
    """Test-time options of `evaluate` and `predict`."""

    flip: bool = field(default=False, metadata={"help": "Average with the horizontally flipped image."})
    scales: list[float] = field(
        default_factory=lambda: [1.0],
        metadata={"help": "Multi-scale testing: image scales to average, e.g. 0.75 1 1.25."},
    )
    sliding_window: bool = field(
        default=False, metadata={"help": "Sliding-window inference with window_size crops (for large images)."}
    )
    window_size: list[int] | None = field(
        default=None, metadata={"help": "Sliding window: height width (default: crop_size)."}
    )
    window_stride: list[int] | None = field(
        default=None, metadata={"help": "Sliding window stride: height width (default: 2/3 of the window)."}
    )

    def __post_init__(self):
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be positive numbers, got {self.scales}.")
        for name in ("window_size", "window_stride"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or min(value) < 1):
                raise ValueError(f"{name} takes two positive numbers, height width; got {value}.")

    @property
    def is_plain(self) -> bool:
        return not self.flip and self.scales == [1.0] and not self.sliding_window


@dataclass
class PredictArguments:
    """What `predict` reads and writes."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "The model (Hub id or local folder)."})
    inputs: list[str] = field(default_factory=list, metadata={"help": "Image files or folders of images."})
    output_dir: str = field(default="predictions", metadata={"help": "Where the PNGs go."})
    image_size: list[int] | None = field(
        default=None, metadata={"help": "Resize images to height width first (default: their own size)."}
    )
    overlay_alpha: float = field(default=0.5, metadata={"help": "Opacity of the class colours in the overlays."})
    device: str = field(default="cpu", metadata={"help": "Device to run on, e.g. cpu or cuda."})


def options_of_all_commands() -> set[str]:
    """The options of every lad-hf training and evaluation command: the keys a recipe may hold."""
    dataclass_types = (
        ModelArguments,
        DataArguments,
        InferenceArguments,
        PredictArguments,
        LabelChannelArguments,
        LoraArguments,
        LadTeacherConfig,
        DistillationConfig,
        SelfDistillationConfig,
    )
    return {f.name for dtype in dataclass_types for f in fields(dtype) if f.init}


def _closest(key: str, valid: list[str], prefix: str = "") -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f"; did you mean '{prefix}{match[0]}'?" if match else "; --help lists the valid ones."


def parse_arguments(dataclass_types: tuple, argv: list[str] | None, prog: str, description: str) -> tuple:
    """Parse `dataclass_types` from `--config recipe.yaml` and the command line (which overrides the recipe).

    The command line takes the options of `dataclass_types` only. A recipe may also hold other commands' options
    (see `options_of_all_commands`), which are left alone; any other key is refused, naming the closest valid one.

    Returns the dataclass instances, then the dict of all the values they were built from, which can build another
    `TrainingArguments` class from the same values.
    """
    usage = f"{prog} [--config recipe.yaml] [--OPTION VALUE ...]   (--help lists the options)"
    # No abbreviations: `--max_step 5` is refused (with a did-you-mean), not read as `--max_steps 5`.
    parser = HfArgumentParser(dataclass_types, prog=prog, description=description, usage=usage, allow_abbrev=False)
    parser.add_argument("--config", default=None, help="A flat YAML recipe whose keys are the options below.")
    valid = sorted({f.name for dtype in dataclass_types for f in fields(dtype) if f.init})
    config_path = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    config_path.add_argument("--config", default=None)
    config_file = config_path.parse_known_args(argv)[0].config
    given = {}
    if config_file is not None:
        if not Path(config_file).is_file():
            parser.error(f"--config {config_file}: no such file (looked for {os.path.abspath(config_file)}).")
        given = yaml.safe_load(Path(config_file).read_text()) or {}
        if not isinstance(given, dict):
            parser.error(f"{config_file}: a recipe is a flat mapping of option names to values.")
        every_option = sorted(options_of_all_commands())
        for key in given:
            if key not in every_option:
                parser.error(f"{config_file}: unknown key '{key}'{_closest(key, every_option)}")
        # One recipe serves several commands (distill, then evaluate on its dataset): each takes its own options.
        parser.set_defaults(**{key: value for key, value in given.items() if key in valid})
    namespace, unknown = parser.parse_known_args(argv)
    for option in unknown:
        if option.startswith("--"):
            name = option[2:].split("=")[0]
            parser.error(f"unknown option '{option}'{_closest(name, valid, prefix='--')}")
    if unknown:
        parser.error(f"unexpected arguments {unknown}")
    values = {k: v for k, v in vars(namespace).items() if k != "config"}
    try:
        outputs = tuple(
            dtype(**{f.name: values[f.name] for f in fields(dtype) if f.init}) for dtype in dataclass_types
        )
    except (ValueError, TypeError) as error:  # a value out of range, or of the wrong shape (a number for a list)
        parser.error(str(error))
    return (*outputs, values)
