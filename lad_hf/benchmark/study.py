"""`lad-hf study`: when does LAD pay, and by how much? A map of the regime on the digit-scenes benchmark.

For every start (from scratch, or from the digit-pretrained backbones), training-set size and seed, three teachers
are trained to convergence (a long budget, early stopping on validation mIoU, best checkpoint): the LAD teacher, a
same-size image-only teacher, and a big image-only teacher. Then, for every student budget, four students: alone,
and distilled with CWD from each teacher. What the study reports is each distilled student's test mIoU minus that of
the student alone of the same seed and budget (LAD, the same-size control, the big teacher), mean ± std over seeds.

Two ablations run on the pretrained, full-data arm at the default student budget, as in the paper:
- Table 8: the consistency weight lambda = 0 against 1 (and the official code's symmetric consistency): the teacher's
  stability (mean pairwise KL between its outputs under 3 noisings) and its student's mIoU;
- Table 9: the pixel noise alpha in {0, 0.01, 0.1, 1}, and fixed class codes instead of random ones: the teacher's
  mIoU and its student's.

Every run writes `run_result.json` as it finishes; a study started again skips them, so it resumes after a crash.
`--stage convergence` runs only what does not depend on the answer (the students alone and the teachers), so that
budgets can be chosen from convergence before any distilled student is seen; `--stage summary` trains nothing and
summarises the runs of the grid that have finished (each table says how many seeds it holds). Runs go to worker
processes (`--workers`, one torch thread each when there are two).
"""

import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from transformers.utils import logging

from ..utils.files import write_json, write_text
from .demo import check_settings, ensure_digit_scenes
from .report import mean_std, save_figure
from .runs import Job, arm_name, finished_backbones, finished_result, make_job, pretrain_backbones, run_jobs
from .settings import SHORT_TITLES, TEACHERS, DemoSettings


__all__ = ["StudySettings", "run_study"]

logger = logging.get_logger(__name__)

STAGES = ("all", "convergence", "summary")
DISTILLED = {
    "student_lad": "LAD teacher",
    "student_self": "same-size image-only teacher",
    "student_big": "big teacher",
}
# The ablations' variants of the LAD teacher: DemoSettings fields. "default" is the main arm's teacher.
TABLE8 = {
    "lambda 0": {"consistency_weight": 0.0},
    "lambda 1 (default)": {},
    "lambda 1, symmetric (official code)": {"consistency_loss": "cwd_symmetric"},
}
TABLE9 = {
    "alpha 0": {"label_noise_alpha": 0.0},
    "alpha 0.01 (default)": {},
    "alpha 0.1": {"label_noise_alpha": 0.1},
    "alpha 1": {"label_noise_alpha": 1.0},
    "fixed class codes, alpha 0.01": {"label_class_noise": False},
}


@dataclass
class StudySettings:
    """What the study varies; every other setting is the demo's (`base`)."""

    starts: tuple[str, ...] = ("scratch", "pretrained")
    train_sizes: tuple[int, ...] = (1000, 4000)
    # The teachers' longest budget per training-set size (early stopping may end them sooner); a size not named here
    # takes `base.teacher_steps`. On 4,000 scenes the student alone still gains 3 points from 4,800 to 9,600 steps
    # (README), so its teachers get the longer budget.
    teacher_steps: dict[int, int] = field(default_factory=lambda: {1000: 4800, 4000: 9600})
    student_budgets: tuple[int, ...] = (600, 1200, 2400)
    seeds: tuple[int, ...] = (0, 1, 2)
    # The ablations' seeds (None: `seeds`; empty: no ablations).
    ablation_seeds: tuple[int, ...] | None = None
    base: DemoSettings = field(default_factory=DemoSettings)
    table8: dict[str, dict] = field(default_factory=lambda: dict(TABLE8))
    table9: dict[str, dict] = field(default_factory=lambda: dict(TABLE9))

    def arm(self, start: str, train_size: int) -> DemoSettings:
        """The settings of one arm of the grid: a start and a training-set size."""
        return replace(
            self.base,
            pretrained=start == "pretrained",
            train_size=train_size,
            teacher_steps=self.teacher_steps.get(train_size, self.base.teacher_steps),
        )

    @property
    def ablation_budget(self) -> int:
        """The ablations run on the demo's setting: pretrained, its training-set size and student budget."""
        return self.base.student_steps

    @property
    def ablation_runs(self) -> tuple[int, ...]:
        """The seeds the ablations run on; none without the pretrained start or with no variant to run."""
        seeds = self.seeds if self.ablation_seeds is None else self.ablation_seeds
        variants = any(change for change in {**self.table8, **self.table9}.values())
        return tuple(seeds) if "pretrained" in self.starts and variants else ()

    @property
    def ablation_arm(self) -> str:
        return arm_name(self.arm("pretrained", self.base.train_size))

    @classmethod
    def smoke(cls) -> "StudySettings":
        """A few steps of everything, on a tiny benchmark: checks that the study runs end to end."""
        base = DemoSettings(
            student_steps=3,
            teacher_steps=4,
            eval_every=1,
            pretrain_steps=2,
            pretrain_batch_size=8,
            batch_size=4,
            eval_batch_size=8,
            early_stopping_patience=1,
            train_size=8,
        )
        return cls(
            train_sizes=(8,),
            teacher_steps={},
            student_budgets=(3,),
            seeds=(0,),
            base=base,
            table8={k: v for k, v in TABLE8.items() if not v or "lambda 0" in k},
            table9={k: v for k, v in TABLE9.items() if not v or "fixed" in k},
        )


