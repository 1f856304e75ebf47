"""SDES self-distillation: the experts train and distil, and are gone from the saved student."""

import gc

import pytest
import torch
from conftest import random_samples, tiny_lad_seg_config, trainer_args

from lad_hf import LadSegForSemanticSegmentation
from lad_hf.distillation.sdes import feature_ensemble
from lad_hf.trainers import SelfDistillationTrainer
from lad_hf.trainers.self_distillation_config import SelfDistillationConfig


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


def sdes_trainer(tmp_path, **overrides):
    # No dropout: the same batch gives the same forward, so that gradients of differently weighted losses compare.
    student = LadSegForSemanticSegmentation(tiny_lad_seg_config("aspp", dropout=0.0, aspp_dropout=0.0))
    args = trainer_args(SelfDistillationConfig, tmp_path, num_experts=2, **overrides)
    return student, SelfDistillationTrainer(model=student, args=args)


def test_dped_target_is_the_experts_averaged_soft_prediction(tmp_path):
    _, trainer = sdes_trainer(tmp_path, sdes_temperature=2.0)
    batch = random_samples(2)
    labels = torch.stack([s["labels"] for s in batch])
    labels[:, :4] = 255  # unlabelled rows are left out of the average
    inputs = {"pixel_values": torch.stack([s["pixel_values"] for s in batch]), "labels": labels}
    trainer.model.train()
    _, outputs = trainer.compute_loss(trainer.model, inputs, return_outputs=True)

    tau = 2.0
    ensemble = torch.stack([(z / tau).softmax(1) for z in outputs["expert_logits"]]).mean(0)
    log_student = (outputs.logits / tau).log_softmax(1)
    kl = (ensemble * (ensemble.log() - log_student)).sum(1)  # (B, h, w) at the logits' resolution
    valid = torch.nn.functional.interpolate(labels[:, None].float(), size=kl.shape[-2:], mode="nearest")[:, 0] != 255
    expected = (kl * valid).sum() / valid.sum() * tau**2
    torch.testing.assert_close(trainer._loss_components["loss_dped"][-1], expected.detach(), rtol=1e-5, atol=1e-6)


def test_sdes_gradients_reach_the_right_modules(tmp_path):
    student, trainer = sdes_trainer(tmp_path)
    model = trainer.model.train()
    batch = random_samples(4)
    inputs = {key: torch.stack([s[key] for s in batch]) for key in ("pixel_values", "labels")}

    def gradients(dped_weight: float, dfed_weight: float) -> dict[str, torch.Tensor]:
        trainer.args.dped_weight, trainer.args.dfed_weight = dped_weight, dfed_weight
        model.zero_grad()
        trainer.compute_loss(model, inputs).backward()
        return {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}

    base, dped, dfed = gradients(0.0, 0.0), gradients(1.0, 0.0), gradients(0.0, 1.0)

    def changed(grads: dict, prefix: str) -> bool:
        names = [n for n in base if n.startswith(prefix)]
        assert names, prefix
        return any(not torch.allclose(grads[n], base[n], atol=1e-8) for n in names)

    # The experts learn from the labels alone: both distillation targets are detached from them.
    assert not changed(dped, "experts.") and not changed(dfed, "experts.")
    # DPED trains the student (its decoder and encoder), not the adapter.
    assert changed(dped, "student.decode_head.") and changed(dped, "student.backbone.")
    assert not changed(dped, "adapter.")
    # DFED trains the encoder through the adapter, not the student's decoder.
    assert changed(dfed, "adapter.") and changed(dfed, "student.backbone.")
    assert not changed(dfed, "student.decode_head.")


def test_sdes_leaves_no_hook_and_no_growing_memory_on_the_student(tmp_path):
    student = LadSegForSemanticSegmentation(tiny_lad_seg_config("aspp"))
    args = trainer_args(SelfDistillationConfig, tmp_path, max_steps=2, per_device_train_batch_size=4)
    SelfDistillationTrainer(model=student, args=args, train_dataset=random_samples()).train()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in student.modules())

    def live_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if torch.is_tensor(o))

    images = torch.randn(2, 3, 32, 32)
    student.train()
    student(pixel_values=images)  # the first call may create lasting state (none expected)
    before = live_tensors()
    for _ in range(20):
        student(pixel_values=images)
    assert live_tensors() <= before  # nothing kept per call
