"""MasKD (Huang et al., ICLR 2023), `kd_loss="maskd"`, as its segmentation code runs it on the logits: learnable
receptive tokens (8) give soft masks from the teacher's logits; a first stage trains them on the frozen teacher
(`maskd_mask_steps` steps, SGD at 0.1 with polynomial decay: the teacher's cross-entropy through the masks plus a Dice
diversity loss), before the student's first step; the student is then trained on the mask-weighted MSE between its
logits and the teacher's (weight 1, times 0.5). Memory: `T x K` tokens.
"""

import itertools

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers.utils import logging

from ..utils.seeds import content_generator
from .features import to_size
from .objective import DistillationObjective, KDInputs


__all__ = ["MasKDObjective", "MaskTokens", "masked_distillation_loss"]

logger = logging.get_logger(__name__)


def masked_distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, masks: torch.Tensor
) -> torch.Tensor:
    """MasKD's masked distillation: `0.5 * mean over images, masks and channels of sum_hw (m * (s - t))^2 / sum_hw m`.

    Args:
        student_logits (`(B, C, h, w)`): Resized to the teacher's `(H, W)` if needed.
        teacher_logits (`(B, C, H, W)`).
        masks (`(B, T, H, W)`): The receptive tokens' soft masks.
    """
    student_logits = to_size(student_logits, teacher_logits.shape[-2:])
    difference = (student_logits.float() - teacher_logits.float())[:, None] * masks[:, :, None]  # (B, T, C, H, W)
    loss = difference.pow(2).sum((3, 4)) / (masks.sum((2, 3))[..., None] + 1e-5)
    return 0.5 * loss.mean()


class MaskTokens(nn.Module):
    """MasKD's receptive tokens: `T` learnable vectors over the logits' `C` channels; each gives a soft mask
    `sigmoid(token . logits)` over the positions."""

    def __init__(self, channels: int, num_tokens: int = 8):
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(num_tokens, channels) * 0.01)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> masks `(B, T, H, W)`."""
        return torch.einsum("tc,bchw->bthw", self.tokens, logits.float()).sigmoid()

    @staticmethod
    def diversity_loss(masks: torch.Tensor) -> torch.Tensor:
        """MasKD's Dice coefficient between every two different masks of an image, averaged: low when the tokens look
        at different regions."""
        flat = masks.flatten(2)  # (B, T, N)
        products = flat @ flat.transpose(1, 2)  # (B, T, T)
        squares = flat.pow(2).sum(-1) + 1e-12
        dice = 2 * products / (squares[:, :, None] + squares[:, None, :])
        off_diagonal = ~torch.eye(masks.shape[1], dtype=torch.bool, device=masks.device)
        return dice[:, off_diagonal].mean()


class MasKDObjective(DistillationObjective):
    """MasKD on the logits: the mask-weighted MSE between the student's and the teacher's logits, the masks from the
    teacher's logits by tokens trained on the frozen teacher in a first stage (`train_tokens`), before the student's
    first step."""

    description = "MasKD: mask-weighted logit distillation with receptive tokens trained first on the teacher"
    default_weight = 1.0
    default_temperature = 1.0
    kd_weight = 1.0

    def __init__(self, num_labels: int, num_tokens: int = 8, mask_steps: int = 10000, mask_learning_rate: float = 0.1):
        super().__init__()
        self.mask_steps, self.mask_learning_rate = mask_steps, mask_learning_rate
        self.tokens = MaskTokens(num_labels, num_tokens)
        self.register_buffer("tokens_trained", torch.tensor(False))  # the first stage is done (kept in checkpoints)

    @classmethod
    def from_args(cls, args, num_labels: int, student_channels: int, teacher_channels: int) -> "MasKDObjective":
        return cls(num_labels, args.maskd_tokens, args.maskd_mask_steps, args.maskd_mask_learning_rate)

    def forward(self, inputs: KDInputs):
        student_logits, teacher_logits = inputs.student_logits, inputs.teacher_logits
        with torch.no_grad():
            masks = self.tokens(teacher_logits)
        return {"loss_masked": self.kd_weight * masked_distillation_loss(student_logits, teacher_logits, masks)}

    def stage_one_loss(self, teacher_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
        """The first stage's loss: the teacher's cross-entropy through its masked logits, `sum_t m_t * logits`, plus
        the tokens' Dice diversity."""
        masks = self.tokens(teacher_logits)
        masked = (teacher_logits.float()[:, None] * masks[:, :, None]).sum(1)
        upsampled = F.interpolate(masked, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(upsampled, labels, ignore_index=ignore_index) + MaskTokens.diversity_loss(masks)

    def card_settings(self) -> dict:
        return {
            "MasKD tokens": self.tokens.tokens.shape[0],
            "MasKD first stage": f"{self.mask_steps} steps, SGD lr {self.mask_learning_rate}",
        }

    def before_training(self, trainer) -> None:
        if not self.tokens_trained:  # a resumed run has the checkpoint's tokens: the first stage is done
            self.train_tokens(trainer)

    def train_tokens(self, trainer) -> None:
        """MasKD's first stage: train the receptive tokens on the frozen teacher's logits (the teacher as
        `trainer.teacher_outputs` runs it in distillation: a LAD teacher with noised labels), `mask_steps` steps of
        SGD (momentum 0.9, weight decay 1e-3, learning rate `mask_learning_rate` with polynomial decay, power 0.9),
        as MasKD's `train_mask_module.py`; then freeze them. Random state of the run is left as it was: the student's
        training is the same as without this stage."""
        args, steps, accelerator = trainer.args, self.mask_steps, trainer.accelerator
        optimizer = torch.optim.SGD(
            self.tokens.parameters(), lr=self.mask_learning_rate, momentum=0.9, weight_decay=1e-3
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (1 - step / max(steps, 1)) ** 0.9)
        losses = []
        with torch.random.fork_rng(devices=[]):
            batches = itertools.chain.from_iterable(itertools.repeat(trainer.get_train_dataloader()))
            progress = tqdm(
                range(steps), desc="MasKD tokens", disable=args.disable_tqdm or not trainer.is_local_process_zero()
            )
            for step in progress:
                batch = trainer._prepare_inputs(next(batches))
                pixel_values, labels = batch["pixel_values"], batch["labels"]
                generator = content_generator(labels, f"maskd/{args.seed}/{args.process_index}/{step}")
                with accelerator.autocast():
                    teacher_logits, _ = trainer.teacher_outputs(pixel_values, labels, generator=generator)
                loss = self.stage_one_loss(teacher_logits, labels, args.ignore_index)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if accelerator.num_processes > 1:
                    self.tokens.tokens.grad = accelerator.reduce(self.tokens.tokens.grad, reduction="mean")
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
                if step % 50 == 0:
                    progress.set_postfix(loss=f"{loss.item():.4f}")
        self.tokens.requires_grad_(False)
        self.tokens_trained.fill_(True)
        if losses:
            logger.warning(
                f"MasKD first stage: {steps} steps on the frozen teacher, loss {losses[0]:.4f} -> {losses[-1]:.4f}."
            )
