"""Train a supervised baseline of any segmentation model (the same options as `lad-hf train`).

    accelerate launch --num_processes 4 scripts/train.py --config configs/cityscapes_deeplabv3_r18_baseline.yaml

Any recipe key can be overridden: `... --config X.yaml --max_steps 1000 --output_dir runs/short`.
"""

import sys

from lad_hf.commands import train


def main() -> None:
    train.main(sys.argv[1:], prog="scripts/train.py")


if __name__ == "__main__":
    main()
