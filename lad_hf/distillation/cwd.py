"""Channel-wise distillation (CWD, Shu et al. ICCV 2021): the paper's KD loss, `kd_loss="cwd"` (paper Eq. 8)."""

from .losses import channel_wise_divergence
from .objective import DistillationObjective, KDInputs


__all__ = ["CWDObjective"]


class CWDObjective(DistillationObjective):
    """`channel_wise_divergence(student, teacher, tau)`: each channel's logits as a distribution over positions, the
    student's pulled to the teacher's. beta 3 and tau 4 by default, as LAD."""

    description = "channel-wise distillation, CWD (the paper's)"

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        self.temperature = temperature

    @classmethod
    def from_args(cls, args, num_labels, student_channels, teacher_channels) -> "CWDObjective":
        return cls(args.kd_temperature)

    def forward(self, inputs: KDInputs):
        return {"loss_kd": channel_wise_divergence(inputs.student_logits, inputs.teacher_logits, self.temperature)}

    def check(self, inputs: KDInputs) -> None:
        self(inputs)
