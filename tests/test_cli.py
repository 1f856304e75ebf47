import subprocess

import lad_hf


def test_version():
    run = subprocess.run(["lad-hf", "--version"], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == f"lad-hf {lad_hf.__version__}"


def test_help():
    run = subprocess.run(["lad-hf", "--help"], capture_output=True, text=True, check=True)
    assert "Label Assisted Distillation" in run.stdout
