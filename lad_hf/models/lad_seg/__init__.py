"""LadSeg: the paper's FCN, PSPNet, DeepLabV3, OCRNet and STDC-Seg heads on transformers backbones."""

from .configuration_lad_seg import LadSegConfig
from .modeling_lad_seg import LadSegForSemanticSegmentation, LadSegOutput, LadSegPreTrainedModel


__all__ = ["LadSegConfig", "LadSegForSemanticSegmentation", "LadSegOutput", "LadSegPreTrainedModel"]
