"""SDES self-distillation: expert decoders, no teacher (the same options as `lad-hf self-distill`).

    accelerate launch --num_processes 4 scripts/self_distill.py --config configs/cityscapes_deeplabv3_r18_sdes.yaml

Any recipe key can be overridden: `... --config X.yaml --num_experts 3 --output_dir runs/sdes-3`.
"""

import sys

from lad_hf.commands import self_distill


def main() -> None:
    self_distill.main(sys.argv[1:], prog="scripts/self_distill.py")


if __name__ == "__main__":
    main()
