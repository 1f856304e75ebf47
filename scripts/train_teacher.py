"""Train a LAD teacher: noised label channel, dual-path consistency (the same options as `lad-hf train-teacher`).

    accelerate launch --num_processes 4 scripts/train_teacher.py --config configs/cityscapes_deeplabv3_r18_teacher.yaml

Any recipe key can be overridden: `... --config X.yaml --label_noise_alpha 0.03 --output_dir runs/teacher-a03`.
"""

import sys

from lad_hf.commands import train_teacher


def main() -> None:
    train_teacher.main(sys.argv[1:], prog="scripts/train_teacher.py")


if __name__ == "__main__":
    main()