def plan(study: StudySettings, stage: str = "all") -> list[Job]:
    """The study's runs: teachers and students alone (what needs no teacher), then the distilled students, unless
    `stage="convergence"`. Each job's `tags` say where it belongs: `arm` and `budget`, or `ablation`."""
    jobs = []
    for start in study.starts:
        for size in study.train_sizes:
            arm = study.arm(start, size)
            for seed in study.seeds:
                jobs += [make_job(name, seed, arm, arm=arm_name(arm)) for name in TEACHERS]
                for budget in study.student_budgets:
                    names = ["student"] + ([] if stage == "convergence" else list(DISTILLED))
                    settings = replace(arm, student_steps=budget)
                    jobs += [make_job(name, seed, settings, arm=arm_name(arm), budget=budget) for name in names]
    if study.ablation_runs:
        for variant, change in {**study.table8, **study.table9}.items():
            if not change:
                continue  # the main arm's teacher and student
            settings = replace(study.arm("pretrained", study.base.train_size), **change)
            for seed in study.ablation_runs:
                group = f"ablation/{_slug(variant)}/seed-{seed}"
                names = ["lad_teacher"] + ([] if stage == "convergence" else ["student_lad"])
                jobs += [
                    make_job(name, seed, settings, group, ablation=variant, budget=study.ablation_budget)
                    for name in names
                ]
    # The longest runs first, so that the workers finish together; a student waits for its teacher anyway.
    order = {"lad_teacher": 0, "big_teacher": 1, "self_teacher": 2, "student": 3}
    steps = {name: "teacher_steps" for name in TEACHERS}
    return sorted(jobs, key=lambda job: (order.get(job.name, 4), -job.settings[steps.get(job.name, "student_steps")]))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c == "." else "-" for c in text.lower()).strip("-")


def _miou(results: dict[Job, dict], **match) -> dict[int, dict]:
    """`{seed: test metrics}` of the jobs whose name and tags match."""
    name = match.pop("name")
    return {
        job.seed: result["test"]
        for job, result in results.items()
        if job.name == name and all(job.tags.get(key) == value for key, value in match.items())
    }


def _values(per_seed: dict[int, dict], key: str = "mean_iou") -> dict[int, float]:
    return {seed: metrics[key] for seed, metrics in per_seed.items() if key in metrics}


def _difference(a: dict[int, float], b: dict[int, float]) -> dict[int, float]:
    """`a - b` for every seed both have."""
    return {seed: a[seed] - b[seed] for seed in a if seed in b}


