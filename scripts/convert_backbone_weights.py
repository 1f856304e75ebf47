"""Turn the ImageNet checkpoint of an STDC or HRNet backbone, as its authors' code saves it, into a transformers
backbone folder that lad_hf's models load with `use_pretrained_backbone=True`.

    python scripts/convert_backbone_weights.py stdc1 STDCNet813M_73.91.tar weights/stdc1-imagenet
    python scripts/convert_backbone_weights.py hrnet-w18 hrnetv2_w18_imagenet_pretrained.pth weights/hrnet-w18-imagenet
    lad-hf train --config configs/cityscapes_stdc1_baseline.yaml --backbone weights/stdc1-imagenet \
        --use_pretrained_backbone

lad_hf's STDC and HRNet modules are named as in STDC-Seg's and HRNet's code, so the backbone's weights are taken
key for key (a leading `module.` dropped); the classification head's (STDC's `conv_last`, `fc`, `linear`; HRNet's
`incre_modules`, `final_layer`, `classifier` ...) are left out. Every backbone weight must be found with its shape.
"""

import argparse
import sys

import torch

from lad_hf import HrnetBackbone, HrnetConfig, StdcBackbone, StdcConfig
from lad_hf.models.hrnet.configuration_hrnet import HRNET_PRESETS
from lad_hf.models.stdc.configuration_stdc import STDC_PRESETS


def convert(name: str, checkpoint: dict, output_dir: str) -> None:
    if name in STDC_PRESETS:
        backbone = StdcBackbone(StdcConfig(**STDC_PRESETS[name]))
    elif name in HRNET_PRESETS:
        backbone = HrnetBackbone(HrnetConfig(**HRNET_PRESETS[name]))
    else:
        raise ValueError(f"Unknown backbone {name!r}: one of {sorted({**STDC_PRESETS, **HRNET_PRESETS})}.")
    weights = checkpoint.get("state_dict", checkpoint)
    weights = {key.removeprefix("module."): value for key, value in weights.items()}
    expected = backbone.state_dict()
    missing = [key for key in expected if key not in weights]
    wrong = [key for key in expected if key in weights and weights[key].shape != expected[key].shape]
    if missing or wrong:
        raise ValueError(
            f"The checkpoint is not an ImageNet {name}: missing {missing[:5]} ({len(missing)} in all), other shapes "
            f"for {wrong[:5]}."
        )
    backbone.load_state_dict({key: weights[key] for key in expected})
    backbone.save_pretrained(output_dir)
    print(f"{name}: {len(expected)} tensors taken, {len(weights) - len(expected)} left out; saved in {output_dir}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone", help=f"one of {sorted({**STDC_PRESETS, **HRNET_PRESETS})}")
    parser.add_argument("checkpoint", help="the authors' .tar / .pth file")
    parser.add_argument("output_dir")
    args = parser.parse_args(argv)
    try:
        convert(args.backbone, torch.load(args.checkpoint, map_location="cpu", weights_only=True), args.output_dir)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
