"""The demo's settings and its runs: the models, the budgets, and the table's rows (`DEMO_RUNS`)."""

import json
from dataclasses import asdict, dataclass, field


__all__ = [
    "DEMO_RUNS",
    "METHOD_RUNS",
    "RUNS",
    "RUN_RESULT_FILE",
    "SHORT_TITLES",
    "TEACHERS",
    "DemoSettings",
    "RunSpec",
]


@dataclass(frozen=True)
class RunSpec:
    """One run of the demo's table.

    Args:
        title: Its row in the table.
        short_title: Its name in the figures.
        trainer: `"supervised"` (cross-entropy alone), `"lad_teacher"` (dual path, reading the noised label),
            `"distill"` (from `teacher`, with `kd_loss`) or `"sdes"` (self-distillation).
        big: The wider model (the big teacher) instead of the student's architecture.
        teacher: The run it is distilled from.
        kd_loss: Its `DistillationConfig.kd_loss`.
        own_weights: Distilled with the method's published weights and temperature (the comparison methods, whose
            code's weights are inside them) instead of the demo's `kd_weight` and `kd_temperature`.
        method: The `--methods` name that adds it; `None` for the demo's own runs.
    """

    title: str
    short_title: str
    trainer: str = "supervised"
    big: bool = False
    teacher: str | None = None
    kd_loss: str = "cwd"
    own_weights: bool = False
    method: str | None = None


DEMO_RUNS = {
    "student": RunSpec("(1) student alone", "(1) student alone"),
    "lad_teacher": RunSpec(
        "(2) LAD teacher (same architecture + label channel)", "(2) LAD teacher", trainer="lad_teacher"
    ),
    "student_lad": RunSpec(
        "(3) student distilled from (2), CWD", "(3) student from LAD teacher", "distill", teacher="lad_teacher"
    ),
    "self_teacher": RunSpec("(4) same-size image-only teacher", "(4) same-size teacher"),
    "student_self": RunSpec(
        "(5) control: student distilled from (4), CWD", "(5) student from (4)", "distill", teacher="self_teacher"
    ),
    "big_teacher": RunSpec("(6) big image-only teacher", "(6) big teacher", big=True),
    "student_big": RunSpec(
        "(7) student distilled from (6), CWD", "(7) student from big teacher", "distill", teacher="big_teacher"
    ),
    # More methods on the same student and budget (`lad-hf demo --methods ...`), after the runs above.
    "student_fakd": RunSpec(
        "FAKD: student distilled from (6), FAKD-CWD",
        "FAKD from (6)",
        "distill",
        teacher="big_teacher",
        kd_loss="fakd_cwd",
        method="fakd",
    ),
    "student_lad_fakd": RunSpec(
        "LAD + FAKD: student distilled from (2), FAKD-CWD",
        "LAD + FAKD",
        "distill",
        teacher="lad_teacher",
        kd_loss="fakd_cwd",
        method="lad_fakd",
    ),
    "student_sdes": RunSpec(
        "SDES: student self-distilled with expert decoders", "SDES", trainer="sdes", method="sdes"
    ),
    # The paper's comparison methods (Table 1), from the big teacher as the paper's from its R101, with their code's
    # weights.
    **{
        f"student_{method}": RunSpec(
            f"{title}: student distilled from (6)",
            f"{title} from (6)",
            "distill",
            teacher="big_teacher",
            kd_loss=method,
            own_weights=True,
            method=method,
        )
        for method, title in (("skd", "SKD"), ("ifvd", "IFVD"), ("cirkd", "CIRKD"), ("maskd", "MasKD"))
    },
}
RUNS = tuple(name for name, run in DEMO_RUNS.items() if run.method is None)
METHOD_RUNS = {run.method: name for name, run in DEMO_RUNS.items() if run.method is not None}
# The runs others learn from: trained to convergence (a longer budget, early stopping, best checkpoint).
TEACHERS = tuple(dict.fromkeys(run.teacher for run in DEMO_RUNS.values() if run.teacher is not None))
RUN_RESULT_FILE = "run_result.json"  # in each run's folder, written as the run finishes
SHORT_TITLES = {name: run.short_title for name, run in DEMO_RUNS.items()}


@dataclass
class DemoSettings:
    """The demo's models and budgets. `budget` scales every number of steps (pretraining included)."""

    student_steps: int = 2400
    teacher_steps: int = 4800
    early_stopping_patience: int = 4
    eval_every: int = 300
    budget: float = 1.0
    batch_size: int = 16
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    lr_power: float = 0.9  # polynomial decay to 0
    warmup_steps: int = 50  # at most a tenth of the run
    image_size: int = 64
    scale_range: tuple[float, float] = (0.8, 1.25)
    train_size: int | None = 1000
    pretrained: bool = True
    pretrain_steps: int = 1500
    pretrain_batch_size: int = 64
    pretrain_image_size: int = 48
    student_widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    student_depths: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    big_widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    big_depths: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    decode_channels: int = 64
    label_stem_channels: int = 8
    label_noise_alpha: float = 0.01
    label_class_noise: bool = True
    consistency_weight: float = 1.0
    consistency_loss: str = "cwd"
    kd_weight: float = 3.0
    kd_temperature: float = 4.0
    # MasKD's first stage: a quarter of the students' budget, as its code's 10,000 steps to its students' 40,000.
    maskd_mask_steps: int = 600
    eval_batch_size: int = 50
    channels_last: bool = True

    def scaled(self, steps: int) -> int:
        return max(1, round(steps * self.budget))

    @property
    def eval_steps(self) -> int:
        """Steps between validations (curves, and the teachers' early stopping)."""
        return self.scaled(self.eval_every)

    def fingerprint(self, teacher: bool) -> dict:
        """What a run's result depends on: all settings, but the students' budget for a teacher (several student
        budgets share the teachers)."""
        settings = asdict(self)
        if teacher:
            settings.pop("student_steps")
        return json.loads(json.dumps(settings))

    def changed(self, recorded: dict, teacher: bool) -> list[str]:
        """The settings in which a finished run's `recorded` fingerprint differs from these. A setting it does not
        record was added to the demo after that run, which trained with its default."""
        fingerprint, defaults = self.fingerprint(teacher), DemoSettings().fingerprint(teacher)
        return sorted(key for key, value in fingerprint.items() if recorded.get(key, defaults[key]) != value)