def summarise(results: dict[Job, dict], study: StudySettings) -> dict:
    """Per arm and budget: the students' mIoU and each distilled student's gain over the student alone, per seed;
    per ablation variant: its teacher's mIoU, label reliance and stability, and its student's mIoU and gain."""
    summary = {
        "settings": {**asdict(study), "base": asdict(study.base)},
        "arms": {},
        "ablations": {},
        "ablation_arm": study.ablation_arm,
        "ablation_budget": study.ablation_budget,
    }
    for start in study.starts:
        for size in study.train_sizes:
            arm = arm_name(study.arm(start, size))
            teachers = {name: _values(_miou(results, name=name, arm=arm)) for name in TEACHERS}
            budgets = {}
            for budget in study.student_budgets:
                alone = _values(_miou(results, name="student", arm=arm, budget=budget))
                entry = {"student": alone}
                for name in DISTILLED:
                    distilled = _values(_miou(results, name=name, arm=arm, budget=budget))
                    if distilled:
                        entry[name] = distilled
                        entry[f"{name}_gain"] = _difference(distilled, alone)
                # Does LAD beat the other teachers? Its student against theirs, seed by seed.
                for other in ("student_self", "student_big"):
                    if "student_lad" in entry and other in entry:
                        entry[f"student_lad_minus_{other}"] = _difference(entry["student_lad"], entry[other])
                budgets[budget] = entry
            summary["arms"][arm] = {"start": start, "train_size": size, "teachers": teachers, "budgets": budgets}
    main, seeds = study.ablation_arm, study.ablation_runs
    if main not in summary["arms"] or not seeds:
        return summary
    budget = study.ablation_budget
    alone = summary["arms"][main]["budgets"].get(budget, {}).get("student", {})
    summary["ablation_seeds"] = list(seeds)
    for table, variants in (("table8", study.table8), ("table9", study.table9)):
        rows = {}
        for variant, change in variants.items():
            where = {"ablation": variant} if change else {"arm": main}
            # The default row is the main arm's: on the ablations' seeds only, like the other rows.
            teacher = {k: v for k, v in _miou(results, name="lad_teacher", **where).items() if k in seeds}
            student = _values(_miou(results, name="student_lad", budget=budget, **where))
            student = {k: v for k, v in student.items() if k in seeds}
            rows[variant] = {
                "teacher_mean_iou": _values(teacher),
                "teacher_mean_iou_shuffled_label": _values(teacher, "mean_iou_shuffled_label"),
                "teacher_stability_kl": _values(teacher, "stability_kl"),
                "student_mean_iou": student,
                "student_gain": _difference(student, alone),
            }
        summary["ablations"][table] = rows
    return summary


def _ms(per_seed: dict, signed: bool = False, scale: float = 100.0, seeds: int | None = None) -> str:
    """Mean ± std over the seeds; `(n=k)` where a cell holds another number of seeds than its row's `seeds`."""
    values = [per_seed[s] for s in sorted(per_seed)]
    if not values:
        return "-"
    text = mean_std(values, scale=scale, signed=signed)
    return text if seeds is None or len(values) == seeds else f"{text} (n={len(values)})"


