"""The local Hub of `hub_server.py` serves the real huggingface_hub, transformers, datasets and peft clients."""

import copy
import json
import os
import subprocess
import sys
import time

import datasets
import numpy as np
import pytest
import torch
from conftest import tiny_segformer
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError
from peft import LoraConfig, PeftModel, get_peft_model
from PIL import Image
from torch import nn
from transformers import AutoModelForSemanticSegmentation


@pytest.fixture(autouse=True)
def _every_request_has_a_route(local_hub):
    yield
    assert not local_hub.unhandled


def lfs_uploads(hub) -> int:
    """How many files the client PUT to the upload hrefs of the LFS batch API."""
    return sum(method == "PUT" and path.startswith("/lfs/upload/") for method, path in hub.requests)


def test_push_and_load_a_transformers_model(local_hub):
    api = HfApi(endpoint=local_hub.endpoint)
    url = api.create_repo("user/tiny-model", token=local_hub.token)
    assert url.repo_id == "user/tiny-model" and url.startswith(local_hub.endpoint)
    api.create_repo("user/tiny-model", token=local_hub.token, exist_ok=True)

    model = tiny_segformer()
    model.push_to_hub("user/tiny-model", token=local_hub.token)
    loaded = AutoModelForSemanticSegmentation.from_pretrained("user/tiny-model")
    assert type(loaded) is type(model)
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    assert lfs_uploads(local_hub) == 1  # the .safetensors weights go through LFS, config.json does not

    files = api.list_repo_files("user/tiny-model")
    assert {".gitattributes", "config.json", "model.safetensors"} <= set(files)
    info = api.model_info("user/tiny-model", files_metadata=True)
    assert info.id == "user/tiny-model" and len(info.sha) == 40
    siblings = {sibling.rfilename: sibling for sibling in info.siblings}
    assert siblings["model.safetensors"].lfs is not None and siblings["config.json"].lfs is None
    assert "transformers" in open(hf_hub_download("user/tiny-model", "README.md")).read()
    assert {"config.json", "model.safetensors"} <= set(os.listdir(snapshot_download("user/tiny-model")))
    config_path = hf_hub_download("user/tiny-model", "config.json")
    assert json.loads(open(config_path).read())["model_type"] == "segformer"
    assert hf_hub_download("user/tiny-model", "config.json", revision=info.sha) == config_path


def test_small_and_large_files_round_trip(local_hub, tmp_path):
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.token)
    api.create_repo("user/files")
    small = b"hello local hub\n"
    large = np.random.default_rng(0).bytes(11 * 1024 * 1024)  # over the 10 MB limit of regular files
    (tmp_path / "large.bin").write_bytes(large)
    api.upload_file(path_or_fileobj=small, path_in_repo="notes/small.txt", repo_id="user/files")
    assert lfs_uploads(local_hub) == 0
    api.upload_file(path_or_fileobj=str(tmp_path / "large.bin"), path_in_repo="large.bin", repo_id="user/files")
    assert lfs_uploads(local_hub) == 1

    assert open(hf_hub_download("user/files", "notes/small.txt"), "rb").read() == small
    assert open(hf_hub_download("user/files", "large.bin"), "rb").read() == large
    entries = {entry.path: entry for entry in api.list_repo_tree("user/files", recursive=True)}
    assert entries["large.bin"].lfs.size == len(large) and entries["notes/small.txt"].lfs is None
    paths_info = api.get_paths_info("user/files", ["notes", "large.bin", "missing"])
    assert [entry.path for entry in paths_info] == ["notes", "large.bin"]
    # Uploading the same content again uploads nothing: the batch API answers that the object is already stored.
    api.upload_file(path_or_fileobj=str(tmp_path / "large.bin"), path_in_repo="large.bin", repo_id="user/files")
    assert lfs_uploads(local_hub) == 1

    # HfFileSystem reads a slice with a Range request.
    with HfFileSystem().open("user/files/large.bin", block_size=1024) as f:
        f.seek(5_000_000)
        assert f.read(100) == large[5_000_000:5_000_100]
    assert HfFileSystem().ls("user/files/notes", detail=False) == ["user/files/notes/small.txt"]

    api.delete_file("notes/small.txt", repo_id="user/files")
    assert api.list_repo_files("user/files") == [".gitattributes", "large.bin"]


