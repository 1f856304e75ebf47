import re
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet


ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_example_runs_alone(index, tmp_path, monkeypatch):
    """Each block carries its imports and data: a reader may copy any one of them."""
    monkeypatch.chdir(tmp_path)  # the examples save models in the working directory
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"README.md python block {index + 1}", "exec"), namespace)
    if "output" in namespace:
        assert namespace["output"].logits.shape == (2, 19, 16, 16)
    if "teacher_logits" in namespace:
        assert namespace["teacher_logits"].shape == (2, 19, 16, 16)
    if "metrics" in namespace:
        assert "eval_mean_iou_zero_label" in namespace["metrics"]


def test_install_line_pins_the_torch_that_ci_tests_and_pyproject_accepts():
    readme_pins = set(re.findall(r"pip install torch==([\d.]+)", README))
    ci_pins = set(re.findall(r"pip install[^\n]*torch==([\d.]+)", (ROOT / ".ci" / "run").read_text()))
    assert len(readme_pins) == 1 and readme_pins == ci_pins, (readme_pins, ci_pins)
    assert "download.pytorch.org/whl/cpu" in README  # the CPU-only line
    torch_range = SpecifierSet(re.search(r'^\s*"torch([^"]*)"', (ROOT / "pyproject.toml").read_text(), re.M)[1])
    assert torch_range  # a declared range, not any torch
    assert next(iter(readme_pins)) in torch_range