def markdown(summary: dict) -> str:
    """The study's tables."""
    lines = [
        "# lad-hf study",
        "",
        "Test mIoU (%) on the digit scenes, mean ± std over seeds (a single seed shows its value alone). Differences",
        "are taken seed by seed, at the same budget (mIoU points): each distilled student minus the student alone,",
        "and the LAD teacher's student minus the control's (the same-size image-only teacher's student) and minus the",
        "big teacher's student.",
        "",
        "| start | train scenes | student steps | seeds | student alone | LAD - alone | same-size control - alone | "
        "big teacher - alone | LAD - control | LAD - big teacher |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    columns = [f"{name}_gain" for name in DISTILLED] + [
        "student_lad_minus_student_self",
        "student_lad_minus_student_big",
    ]
    for arm in summary["arms"].values():
        for budget, entry in arm["budgets"].items():
            lines.append(
                f"| {arm['start']} | {arm['train_size']} | {budget} | {len(entry['student'])} | "
                f"{_ms(entry['student'])} | "
                + " | ".join(
                    _ms(entry.get(column, {}), signed=True, seeds=len(entry["student"])) for column in columns
                )
                + " |"
            )
    lines += [
        "",
        "Teachers (test mIoU %; the LAD teacher with its noised label):",
        "",
        "| start | train scenes | seeds | LAD teacher | same-size image-only | big image-only |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for arm in summary["arms"].values():
        teachers = arm["teachers"]
        lines.append(
            f"| {arm['start']} | {arm['train_size']} | {len(teachers['lad_teacher'])} | "
            f"{_ms(teachers['lad_teacher'])} | "
            f"{_ms(teachers['self_teacher'], seeds=len(teachers['lad_teacher']))} | "
            f"{_ms(teachers['big_teacher'], seeds=len(teachers['lad_teacher']))} |"
        )
    arm = summary["arms"].get(summary["ablation_arm"], {})
    seeds = len(summary.get("ablation_seeds", []))
    where = (
        f"pretrained, {arm.get('train_size')} training scenes, students {summary['ablation_budget']} steps, "
        f"{seeds} seed{'s' * (seeds != 1)}"
    )
    titles = {
        "table8": f"Paper Table 8 analogue: the consistency loss ({where})",
        "table9": f"Paper Table 9 analogue: the label noise ({where})",
    }
    for table, rows in summary["ablations"].items():
        lines += [
            "",
            f"{titles[table]}:",
            "",
            "| LAD teacher | teacher mIoU | teacher, another image's label | stability KL (x1e-3) | student mIoU | "
            "student - alone |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for variant, row in rows.items():
            lines.append(
                f"| {variant} | {_ms(row['teacher_mean_iou'])} | {_ms(row['teacher_mean_iou_shuffled_label'])} | "
                f"{_ms(row['teacher_stability_kl'], scale=1e3)} | {_ms(row['student_mean_iou'])} | "
                f"{_ms(row['student_gain'], signed=True)} |"
            )
    return "\n".join(lines) + "\n"


def plot(path: Path, summary: dict) -> None:
    """One panel per arm: each distilled student's gain over the student alone against the student's budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(summary["arms"].values())
    starts = list(dict.fromkeys(arm["start"] for arm in arms))
    sizes = list(dict.fromkeys(arm["train_size"] for arm in arms))
    figure, axes = plt.subplots(
        len(starts), len(sizes), figsize=(4.6 * len(sizes), 3.6 * len(starts)), squeeze=False, sharey=True
    )
    for arm in arms:
        axis = axes[starts.index(arm["start"])][sizes.index(arm["train_size"])]
        budgets = sorted(arm["budgets"])
        for name, label in DISTILLED.items():
            points = [(b, list(arm["budgets"][b].get(f"{name}_gain", {}).values())) for b in budgets]
            points = [(b, v) for b, v in points if v]
            if not points:
                continue
            x = [b for b, _ in points]
            mean = [100 * statistics.mean(v) for _, v in points]
            std = [100 * statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in points]
            axis.plot(x, mean, marker="o", label=f"from {label}")
            axis.fill_between(
                x,
                [m - s for m, s in zip(mean, std, strict=True)],
                [m + s for m, s in zip(mean, std, strict=True)],
                alpha=0.2,
            )
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.set_xscale("log", base=2)
        axis.set_xticks(budgets, [str(b) for b in budgets])
        seeds = max((len(entry["student"]) for entry in arm["budgets"].values()), default=0)
        axis.set_title(
            f"{arm['start']}, {arm['train_size']} training scenes, {seeds} seed{'s' * (seeds != 1)}", fontsize=10
        )
        axis.set_xlabel("student steps")
        axis.set_ylabel("student mIoU - student alone (points)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle(
        "Distilled student minus student alone\n(mean ± std over the seeds run, same seed and budget)", fontsize=10
    )
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def plot_convergence(path: Path, results: dict[Job, dict], study: StudySettings) -> None:
    """Validation mIoU against steps, one panel per arm, first seed: the students alone at every budget (solid) and
    the teachers (dashed). The budgets are chosen from these curves, before any distilled student is seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        len(study.starts),
        len(study.train_sizes),
        figsize=(4.6 * len(study.train_sizes), 3.6 * len(study.starts)),
        squeeze=False,
        sharey=True,
    )
    seed = study.seeds[0]
    for job, result in results.items():
        if job.seed != seed or "arm" not in job.tags or job.name not in ("student", *TEACHERS):
            continue
        start, size = "pretrained" if job.settings["pretrained"] else "scratch", job.settings["train_size"]
        axis = axes[study.starts.index(start)][study.train_sizes.index(size)]
        evals = [(h["step"], 100 * h["eval_mean_iou"]) for h in result["log_history"] if "eval_mean_iou" in h]
        if not evals:
            continue
        label = f"student alone, {job.tags['budget']} steps" if job.name == "student" else SHORT_TITLES[job.name]
        style = "-" if job.name == "student" else "--"
        axis.plot(*zip(*evals, strict=True), style, marker="o", markersize=2, label=label, linewidth=1.2)
        axis.set_title(f"{start}, {size} training scenes (seed {seed})", fontsize=10)
        axis.set_xlabel("step")
        axis.set_ylabel("validation mIoU (%)")
        axis.grid(alpha=0.3)
    for row in axes:
        for axis in row:
            handles, labels = axis.get_legend_handles_labels()
            order = sorted(range(len(labels)), key=labels.__getitem__)
            axis.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=6)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def run_study(
    output_dir: str | os.PathLike = "lad-study",
    study: StudySettings | None = None,
    data_dir: str | os.PathLike | None = None,
    workers: int = 2,
    stage: str = "all",
    show_progress: bool = True,
) -> dict:
    """Run (or resume) the study and write `study.json`, `study.md`, `study.png` and `study_convergence.png` to
    `output_dir` (a demo's output folder may be given: the study reuses the demo's runs).

    Args:
        output_dir: Where the runs and the summary go.
        study: What to vary; `StudySettings()` by default.
        data_dir: The digit-scenes folder (default: `<output_dir>/digit_scenes`, built if missing).
        workers: Runs in parallel, each in its own process.
        stage: `"all"`; `"convergence"`: the teachers and the students alone only; `"summary"`: no training, the
            summary of the runs that have finished.
        show_progress: The pretraining's progress bars.
    """
    study = study or StudySettings()
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}.")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    check_settings(study.base, study.seeds)
    if min(study.train_sizes) < study.base.batch_size:
        raise ValueError(f"Every train size must hold one batch ({study.base.batch_size}), got {study.train_sizes}.")
    if set(study.ablation_runs) - set(study.seeds):
        raise ValueError(
            f"ablation_seeds {study.ablation_seeds} must be among the seeds {study.seeds}: their rows are compared "
            "with the main grid's runs of the same seed."
        )
    if study.ablation_runs and (
        study.base.train_size not in study.train_sizes or study.base.student_steps not in study.student_budgets
    ):
        raise ValueError(
            "The ablations run on the main grid's pretrained arm: base.train_size and base.student_steps must be "
            f"among train_sizes {study.train_sizes} and student_budgets {study.student_budgets} (or run no "
            "ablations: ablation_seeds=(), --ablation-seeds with no seed)."
        )
    start = time.perf_counter()
    output_dir = Path(output_dir)
    if stage == "summary":
        if not output_dir.is_dir():
            raise ValueError(f"{output_dir} does not exist: there is nothing to summarise; run the study first.")
        jobs, results = plan(study), {}
        for job in jobs:
            result = finished_result(output_dir / job.out_dir / job.name, job.name, DemoSettings(**job.settings))
            if result is not None:
                results[job] = result
        logger.warning(f"Summarising the {len(results)} finished runs of the {len(jobs)} planned.")
        pretrained = finished_backbones(output_dir / "pretrained")
    else:
        output_dir.mkdir(parents=True, exist_ok=True)
        data_dir = Path(data_dir) if data_dir is not None else output_dir / "digit_scenes"
        ensure_digit_scenes(data_dir, study.train_sizes)
        pretrained = None
        if "pretrained" in study.starts:
            pretrained = pretrain_backbones(output_dir / "pretrained", replace(study.base, budget=1.0), show_progress)
        results = run_jobs(plan(study, stage), output_dir, data_dir, pretrained, workers, show_progress)
    summary = summarise(results, study)
    summary["stage"] = stage
    summary["pretrained"] = pretrained
    # Each run once, with its validation curve (not its whole log).
    summary["runs"] = [
        {
            **{k: v for k, v in asdict(job).items() if k != "settings"},
            **{k: v for k, v in r.items() if k != "log_history"},
            "validation_mean_iou": [(h["step"], h["eval_mean_iou"]) for h in r["log_history"] if "eval_mean_iou" in h],
        }
        for job, r in results.items()
    ]
    summary["wall_seconds_this_call"] = round(time.perf_counter() - start, 1)
    write_json(output_dir / "study.json", summary)
    table = markdown(summary)
    write_text(output_dir / "study.md", table)
    plot_convergence(output_dir / "study_convergence.png", results, study)
    if stage != "convergence":
        plot(output_dir / "study.png", summary)
    print(table)
    return summary
