"""SDES self-distillation: the experts train and distil, and are gone from the saved student."""

import pytest
import torch
from conftest import random_samples, tiny_lad_seg_config, trainer_args

from lad_hf import LadSegForSemanticSegmentation
from lad_hf.sdes import SelfDistillationConfig, SelfDistillationTrainer, feature_ensemble


@pytest.mark.parametrize("head", ["aspp", "psp"])
def test_sdes_trains_with_experts_and_saves_the_student_alone(tmp_path, head):
    student = LadSegForSemanticSegmentation(tiny_lad_seg_config(head))
    baseline_parameters = student.num_parameters()
    args = trainer_args(
        SelfDistillationConfig, tmp_path, max_steps=3, per_device_train_batch_size=4, logging_steps=1, num_experts=2
    )
    trainer = SelfDistillationTrainer(model=student, args=args, train_dataset=random_samples())
    experts_before = [p.detach().clone() for p in trainer.model.experts.parameters()]
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss_dped" in h]
    assert logs and all(h["loss_dped"] >= 0 and h["loss_dfed"] >= 0 and h["loss_experts"] > 0 for h in logs)
    assert any(not torch.equal(a, b) for a, b in zip(experts_before, trainer.model.experts.parameters(), strict=True))

    trainer.save_model(str(tmp_path / "student"))
    saved = LadSegForSemanticSegmentation.from_pretrained(tmp_path / "student").eval()
    assert saved.num_parameters() == baseline_parameters  # the experts and the adapter are not deployed
    images = torch.randn(2, 3, 32, 32)
    student.eval()
    with torch.no_grad():
        torch.testing.assert_close(saved(pixel_values=images).logits, student(pixel_values=images).logits)
        trainer.model.eval()
        torch.testing.assert_close(trainer.model(images).logits, student(pixel_values=images).logits)


def test_feature_ensemble_weights_channels_by_their_importance():
    strong, weak = torch.full((1, 2, 3, 3), 2.0), torch.zeros(1, 2, 3, 3)
    weak[:, 1] = 5.0  # the second expert is the more active one on channel 1
    ensemble = feature_ensemble([strong, weak])
    assert ensemble[0, 0].mean() > 1.0 and ensemble[0, 1].mean() > 3.5
    torch.testing.assert_close(feature_ensemble([strong, strong]), strong)


def test_sdes_needs_a_head_it_can_copy():
    with pytest.raises(ValueError, match="SDES builds its experts"):
        SelfDistillationTrainer(
            model=LadSegForSemanticSegmentation(tiny_lad_seg_config("ocr")),
            args=SelfDistillationConfig(output_dir="unused", report_to="none", use_cpu=True),
        )
