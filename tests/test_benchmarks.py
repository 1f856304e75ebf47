import json
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent


def test_data_pipeline_benchmark_runs_in_smoke_mode(tmp_path):
    output = tmp_path / "data_pipeline.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "data_pipeline.py"), "--smoke", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ratio data / step" in run.stdout
    result = json.loads(output.read_text())
    assert result["data_images_per_second"] > 0 and result["train_step_seconds"] > 0
