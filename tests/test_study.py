import json
import subprocess
from dataclasses import replace

from lad_hf.benchmark.digit_scenes import build_digit_scenes
from lad_hf.benchmark.study import TABLE8, TABLE9, StudySettings, plan


def test_plan_runs_teachers_and_students_alone_before_distilled_students():
    study = StudySettings()
    jobs = plan(study)
    independent = [job for job in jobs if job.needs is None]
    distilled = [job for job in jobs if job.needs is not None]
    assert jobs == independent + distilled  # what needs no teacher is listed first
    assert {job.name for job in independent} == {"lad_teacher", "self_teacher", "big_teacher", "student"}
    assert {job.name for job in distilled} == {"student_lad", "student_self", "student_big"}
    groups = len(study.starts) * len(study.train_sizes) * len(study.seeds)
    variants = len(TABLE8) + len(TABLE9) - 2  # the defaults are the main arm's
    assert len(independent) == groups * (3 + len(study.student_budgets)) + variants * len(study.seeds)
    assert len(distilled) == groups * 3 * len(study.student_budgets) + variants * len(study.seeds)
    # Every distilled student's teacher is planned; the convergence stage is the rest.
    assert all(job.needs in independent for job in distilled)
    assert plan(study, stage="convergence") == independent


def test_ablation_seeds_and_budgets_choose_what_runs():
    study = replace(StudySettings(), seeds=(0, 1, 2), ablation_seeds=(0,), student_budgets=(2400,))
    jobs = plan(study)
    ablations = [job for job in jobs if "ablation" in job.tags]
    variants = len(TABLE8) + len(TABLE9) - 2
    assert len(ablations) == 2 * variants and {job.seed for job in ablations} == {0}
    main = [job for job in jobs if "ablation" not in job.tags]
    assert {job.seed for job in main} == {0, 1, 2}
    assert {job.tags["budget"] for job in main if "budget" in job.tags} == {2400}
    # No ablation seeds, or no pretrained start: no ablations.
    assert not [job for job in plan(replace(study, ablation_seeds=())) if "ablation" in job.tags]
    assert replace(study, starts=("scratch",)).ablation_runs == ()


def test_study_options_reach_the_study(tmp_path):
    # The summary stage of a folder that does not exist: each call fails fast, whichever check it reaches.
    study = ["lad-hf", "study", "--stage", "summary", "--output-dir", str(tmp_path / "none")]

    def run(*options):
        result = subprocess.run([*study, *options], capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        return result.stderr

    # --budgets without the demo's 2400: the ablations cannot run, and the message says how to run none.
    error = run("--budgets", "600")
    assert "student_budgets (600,)" in error and "--ablation-seeds with no seed" in error
    # With no ablation seed the same grid is valid: the study goes on (to the missing folder).
    assert "nothing to summarise" in run("--budgets", "600", "--ablation-seeds")
    error = run("--seeds", "0", "--ablation-seeds", "1")
    assert "ablation_seeds (1,) must be among the seeds (0,)" in error


def test_study_smoke_end_to_end_and_resume(tmp_path):
    data = build_digit_scenes(
        tmp_path / "scenes",
        num_scenes={"train": 16, "validation": 8, "test": 8},
        num_shards={"train": 1, "validation": 1, "test": 1},
    )
    out = tmp_path / "study"
    command = ["lad-hf", "study", "--smoke", "--output-dir", str(out), "--data-dir", str(data), "--workers", "1"]
    first = subprocess.run([*command, "--stage", "convergence"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((out / "study.json").read_text())
    assert summary["stage"] == "convergence"
    assert {run["name"] for run in summary["runs"]} == {"lad_teacher", "self_teacher", "big_teacher", "student"}

    full = subprocess.run(command, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-3000:]
    assert full.stderr.count("finished earlier") == len(summary["runs"])  # the convergence runs are reused
    summary = json.loads((out / "study.json").read_text())
    study = StudySettings.smoke()
    assert set(summary["arms"]) == {"scratch-n8", "pretrained-n8"}
    for arm in summary["arms"].values():
        for entry in arm["budgets"].values():
            for name in ("student_lad", "student_self", "student_big"):
                (seed,) = entry[f"{name}_gain"]
                assert entry[f"{name}_gain"][seed] == entry[name][seed] - entry["student"][seed]
            for other in ("student_self", "student_big"):
                (seed,) = entry[f"student_lad_minus_{other}"]
                assert entry[f"student_lad_minus_{other}"][seed] == entry["student_lad"][seed] - entry[other][seed]
    assert set(summary["ablations"]["table8"]) == set(study.table8) and len(study.table8) == 2
    assert set(summary["ablations"]["table9"]) == set(study.table9) and len(study.table9) == 2
    assert all(row["teacher_stability_kl"] for row in summary["ablations"]["table8"].values())
    table = (out / "study.md").read_text()
    assert "LAD - alone" in table and "LAD - control" in table and "Table 9" in table
    assert (out / "study.png").stat().st_size > 0 and (out / "study_convergence.png").stat().st_size > 0

    # The summary stage trains nothing: with a seed more than was run, it summarises the runs that finished.
    (out / "study.md").unlink()
    report = subprocess.run([*command, "--stage", "summary", "--seeds", "0", "1"], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr[-3000:]
    planned = len(plan(replace(study, seeds=(0, 1))))
    assert f"Summarising the {planned // 2} finished runs of the {planned} planned" in report.stderr
    assert "steps, in" not in report.stderr  # no run started
    assert json.loads((out / "study.json").read_text())["arms"] == summary["arms"]
    assert "| scratch | 8 | 3 | 1 |" in (out / "study.md").read_text()  # one seed in the row


def test_study_rejects_impossible_options(tmp_path):
    run = subprocess.run(["lad-hf", "study", "--workers", "0"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and "workers must be at least 1" in run.stderr
    assert not (tmp_path / "lad-study").exists()
    run = subprocess.run(["lad-hf", "study", "--stage", "summary"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and "nothing to summarise; run the study first" in run.stderr