def test_missing_repo_and_file_fail_fast(local_hub):
    start = time.perf_counter()
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("user/does-not-exist", "config.json")
    with pytest.raises(OSError, match="not a valid model identifier"):
        AutoModelForSemanticSegmentation.from_pretrained("user/does-not-exist")
    HfApi(endpoint=local_hub.endpoint).create_repo("user/empty", token=local_hub.token)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("user/empty", "config.json")
    assert time.perf_counter() - start < 5
    assert not HfApi().repo_exists("user/does-not-exist")
    assert not HfApi().file_exists("user/empty", "config.json")

    assert HfApi().whoami()["name"] == "user"
    with pytest.raises(HfHubHTTPError) as error:
        HfApi(token="hf_wrong").upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="user/empty")
    assert error.value.response.status_code == 401


def image_dataset(num_rows: int, seed: int) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(num_rows)]
    labels = [Image.fromarray(rng.integers(0, 3, (8, 8), dtype=np.uint8)) for _ in range(num_rows)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image(), "id": datasets.Value("int32")})
    return datasets.Dataset.from_dict({"image": images, "label": labels, "id": list(range(num_rows))}, features)


def rows(dataset) -> list[dict]:
    return [
        {key: np.asarray(value) if isinstance(value, Image.Image) else value for key, value in row.items()}
        for row in dataset
    ]


def assert_same_rows(actual, expected) -> None:
    actual, expected = rows(actual), rows(expected)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            assert np.array_equal(got[key], want[key]), key


def test_push_and_load_a_dataset(local_hub):
    train = image_dataset(6, seed=0)
    train.push_to_hub("user/tiny-data", token=local_hub.token)
    tree = HfApi().list_repo_tree("user/tiny-data", repo_type="dataset", recursive=True)
    assert [entry.path for entry in tree if getattr(entry, "lfs", None)] == ["data/train-00000-of-00001.parquet"]
    assert_same_rows(datasets.load_dataset("user/tiny-data", split="train"), train)
    assert_same_rows(datasets.load_dataset("user/tiny-data", split="train", streaming=True), train)

    splits = datasets.DatasetDict(train=train, validation=image_dataset(3, seed=1))
    splits.push_to_hub("user/tiny-splits")
    loaded = datasets.load_dataset("user/tiny-splits")
    assert set(loaded) == {"train", "validation"}
    for split in splits:
        assert_same_rows(loaded[split], splits[split])
    streamed = datasets.load_dataset("user/tiny-splits", split="validation", streaming=True)
    assert_same_rows(streamed, splits["validation"])


def test_load_a_dataset_uploaded_as_a_folder(local_hub, tmp_path):
    folder = tmp_path / "folder"
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n"
        "  - split: test\n    path: data/test.parquet\n---\n# Tiny\n"
    )
    parts = [datasets.Dataset.from_dict({"x": [i, i + 1], "name": [f"a{i}", f"b{i}"]}) for i in (0, 10)]
    for index, part in enumerate(parts):
        part.to_parquet(folder / "data" / f"train-{index:05d}-of-00002.parquet")
    test = datasets.Dataset.from_dict({"x": [99], "name": ["test"]})
    test.to_parquet(folder / "data" / "test.parquet")
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.token)
    api.create_repo("user/folder-data", repo_type="dataset")
    api.upload_folder(repo_id="user/folder-data", repo_type="dataset", folder_path=folder)

    expected = datasets.concatenate_datasets(parts)
    assert_same_rows(datasets.load_dataset("user/folder-data", split="train"), expected)
    assert_same_rows(datasets.load_dataset("user/folder-data", split="train", streaming=True), expected)
    assert_same_rows(datasets.load_dataset("user/folder-data", split="test"), test)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.proj(x)))


def test_push_and_load_a_peft_adapter(local_hub):
    base = TinyNet()
    fresh_base = copy.deepcopy(base)  # get_peft_model changes `base` in place
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["proj"], init_lora_weights=False))
    peft_model.push_to_hub("user/tiny-adapter")  # the token comes from HF_TOKEN
    files = HfApi().list_repo_files("user/tiny-adapter")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(files)

    x = torch.randn(3, 4)
    without_adapter = fresh_base(x)
    loaded = PeftModel.from_pretrained(fresh_base, "user/tiny-adapter")
    assert torch.equal(loaded(x), peft_model(x))
    assert not torch.allclose(loaded(x), without_adapter)


def test_a_subprocess_uses_the_hub_through_the_environment(local_hub):
    HfApi().create_repo("user/from-child")
    code = (
        "from huggingface_hub import HfApi, hf_hub_download\n"
        "HfApi().upload_file(path_or_fileobj=b'child', path_in_repo='child.txt', repo_id='user/from-child')\n"
        "print(open(hf_hub_download('user/from-child', 'child.txt')).read())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "child"
    assert ("POST", "/api/models/user/from-child/commit/main") in local_hub.requests
