"""lad_hf: Label Assisted Distillation (LAD) for semantic segmentation, the Hugging Face way."""

from importlib.metadata import PackageNotFoundError, version

from transformers import AutoBackbone, AutoConfig, AutoModelForSemanticSegmentation

from . import _compat
from .distillation import channel_wise_divergence, dual_path_consistency, noise_stability, pixel_wise_divergence
from .label_channel import LabelNoiser, add_label_channel, build_teacher_inputs
from .lora import apply_lora, dinov2_lora_config
from .metrics import SegmentationMetric, predictions_from_logits
from .models import (
    HrnetBackbone,
    HrnetConfig,
    LadSegConfig,
    LadSegForSemanticSegmentation,
    LadSegOutput,
    LadSegPreTrainedModel,
    StdcBackbone,
    StdcConfig,
)
from .models.losses import segmentation_cross_entropy
from .trainers import (
    DistillationConfig,
    DistillationTrainer,
    LadTeacherConfig,
    LadTeacherTrainer,
    SegmentationConfig,
    SegmentationTrainer,
    SelfDistillationConfig,
    SelfDistillationTrainer,
)
from .utils.labels import check_labels


try:
    __version__ = version("lad-hf")
except PackageNotFoundError:  # imported from a source tree that was not installed
    __version__ = "0.0.0"

AutoConfig.register(LadSegConfig.model_type, LadSegConfig, exist_ok=True)
AutoModelForSemanticSegmentation.register(LadSegConfig, LadSegForSemanticSegmentation, exist_ok=True)
for _config, _backbone in ((StdcConfig, StdcBackbone), (HrnetConfig, HrnetBackbone)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoBackbone.register(_config, _backbone, exist_ok=True)
_compat.install()  # the module paths of lad_hf 0.1 still import, with a FutureWarning

__all__ = [
    "DistillationConfig",
    "DistillationTrainer",
    "HrnetBackbone",
    "HrnetConfig",
    "LabelNoiser",
    "LadSegConfig",
    "LadSegForSemanticSegmentation",
    "LadSegOutput",
    "LadSegPreTrainedModel",
    "LadTeacherConfig",
    "LadTeacherTrainer",
    "SegmentationConfig",
    "SegmentationMetric",
    "SegmentationTrainer",
    "SelfDistillationConfig",
    "SelfDistillationTrainer",
    "StdcBackbone",
    "StdcConfig",
    "__version__",
    "add_label_channel",
    "apply_lora",
    "build_teacher_inputs",
    "channel_wise_divergence",
    "check_labels",
    "dinov2_lora_config",
    "dual_path_consistency",
    "noise_stability",
    "pixel_wise_divergence",
    "predictions_from_logits",
    "segmentation_cross_entropy",
]
