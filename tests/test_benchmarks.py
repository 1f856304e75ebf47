import json
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent


def run_smoke(script: str, tmp_path: Path) -> tuple[str, dict]:
    """Run `benchmarks/<script> --smoke`; its printed table and its JSON."""
    output = tmp_path / f"{Path(script).stem}.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout, json.loads(output.read_text())


def test_data_pipeline_benchmark_runs_in_smoke_mode(tmp_path):
    stdout, result = run_smoke("data_pipeline.py", tmp_path)
    assert "ratio data / step" in stdout
    assert result["data_images_per_second"] > 0 and result["train_step_seconds"] > 0


def test_step_time_benchmark_runs_in_smoke_mode(tmp_path):
    stdout, result = run_smoke("step_time.py", tmp_path)
    assert "(c) CWD step from a DeepLabV3-R101 teacher" in stdout and "b/c" in stdout
    assert set(result["ratios"]) == {"b/a", "c/a", "b/c", "d/e", "f/d", "g/eval", "i/h", "j/c", "k/c", "l/c", "m/c"}
    assert "(i) LAD step, STDC1 LAD teacher -> STDC2 student" in stdout
    for row in ("(j) SKD", "(k) IFVD", "(l) CIRKD", "(m) MasKD"):  # the paper's Dtime column, beside its ratio
        assert row in stdout
    assert "m/c" in stdout and "paper (Dtime, V100) 2.04" in stdout
    # A teacher under no_grad saves nothing for the backward pass: a distillation step saves what the student step
    # does, plus the small KD loss terms, whatever the teacher's size.
    autograd = {key: result["results"][key]["autograd_mb"] for key in "abchi"}
    assert autograd["a"] > 0 and autograd["b"] == pytest.approx(autograd["c"]) and autograd["b"] < 1.05 * autograd["a"]
    assert autograd["h"] > 0 and autograd["i"] < 1.05 * autograd["h"]
