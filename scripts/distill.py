"""Distil a frozen teacher (a LAD teacher or a conventional one) into an image-only student with CWD (the same
options as `lad-hf distill`).

    accelerate launch --num_processes 4 scripts/distill.py --config configs/cityscapes_deeplabv3_r18_distill.yaml

Any recipe key can be overridden: `... --config X.yaml --teacher_model_name_or_path user/lad-teacher`.
"""

import sys

from lad_hf.commands import distill


def main() -> None:
    distill.main(sys.argv[1:], prog="scripts/distill.py")


if __name__ == "__main__":
    main()
