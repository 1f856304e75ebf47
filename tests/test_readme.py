import re
from pathlib import Path


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples save models in the working directory
    readme = Path(__file__).resolve().parent.parent / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    assert blocks
    namespace: dict = {}
    exec(compile("\n".join(blocks), str(readme), "exec"), namespace)
    assert namespace["output"].logits.shape == (2, 19, 16, 16)
    assert namespace["teacher_logits"].shape == (2, 19, 16, 16)
    assert "eval_mean_iou_zero_label" in namespace["metrics"]
