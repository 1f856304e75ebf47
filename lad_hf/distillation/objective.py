"""The one interface every knowledge-distillation method of `DistillationTrainer` implements."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .losses import match_teacher


__all__ = ["DistillationObjective", "KDInputs"]


@dataclass
class KDInputs:
    """What a distillation method reads at one training step.

    Args:
        student_logits (`(B, K, h, w)`): The student's logits; it saw the image only.
        teacher_logits (`(B, K, H, W)`): The frozen teacher's logits (a LAD teacher read the noised label too).
        labels (`(B, H', W')`): The batch's labels, at the images' size.
        student_features, teacher_features (`(B, C, h, w)`, *optional*): The input of each model's 1x1 classifier,
            where the method reads them (`reads_student_features`, `reads_teacher_features`).
        student_classifier (`nn.Conv2d`, *optional*): The student's classifier, where the method reads the student's
            features (FAKD reads its weights).
        generator (`torch.Generator`, *optional*): This step's random draws, where the method makes any
            (`draws_random`): the same after a resume, different per process.
        gather (`Callable`, *optional*): Concatenates a tensor over the processes; `None` in one process.
        step, max_steps: The optimizer step and the run's length (for schedules).
    """

    student_logits: torch.Tensor
    teacher_logits: torch.Tensor
    labels: torch.Tensor
    student_features: torch.Tensor | None = None
    teacher_features: torch.Tensor | None = None
    student_classifier: nn.Conv2d | None = None
    generator: torch.Generator | None = None
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None
    step: int = 0
    max_steps: int = 0


class DistillationObjective(nn.Module):
    """A knowledge-distillation method: `kd_loss=<name>` of `DistillationTrainer`, one entry of
    `lad_hf.distillation.KD_LOSSES`.

    `DistillationTrainer` asks the method, never tests its name: it builds it with `from_args`, calls it on every
    step's `KDInputs` and weights the sum of the terms it returns by `kd_weight`. What the method trains besides the
    student, and how, it carries with it:

    - `student_parameters()`: trained by the student's optimizer, saved in checkpoints, not in the student (CIRKD's
      projection head);
    - `after_backward(reduce)`: a step of its own after each training step's backward (SKD's discriminator);
    - `before_training(trainer)`: work before the student's first step (MasKD's first stage), with the method's state
      already restored from the checkpoint a run resumes from;
    - its `state_dict()` (buffers, modules, and `get_extra_state` for an optimizer of its own) goes into every
      checkpoint, so that a resumed run repeats the uninterrupted one.

    Class attributes say what the trainer gives it: `reads_student_features` and `reads_teacher_features` (the input
    of each model's 1x1 classifier), `draws_random` (a per-step generator), and how its loss averages,
    `mean_over_labelled_pixels` (over the labelled pixels of the teacher's grid) or over images (the default): the
    trainer scales it to its share of an accumulated batch accordingly.
    """

    description: ClassVar[str] = ""
    default_weight: ClassVar[float] = 3.0  # beta, the kd_weight it gets by default
    default_temperature: ClassVar[float] = 4.0  # tau, the kd_temperature it gets by default
    reads_student_features: ClassVar[bool] = False
    reads_teacher_features: ClassVar[bool] = False
    mean_over_labelled_pixels: ClassVar[bool] = False
    draws_random: ClassVar[bool] = False

    @classmethod
    def from_args(
        cls, args, num_labels: int, student_channels: int | None, teacher_channels: int | None
    ) -> "DistillationObjective":
        """Build the method from the `DistillationConfig` and the two models' sizes: the class count, and the widths
        of the features it reads (`None` where it reads none)."""
        raise NotImplementedError(f"{cls.__name__} must define from_args.")

    def forward(self, inputs: KDInputs) -> dict[str, torch.Tensor]:
        """The method's weighted terms by name (`loss_...`), scalars whose sum is the KD loss."""
        raise NotImplementedError

    def check(self, inputs: KDInputs) -> None:
        """Raise a clear error before training where these inputs cannot be distilled (other classes, sizes that do not
        resize, features that are not maps of the batch). Called by the preflight: it changes nothing."""
        match_teacher(inputs.student_logits, inputs.teacher_logits)  # the same classes, sizes that resize
        student, teacher = inputs.student_features, inputs.teacher_features
        if student is not None and teacher is not None and (student.shape[0] != teacher.shape[0] or student.ndim != 4):
            raise ValueError(
                f"The student's classifier features {tuple(student.shape)} and the teacher's {tuple(teacher.shape)} "
                "are not both (batch, channels, height, width) maps of the same batch."
            )

    def student_parameters(self) -> list[nn.Parameter]:
        """Parameters trained with the student, by its optimizer, that are not part of it."""
        return []

    def before_training(self, trainer) -> None:
        """Work before the student's first step; the method's state is the checkpoint's when the run resumes."""

    def after_backward(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """A step of the method's own after each training step's backward; returns loss components to log. `reduce`
        averages a gradient over the processes (`None` in one process)."""
        return {}

    def card_settings(self) -> dict:
        """The method's own settings, for the model card."""
        return {}
