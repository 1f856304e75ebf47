"""Evaluate a trained model on a split, optionally with flip, multi-scale and sliding-window testing (the same
options as `lad-hf evaluate`).

    accelerate launch --num_processes 4 scripts/evaluate.py --config configs/cityscapes_deeplabv3_r18_distill.yaml \
        --model_name_or_path runs/cityscapes_deeplabv3_r18_distill --output_dir runs/eval \
        --eval_mode original --per_device_eval_batch_size 1 --sliding_window --window_size 512 1024 --flip
"""

import sys

from lad_hf.commands import evaluate


def main() -> None:
    evaluate.main(sys.argv[1:], prog="scripts/evaluate.py")


if __name__ == "__main__":
    main()
