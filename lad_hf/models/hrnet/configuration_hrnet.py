"""Configuration of HRNetV2 backbones (Wang et al., TPAMI 2020), the backbone of OCRNet in the LAD paper."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.backbone_utils import BackboneConfigMixin


__all__ = ["HRNET_PRESETS", "HrnetConfig"]


@strict
class HrnetConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""Configuration of [`HrnetBackbone`]: a stem of two 3x3 stride-2 convolutions (1/4), a stage of bottleneck
    blocks, then stages of 2, 3 and 4 parallel branches (1/4, 1/8, 1/16, 1/32) of basic blocks whose modules exchange
    information across resolutions after each block group.

    Args:
        num_channels (`int`, *optional*, defaults to 3): Input channels.
        stem_channels (`int`, *optional*, defaults to 64): Width of the stem.
        stage_modules (`list[int]`, *optional*): High-resolution modules in each of the 4 stages.
        stage_blocks (`list[list[int]]`, *optional*): Blocks per branch in each stage.
        stage_channels (`list[list[int]]`, *optional*): Width of each branch in each stage (the first stage's is
            the bottlenecks' inner width; they output 4 times it).
        out_features, out_indices: What to return: `stem`, and the last stage's branches `branch1` (1/4) ...
            `branch4` (1/32).

    The defaults are HRNetV2-W18; `HRNET_PRESETS` holds W18-Small, W18 and W48 as mmsegmentation defines them.
    """

    model_type = "lad_hrnet"

    num_channels: int = 3
    stem_channels: int = 64
    stage_modules: list[int] | tuple[int, ...] = (1, 1, 4, 3)
    stage_blocks: list | tuple = ((4,), (4, 4), (4, 4, 4), (4, 4, 4, 4))
    stage_channels: list | tuple = ((64,), (18, 36), (18, 36, 72), (18, 36, 72, 144))

    def __post_init__(self, **kwargs):
        self.stage_modules = list(self.stage_modules)
        self.stage_blocks = [list(blocks) for blocks in self.stage_blocks]
        self.stage_channels = [list(channels) for channels in self.stage_channels]
        if not len(self.stage_modules) == len(self.stage_blocks) == len(self.stage_channels) == 4:
            raise ValueError("HRNet has 4 stages: give 4 stage_modules, stage_blocks and stage_channels.")
        self.stage_names = ["stem", "branch1", "branch2", "branch3", "branch4"]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        super().__post_init__(**kwargs)

    @property
    def hidden_sizes(self) -> list[int]:
        """The width of the stem and of each branch of the last stage."""
        return [self.stem_channels, *self.stage_channels[-1]]


# mmsegmentation's HRNetV2 settings (configs/_base_/models/fcn_hr18.py and the W18-Small / W48 variants).
HRNET_PRESETS = {
    "hrnet-w18-small": {
        "stage_modules": [1, 1, 3, 2],
        "stage_blocks": [[2], [2, 2], [2, 2, 2], [2, 2, 2, 2]],
        "stage_channels": [[64], [18, 36], [18, 36, 72], [18, 36, 72, 144]],
    },
    "hrnet-w18": {
        "stage_modules": [1, 1, 4, 3],
        "stage_blocks": [[4], [4, 4], [4, 4, 4], [4, 4, 4, 4]],
        "stage_channels": [[64], [18, 36], [18, 36, 72], [18, 36, 72, 144]],
    },
    "hrnet-w48": {
        "stage_modules": [1, 1, 4, 3],
        "stage_blocks": [[4], [4, 4], [4, 4, 4], [4, 4, 4, 4]],
        "stage_channels": [[64], [48, 96], [48, 96, 192], [48, 96, 192, 384]],
    },
}
