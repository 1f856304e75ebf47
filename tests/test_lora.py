"""The DINOv2 segmenter (linear head) and its LoRA distillation from a LAD teacher."""

import pytest
import torch
from conftest import random_samples, tiny_dinov2, tiny_lad_seg_config, trainer_args
from peft import PeftModel

from lad_hf import (
    DistillationConfig,
    DistillationTrainer,
    LabelNoiser,
    LadSegConfig,
    LadSegForSemanticSegmentation,
    add_label_channel,
    apply_lora,
    dinov2_lora_config,
)


def dinov2_segmenter() -> LadSegForSemanticSegmentation:
    return LadSegForSemanticSegmentation(LadSegConfig(backbone=tiny_dinov2(), decode_head="linear", num_labels=3))


def test_linear_head_reads_the_last_layers_and_upsamples_to_any_input_size():
    model = dinov2_segmenter().eval()
    assert model.config.backbone_config.out_features == ["stage1", "stage2"]  # the last (up to) 4 layers
    assert model.auxiliary_head is None
    assert model.decode_head.norm.num_features == 2 * tiny_dinov2().hidden_size  # BN over the concatenation
    for size in [(32, 32), (30, 37)]:  # 30 x 37 is snapped to 32 x 36 (patch 4), the logits come back at 30 x 37
        assert model(torch.randn(2, 3, *size)).logits.shape == (2, 3, *size)
    with pytest.raises(ValueError, match="has no auxiliary head"):
        LadSegConfig(backbone=tiny_dinov2(), decode_head="linear", use_auxiliary_head=True)


def test_lora_targets_the_backbone_attention_only():
    model = apply_lora(dinov2_segmenter(), dinov2_lora_config(r=2, alpha=4))
    adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in model.named_modules() if name.endswith(".lora_A")}
    assert adapted == {
        f"base_model.model.backbone.encoder.layer.{i}.attention.{p}"
        for i in range(2)
        for p in ("q_proj", "k_proj", "v_proj", "o_proj")
    }
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in name or "decode_head.modules_to_save" in name for name in trainable)
    assert any("decode_head.modules_to_save" in name for name in trainable)


def test_lora_targets_that_match_nothing_name_the_layers():
    config = dinov2_lora_config(target_modules=r"backbone\..*\.attention\.(query|value)")
    with pytest.raises(ValueError, match="match no layer") as error:
        apply_lora(dinov2_segmenter(), config)
    assert "backbone.encoder.layer.N.attention.q_proj" in str(error.value)


def test_lora_distillation_from_a_lad_teacher_trains_adapters_and_head_only(tmp_path, caplog):
    teacher = add_label_channel(LadSegForSemanticSegmentation(tiny_lad_seg_config()), LabelNoiser(3)).eval()
    base = dinov2_segmenter()
    base.save_pretrained(tmp_path / "base")
    frozen = {name: p.detach().clone() for name, p in base.named_parameters() if not name.startswith("decode_head")}
    head = sum(p.numel() for p in base.decode_head.parameters())
    args = trainer_args(
        DistillationConfig, tmp_path / "run", max_steps=3, per_device_train_batch_size=4, learning_rate=0.01
    )
    trainer = DistillationTrainer(
        model=base,
        teacher_model=teacher,
        args=args,
        train_dataset=random_samples(),
        peft_config=dinov2_lora_config(r=2),
    )
    trainable, total = trainer.model.get_nb_trainable_parameters()
    lora = sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" in n)
    assert trainable == lora + head < total / 4
    assert f"Student with adapters: {trainable:,} of {total:,} parameters train" in caplog.text
    trainer.train()

    # The backbone's own weights did not move; the adapters did.
    student = trainer.model
    weights = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in student.named_parameters()}
    assert all(torch.equal(weights[name], value) for name, value in frozen.items())
    assert any(p.abs().sum() > 0 for n, p in student.named_parameters() if "lora_B" in n)

    # Saving writes the adapter (with the head) only.
    trainer.save_model(str(tmp_path / "adapter"))
    saved = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= saved and "model.safetensors" not in saved

    images = torch.randn(2, 3, 32, 32)
    student.eval()
    with torch.no_grad():
        adapted = student(pixel_values=images).logits
        loaded = PeftModel.from_pretrained(
            LadSegForSemanticSegmentation.from_pretrained(tmp_path / "base"), tmp_path / "adapter"
        ).eval()
        torch.testing.assert_close(loaded(pixel_values=images).logits, adapted)
        merged = student.merge_and_unload()
        assert not isinstance(merged, PeftModel)
        torch.testing.assert_close(merged(pixel_values=images).logits, adapted, atol=1e-5, rtol=1e-4)
