import json
import os
import subprocess

import numpy as np
import torch

from lad_hf.benchmark.digit_scenes import build_digit_scenes
from lad_hf.benchmark.report import plot_predictions
from lad_hf.benchmark.runs import image_miou, make_job
from lad_hf.benchmark.settings import RUNS, DemoSettings


def test_demo_smoke_and_resume(tmp_path):
    data = build_digit_scenes(
        tmp_path / "scenes",
        num_scenes={"train": 24, "validation": 8, "test": 8},
        num_shards={"train": 2, "validation": 1, "test": 1},
    )
    out = tmp_path / "demo"
    command = [
        "lad-hf",
        "demo",
        "--output-dir",
        str(out),
        "--data-dir",
        str(data),
        "--budget",
        "0.003",
        "--seeds",
        "0",
        "--train-size",
        "24",
    ]
    first = subprocess.run([*command, "--no-progress"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    table = (out / "results.md").read_text()
    assert "(5) control: student distilled from (4), CWD" in table and "with a zero label" in table
    assert "Pretrained backbones (digit classification" in table
    summary = json.loads((out / "results.json").read_text())
    assert set(summary["runs"]) == set(RUNS)
    settings = DemoSettings(budget=0.003, train_size=24)
    # The backbones were pretrained once, from the train pool, and every model started from them.
    assert set(summary["pretrained"]) == {"student", "big"}
    assert all(p["settings"]["digit_pool"] == "train" for p in summary["pretrained"].values())
    for name in RUNS:
        (miou,) = summary["runs"][name]["mean_iou"]
        assert 0.0 <= miou <= 1.0
        result = json.loads((out / make_job(name, 0, settings).out_dir / name / "run_result.json").read_text())
        assert any("eval_mean_iou" in h for h in result["log_history"])
        assert result["device"] == ("cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name())
        # Students run their budget; teachers at most theirs, and keep their best validation checkpoint.
        if name.endswith("teacher"):
            assert 1 <= result["best_step"] <= result["steps"] <= settings.scaled(settings.teacher_steps)
        else:
            steps = settings.scaled(settings.student_steps)
            assert result["steps"] == steps and summary["runs"][name]["best_step"] == [steps]
    (gain,) = summary["runs"]["student_lad"]["gain_over_student"]
    assert gain == summary["runs"]["student_lad"]["mean_iou"][0] - summary["runs"]["student"]["mean_iou"][0]
    assert (out / "predictions.png").stat().st_size > 0 and (out / "curves.png").stat().st_size > 0
    # Written as any file the user makes (umask), not private like a temporary file.
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("results.json", "results.md", "predictions.png", "curves.png"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert summary["workers"] == 2 and summary["torch_threads_per_run"] >= 1 and "torch thread(s) each" in table

    # Started again, the demo reuses the finished runs and writes the same table; with --methods it adds rows.
    again = subprocess.run([*command, "--no-progress"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("finished earlier") == len(RUNS)
    assert (out / "results.md").read_text() == table
    more = subprocess.run(
        [*command, "--no-progress", "--methods", "fakd", "lad_fakd", "sdes"], capture_output=True, text=True
    )
    assert more.returncode == 0, more.stderr[-3000:]
    assert more.stderr.count("finished earlier") == len(RUNS)
    extended = (out / "results.md").read_text()
    for title in ("FAKD: student distilled from (6)", "LAD + FAKD", "SDES: student self-distilled"):
        assert title in extended
    summary = json.loads((out / "results.json").read_text())
    assert set(summary["runs"]) == set(RUNS) | {"student_fakd", "student_lad_fakd", "student_sdes"}
    students = out / make_job("student", 0, settings).out_dir
    assert (
        json.loads((students / "student_sdes" / "run_result.json").read_text())["parameters"]
        == json.loads((students / "student" / "run_result.json").read_text())["parameters"]
    )

    # Runs trained with other settings are never reused silently.
    other = subprocess.run([*command[:7], "0.004", *command[8:], "--no-progress"], capture_output=True, text=True)
    assert other.returncode == 2 and "other settings" in other.stderr and "remove" in other.stderr
    (out / "pretrained" / "student" / "pretrain_results.json").unlink()  # past the backbones: the runs refuse too
    (out / "pretrained" / "big" / "pretrain_results.json").unlink()
    other = subprocess.run([*command[:7], "0.004", *command[8:], "--no-progress"], capture_output=True, text=True)
    assert other.returncode == 2 and "trained with other settings" in other.stderr and "budget" in other.stderr


def test_demo_rejects_impossible_options(tmp_path):
    run = subprocess.run(["lad-hf", "demo", "--budget", "0"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and "budget must be a positive number" in run.stderr
    assert not (tmp_path / "lad-demo").exists()  # refused before any work


def test_build_digit_scenes_command(tmp_path):
    out = tmp_path / "scenes"
    (out / "data").mkdir(parents=True)
    run = subprocess.run(["lad-hf", "build-digit-scenes", str(out)], capture_output=True, text=True)
    assert run.returncode == 2 and "--overwrite" in run.stderr


def test_image_miou_and_predictions_picture(tmp_path):
    label = np.zeros((8, 8), dtype=np.int64)
    label[:4] = 1
    label[0, 0] = 255
    assert image_miou(label.copy(), label, 3) == 1.0
    wrong = label.copy()
    wrong[4:6] = 2  # 16 background pixels called class 2: background IoU 16/32, class 2 IoU 0
    assert image_miou(wrong, label, 3) == (16 / 32 + 1.0 + 0.0) / 3
    image = np.full((8, 8, 3), 128, dtype=np.uint8)
    rows = [
        {
            "image": image,
            "label": label,
            "noised_label": label.astype(float),
            **{name: wrong for name in RUNS},
            "miou": {name: image_miou(wrong, label, 3) for name in RUNS},
        }
    ]
    path = tmp_path / "predictions.png"
    plot_predictions(path, rows, RUNS, {0: "background", 1: "one", 2: "two"})
    assert path.stat().st_size > 0
