"""Print the parameter counts of the paper's models as lad_hf builds them (no download), next to the paper's.

python scripts/count_parameters.py --num_labels 19
"""

import argparse

from lad_hf import LadSegConfig, LadSegForSemanticSegmentation


# Parameter counts with the auxiliary head, 19 classes (Cityscapes), as the paper reports them.
PAPER_MILLIONS = {("aspp", "resnet-18"): 13.6, ("psp", "resnet-18"): 12.9, ("aspp", "resnet-101"): 61.1}
MODELS = [
    ("aspp", "resnet-18"),
    ("psp", "resnet-18"),
    ("fcn", "resnet-18"),
    ("ocr", "resnet-18"),
    ("aspp", "resnet-101"),
    ("psp", "resnet-101"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_labels", type=int, default=19)
    args = parser.parse_args()
    print(f"{'head':<6}{'backbone':<12}{'lad_hf':>10}{'paper':>10}")
    for head, backbone in MODELS:
        config = LadSegConfig(backbone=backbone, decode_head=head, num_labels=args.num_labels)
        model = LadSegForSemanticSegmentation(config)
        paper = PAPER_MILLIONS.get((head, backbone))
        paper_text = f"{paper:.1f}M" if paper and args.num_labels == 19 else "-"
        print(f"{head:<6}{backbone:<12}{model.num_parameters() / 1e6:>9.2f}M{paper_text:>10}")


if __name__ == "__main__":
    main()
