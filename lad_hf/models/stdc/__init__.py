"""STDC1 / STDC2 (Fan et al., CVPR 2021) as a transformers backbone."""

from .configuration_stdc import StdcConfig
from .modeling_stdc import StdcBackbone


__all__ = ["StdcBackbone", "StdcConfig"]
