"""Writes what lad_hf 0.1 saved, for `tests/test_compat.py`: model folders (a student, a LAD teacher with a label stem,
OCRNet on HRNet, a widened Segformer teacher) with their logits on fixed inputs, and the checkpoints of
distillation runs stopped after 2 of 4 steps (FAKD, CIRKD, MasKD) with the methods' training state, and the public
names of every module (`names.json`).

Run with lad_hf 0.1.0 (commit f8795fb) first on the path, from outside the checkout (`OLD`: a checkout of f8795fb,
`NEW`: this one):
    cd /tmp && PYTHONPATH=$OLD:$NEW/tests python $NEW/tests/data/lad_hf_0.1/make.py
"""

import importlib
import json
import pkgutil
import shutil
import sys
from pathlib import Path

import torch
from conftest import random_samples, tiny_hrnet, tiny_lad_seg_config, tiny_segformer, trainer_args
from safetensors.torch import save_file

import lad_hf
from lad_hf import (
    DistillationConfig,
    DistillationTrainer,
    LabelNoiser,
    LadSegConfig,
    LadSegForSemanticSegmentation,
    add_label_channel,
    build_teacher_inputs,
)


HERE = Path(__file__).parent
assert (Path(lad_hf.__file__).parent / "kd_methods.py").exists(), f"lad_hf 0.1 must come first, not {lad_hf.__file__}"


def models() -> dict:
    torch.manual_seed(0)
    student = LadSegForSemanticSegmentation(tiny_lad_seg_config("aspp"))
    teacher = add_label_channel(
        LadSegForSemanticSegmentation(tiny_lad_seg_config("psp")), LabelNoiser(3), label_stem_channels=4
    )
    ocrnet = LadSegForSemanticSegmentation(
        LadSegConfig(backbone=tiny_hrnet(), decode_head="ocr", num_labels=3, decode_channels=8, ocr_key_channels=4)
    )
    segformer = add_label_channel(tiny_segformer(), LabelNoiser(3, alpha=0.03, scale=100.0))
    return {"student": student, "lad_teacher": teacher, "ocrnet": ocrnet, "segformer_teacher": segformer}


def save_models() -> None:
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 3, (2, 32, 32), generator=generator)
    tensors = {"pixel_values": pixel_values, "labels": labels}
    for name, model in models().items():
        model.eval().save_pretrained(HERE / name)
        inputs = pixel_values
        if getattr(model.config, "label_noiser", None) is not None:
            noiser = LabelNoiser.from_config(model.config)
            inputs = build_teacher_inputs(pixel_values, labels, noiser, generator=torch.Generator().manual_seed(1))
            tensors[f"{name}.inputs"] = inputs
        with torch.no_grad():
            tensors[f"{name}.logits"] = model(pixel_values=inputs).logits.contiguous()
    save_file(tensors, HERE / "logits.safetensors")


# The interrupted runs' settings, which `tests/test_compat.py` reads back (`interrupted/settings.json`).
RUN_SETTINGS = dict(
    max_steps=4,
    per_device_train_batch_size=4,
    save_strategy="steps",
    save_steps=2,
    maskd_mask_steps=3,
    cirkd_pixel_memory_size=16,
    cirkd_region_memory_size=4,
    cirkd_pixel_contrast_size=8,
    cirkd_region_contrast_size=2,
)


def save_checkpoints() -> None:
    for kd_loss in ("fakd_cwd", "cirkd", "maskd"):
        torch.manual_seed(0)
        teacher = add_label_channel(LadSegForSemanticSegmentation(tiny_lad_seg_config("psp")), LabelNoiser(3))
        student = LadSegForSemanticSegmentation(tiny_lad_seg_config("aspp"))
        output_dir = HERE / "interrupted" / kd_loss
        args = trainer_args(DistillationConfig, output_dir, kd_loss=kd_loss, **RUN_SETTINGS)
        DistillationTrainer(
            model=student, teacher_model=teacher.eval(), args=args, train_dataset=random_samples()
        ).train()
        # The checkpoint of step 2 is what a run interrupted there left; the run's end is kept for comparison.
        shutil.rmtree(output_dir / "checkpoint-4")
        student.save_pretrained(output_dir / "uninterrupted")


def save_names() -> None:
    names = {"lad_hf": sorted(lad_hf.__all__)}
    for info in pkgutil.walk_packages(lad_hf.__path__, "lad_hf."):
        module = importlib.import_module(info.name)
        public = getattr(module, "__all__", None)
        if public is None:
            public = [
                n
                for n, v in vars(module).items()
                if not n.startswith("_") and getattr(v, "__module__", None) == info.name
            ]
        names[info.name] = sorted(public)
    (HERE / "names.json").write_text(json.dumps(names, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    shutil.rmtree(HERE / "interrupted", ignore_errors=True)
    save_names()
    save_models()
    save_checkpoints()
    (HERE / "interrupted" / "settings.json").write_text(json.dumps(RUN_SETTINGS, indent=1) + "\n")
    print("written to", HERE, file=sys.stderr)
