"""Configuration of STDC backbones (Short-Term Dense Concatenate networks, Fan et al., CVPR 2021)."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.backbone_utils import BackboneConfigMixin


__all__ = ["STDC_PRESETS", "StdcConfig"]


@strict
class StdcConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""Configuration of [`StdcBackbone`]: STDCNet, the backbone of STDC-Seg.

    Two 3x3 stride-2 convolutions (stages 1 and 2: 1/2, 1/4), then three stages (1/8, 1/16, 1/32) of STDC modules:
    each module splits its output width over `block_num` convolutions, the first 1x1 and the others 3x3, each half
    as wide as the one before (the last as wide), and concatenates their outputs (the short-term dense concatenation);
    a stage's first module downsamples with a depthwise 3x3 stride-2 convolution and average-pools its skip.

    Args:
        num_channels (`int`, *optional*, defaults to 3): Input channels.
        base_channels (`int`, *optional*, defaults to 64): Width of stage 2; stage 1 has half, stages 3-5 have 4, 8
            and 16 times it.
        layers (`list[int]`, *optional*, defaults to `(2, 2, 2)`): STDC modules in stages 3, 4 and 5: `(2, 2, 2)` is
            STDC1 (STDCNet813), `(4, 5, 3)` STDC2 (STDCNet1446).
        block_num (`int`, *optional*, defaults to 4): Convolutions per STDC module.
        out_features, out_indices: The stages to return (`stage1` ... `stage5`).
    """

    model_type = "lad_stdc"

    num_channels: int = 3
    base_channels: int = 64
    layers: list[int] | tuple[int, ...] = (2, 2, 2)
    block_num: int = 4

    def __post_init__(self, **kwargs):
        self.layers = list(self.layers)
        self.stage_names = [f"stage{i}" for i in range(1, 6)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        super().__post_init__(**kwargs)

    @property
    def hidden_sizes(self) -> list[int]:
        """The width of each stage."""
        base = self.base_channels
        return [base // 2, base, base * 4, base * 8, base * 16]


# The published networks: STDCNet813 (STDC1) and STDCNet1446 (STDC2).
STDC_PRESETS = {"stdc1": {"layers": [2, 2, 2]}, "stdc2": {"layers": [4, 5, 3]}}
