import json
import os

import pytest

from lad_hf.utils.files import write_json, write_text


def test_outputs_are_written_into_new_folders_with_the_users_file_mode(tmp_path):
    # benchmarks/results/ does not exist in a fresh clone: the first write creates it.
    path = tmp_path / "results" / "deeper" / "step_time.json"
    write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["step_time.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "results.md"
    write_text(path, "old")
    with pytest.raises(TypeError):
        write_json(path, {"not json": object()})
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.md"]
