"""Training arguments of SDES self-distillation (see `lad_hf.self_distillation_trainer`)."""

from dataclasses import dataclass, field

from .segmentation_config import SegmentationConfig


__all__ = ["SelfDistillationConfig"]


@dataclass
class SelfDistillationConfig(SegmentationConfig):
    """Arguments of [`SelfDistillationTrainer`] (SDES)."""

    num_experts: int = field(default=2, metadata={"help": "Expert decoders on the student's encoder."})
    dped_weight: float = field(default=1.0, metadata={"help": "Weight of the prediction-ensemble distillation."})
    dfed_weight: float = field(default=1.0, metadata={"help": "Weight of the feature-ensemble distillation."})
    sdes_temperature: float = field(default=4.0, metadata={"help": "Temperature of the prediction ensemble and KD."})

    def __post_init__(self):
        super().__post_init__()
        if self.num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {self.num_experts}.")
        if self.sdes_temperature <= 0:
            raise ValueError(f"sdes_temperature must be > 0, got {self.sdes_temperature}.")
        for name in ("dped_weight", "dfed_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
