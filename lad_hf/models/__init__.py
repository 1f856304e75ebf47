"""The models lad_hf owns, one folder per family as in transformers (configuration + modeling): the LadSeg heads, and
the STDC and HRNet backbones; the input stems that read a LAD teacher's label; the losses the models compute."""

from .hrnet import HrnetBackbone, HrnetConfig
from .lad_seg import LadSegConfig, LadSegForSemanticSegmentation, LadSegOutput, LadSegPreTrainedModel
from .stdc import StdcBackbone, StdcConfig


__all__ = [
    "HrnetBackbone",
    "HrnetConfig",
    "LadSegConfig",
    "LadSegForSemanticSegmentation",
    "LadSegOutput",
    "LadSegPreTrainedModel",
    "StdcBackbone",
    "StdcConfig",
]
