"""lad_hf: Label Assisted Distillation (LAD) for semantic segmentation, the Hugging Face way."""

from importlib.metadata import PackageNotFoundError, version

from transformers import AutoBackbone, AutoConfig, AutoModelForSemanticSegmentation

from .configuration_hrnet import HrnetConfig
from .configuration_lad_seg import LadSegConfig
from .configuration_stdc import StdcConfig
from .distillation_config import DistillationConfig
from .distillation_trainer import DistillationTrainer
from .label_channel import add_label_channel, build_teacher_inputs
from .labels import check_labels
from .lad_teacher_config import LadTeacherConfig
from .lad_teacher_trainer import LadTeacherTrainer
from .lora import apply_lora, dinov2_lora_config
from .losses import (
    channel_wise_divergence,
    dual_path_consistency,
    noise_stability,
    pixel_wise_divergence,
    segmentation_cross_entropy,
)
from .metrics import SegmentationMetric, predictions_from_logits
from .modeling_hrnet import HrnetBackbone
from .modeling_lad_seg import LadSegForSemanticSegmentation, LadSegOutput, LadSegPreTrainedModel
from .modeling_stdc import StdcBackbone
from .noising import LabelNoiser
from .segmentation_config import SegmentationConfig
from .segmentation_trainer import SegmentationTrainer
from .self_distillation_config import SelfDistillationConfig
from .self_distillation_trainer import SelfDistillationTrainer


try:
    __version__ = version("lad-hf")
except PackageNotFoundError:  # imported from a source tree that was not installed
    __version__ = "0.0.0"

AutoConfig.register(LadSegConfig.model_type, LadSegConfig, exist_ok=True)
AutoModelForSemanticSegmentation.register(LadSegConfig, LadSegForSemanticSegmentation, exist_ok=True)
for _config, _backbone in ((StdcConfig, StdcBackbone), (HrnetConfig, HrnetBackbone)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoBackbone.register(_config, _backbone, exist_ok=True)

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
