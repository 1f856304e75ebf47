"""HRNetV2 W18-Small / W18 / W48 as a transformers backbone."""

from .configuration_hrnet import HrnetConfig
from .modeling_hrnet import HrnetBackbone


__all__ = ["HrnetBackbone", "HrnetConfig"]
