"""Print the parameter counts of the paper's five model families as lad_hf builds them (no download, no memory: on
the meta device), next to the published ones.

python scripts/count_parameters.py --num_labels 19
"""

import argparse

import torch

from lad_hf import HrnetBackbone, HrnetConfig, LadSegConfig, LadSegForSemanticSegmentation
from lad_hf.models.hrnet.configuration_hrnet import HRNET_PRESETS


# (name, head, backbone, published millions at 19 classes, what the published count covers)
MODELS = [
    ("DeepLabV3-R18", "aspp", "resnet-18", 13.6, "LAD paper, with the auxiliary head"),
    ("PSPNet-R18", "psp", "resnet-18", 12.9, "LAD paper, with the auxiliary head"),
    ("FCN-R18", "fcn", "resnet-18", None, ""),
    ("DeepLabV3-R101", "aspp", "resnet-101", 61.1, "LAD paper, with the auxiliary head"),
    ("PSPNet-R101", "psp", "resnet-101", None, ""),
    ("STDC1-Seg", "stdc", "stdc1", 8.4, "STDC paper, deployed"),
    ("STDC2-Seg", "stdc", "stdc2", 12.5, "STDC paper, deployed"),
    ("OCRNet-W18-Small", "ocr", "hrnet-w18-small", None, ""),
    ("OCRNet-W18", "ocr", "hrnet-w18", None, ""),
    ("OCRNet-W48", "ocr", "hrnet-w48", None, ""),
]
# HRNetV2 backbones as HRNet's segmentation code counts them: the backbone and a 1x1 head over its branches.
HRNET_PUBLISHED = {"hrnet-w18-small": 4.0, "hrnet-w18": 9.6, "hrnet-w48": 65.9}


def training_only(model: LadSegForSemanticSegmentation) -> int:
    """Parameters of the heads that only training runs: the auxiliary head (unless OCR reads it) and STDC's detail
    head."""
    heads = [model.detail_head]
    if not model.decode_head.reads_object_regions:
        heads.append(model.auxiliary_head)
    return sum(p.numel() for head in heads if head is not None for p in head.parameters())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_labels", type=int, default=19)
    args = parser.parse_args()
    print(f"{'model':<18}{'lad_hf':>10}{'deployed':>10}{'published':>11}  published count covers")
    for name, head, backbone, published, covers in MODELS:
        with torch.device("meta"):
            model = LadSegForSemanticSegmentation(
                LadSegConfig(backbone=backbone, decode_head=head, num_labels=args.num_labels)
            )
        total = model.num_parameters()
        reference = f"{published:.1f}M" if published and args.num_labels == 19 else "-"
        print(f"{name:<18}{total / 1e6:>9.2f}M{(total - training_only(model)) / 1e6:>9.2f}M{reference:>11}  {covers}")
    print()
    print(f"{'HRNetV2 backbone':<18}{'lad_hf':>10}{'+ 1x1 head':>12}{'published':>11}")
    for name, published in HRNET_PUBLISHED.items():
        with torch.device("meta"):
            backbone = HrnetBackbone(HrnetConfig(**HRNET_PRESETS[name]))
        width = sum(HRNET_PRESETS[name]["stage_channels"][-1])
        head = width * width + 2 * width + width * args.num_labels + args.num_labels  # 1x1 conv, BN, classifier
        total = backbone.num_parameters()
        print(f"{name:<18}{total / 1e6:>9.2f}M{(total + head) / 1e6:>11.2f}M{published:>10.1f}M")


if __name__ == "__main__":
    main()
