import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image, List
from datasets.distributed import split_dataset_by_node
from PIL import Image as PILImage

from lad_hf.benchmark.digit_scenes import (
    DIGIT_SCENES_ID2LABEL,
    build_digit_scenes,
    compose_scene,
    load_mnist_digits,
    split_digits,
)
from lad_hf.data import SegmentationCollator, SegmentationTransforms, label_lookup_table, load_segmentation_dataset


def png(array: np.ndarray, mode: str | None = None) -> dict:
    buffer = io.BytesIO()
    PILImage.fromarray(array, mode=mode).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def write_parquet(path: Path, rows: list[dict], image_column="image", label_column="label") -> Path:
    features = Features({image_column: Image(), label_column: Image()})
    Dataset.from_dict(
        {image_column: [r["image"] for r in rows], label_column: [r["label"] for r in rows]}, features=features
    ).to_parquet(path)
    return path


def pairs(count: int = 4, size: tuple[int, int] = (12, 16), num_labels: int = 3, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "image": png(rng.integers(0, 256, (*size, 3), dtype=np.uint8)),
            "label": png(rng.integers(0, num_labels, size, dtype=np.uint8)),
        }
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def digit_scenes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "digit_scenes"
    return build_digit_scenes(
        out,
        seed=0,
        num_scenes={"train": 40, "validation": 12, "test": 12},
        num_shards={"train": 4, "validation": 2, "test": 2},
    )


# Transforms


def test_train_transform_crops_pads_flips_and_normalises():
    image = np.full((20, 30, 3), 255, dtype=np.uint8)
    label = np.ones((20, 30), dtype=np.int64)
    transform = SegmentationTransforms(
        (48, 48), scale_range=(1.0, 1.0), seed=0, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    pixels, labels = transform(image, label)
    assert pixels.shape == (3, 48, 48) and labels.shape == (48, 48)
    # The 20x30 image fills part of the crop; the padding is ignore_index in the label, black in the image.
    assert set(labels.unique().tolist()) == {1, 255}
    assert torch.allclose(pixels[:, labels == 1], torch.ones(1))
    assert torch.allclose(pixels[:, labels == 255], -torch.ones(1))


def test_train_transform_keeps_image_and_label_aligned():
    # The label is a function of the image column, so any misaligned flip, crop or scale breaks the relation.
    columns = np.tile(np.arange(64, dtype=np.uint8) * 4, (32, 1))
    image = np.stack([columns] * 3, axis=-1)
    label = (columns // 64).astype(np.int64)  # 4 vertical bands
    transform = SegmentationTransforms((24, 24), image_mean=[0, 0, 0], image_std=[1, 1, 1], seed=1)
    for _ in range(20):
        pixels, labels = transform(image, label)
        valid = labels != 255
        band_of_pixel = (pixels[0] * 255 // 64).clamp(max=3).long()
        agree = (band_of_pixel[valid] == labels[valid]).float().mean()
        assert agree > 0.9  # bilinear resizing blurs band edges a little; labels are never interpolated
        assert set(labels.unique().tolist()) <= {0, 1, 2, 3, 255}


def test_eval_transform_resizes_or_pads():
    image, label = np.zeros((30, 40, 3), dtype=np.uint8), np.full((30, 40), 2, dtype=np.int64)
    pixels, labels = SegmentationTransforms((16, 16), train=False)(image, label)
    assert pixels.shape == (3, 16, 16) and set(labels.unique().tolist()) == {2}
    pixels, labels = SegmentationTransforms((64, 64), train=False, eval_mode="pad")(image, label)
    assert pixels.shape == (3, 64, 64)
    assert (labels[:30, :40] == 2).all() and (labels[30:] == 255).all()


def test_collator_stacks_and_refuses_mixed_sizes():
    collate = SegmentationCollator()
    batch = collate([{"pixel_values": torch.zeros(3, 4, 4), "labels": torch.zeros(4, 4, dtype=torch.long)}] * 2)
    assert batch["pixel_values"].shape == (2, 3, 4, 4) and batch["labels"].shape == (2, 4, 4)
    with pytest.raises(ValueError, match="different sizes"):
        collate(
            [
                {"pixel_values": torch.zeros(3, 4, 4), "labels": torch.zeros(4, 4)},
                {"pixel_values": torch.zeros(3, 5, 4), "labels": torch.zeros(5, 4)},
            ]
        )


# Label preprocessing


def test_label_lookup_tables():
    reduce = label_lookup_table(reduce_labels=True)
    assert reduce[np.array([0, 1, 150, 255])].tolist() == [255, 0, 149, 255]
    mapping = label_lookup_table(label_mapping={7: 0, 26: 13})
    assert mapping[np.array([7, 26, 0, 33])].tolist() == [0, 13, 255, 255]
    assert label_lookup_table() is None


# Loading


def test_local_hub_folder_streaming_and_not(digit_scenes):
    dataset = load_segmentation_dataset(str(digit_scenes), "validation")
    assert len(dataset) == 12
    row = dataset[0]
    assert row["image"].shape == (64, 64, 3) and row["image"].dtype == np.uint8
    assert row["label"].shape == (64, 64) and row["label"].max() <= 10
    stream = load_segmentation_dataset(str(digit_scenes), "validation", streaming=True)
    first = next(iter(stream))
    assert np.array_equal(first["image"], row["image"]) and np.array_equal(first["label"], row["label"])


def test_two_ranks_read_every_sample_exactly_once(digit_scenes):
    def keys(dataset):
        return [row["label"].tobytes() + row["image"].tobytes() for row in dataset]

    everything = keys(load_segmentation_dataset(str(digit_scenes), "train", streaming=True))
    stream = load_segmentation_dataset(str(digit_scenes), "train", streaming=True, shuffle_buffer_size=8)
    assert stream.n_shards == 4
    ranks = [keys(split_dataset_by_node(stream, rank=rank, world_size=2)) for rank in (0, 1)]
    assert len(ranks[0]) + len(ranks[1]) == len(everything) == 40
    assert sorted(ranks[0] + ranks[1]) == sorted(everything)  # every sample once, none twice


def test_parquet_files_columns_and_class_names(tmp_path):
    rows = pairs(3)
    path = write_parquet(tmp_path / "part.parquet", rows, image_column="img", label_column="annotation")
    dataset = load_segmentation_dataset(str(path), id2label={0: "a", 1: "b", 2: "c"})
    assert len(dataset) == 3 and dataset[0]["label"].shape == (12, 16)
    with pytest.raises(ValueError, match=r"columns are \['img', 'annotation'\]"):
        load_segmentation_dataset(str(path), label_column="mask", num_labels=3)


def test_class_names_from_a_classlabel_feature(tmp_path):
    names = ["sky", "road", "car"]
    features = Features({"image": Image(), "label": List(List(ClassLabel(names=names)))})
    image = png(np.zeros((2, 3, 3), dtype=np.uint8))
    Dataset.from_dict({"image": [image], "label": [[[0, 1, 2], [2, 1, 0]]]}, features=features).to_parquet(
        tmp_path / "x.parquet"
    )
    from datasets import load_dataset

    from lad_hf.data import find_id2label

    raw = load_dataset("parquet", data_files=str(tmp_path / "x.parquet"), split="train")
    assert find_id2label(str(tmp_path / "x.parquet"), raw.features, "label") == {0: "sky", 1: "road", 2: "car"}


def test_imagefolder_with_label_files(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["file_name,label_file_name"]
    for i in range(3):
        PILImage.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(
            tmp_path / f"{i}.png"
        )  # grayscale
        PILImage.fromarray(rng.integers(0, 3, (8, 8), dtype=np.uint8)).save(tmp_path / f"{i}_label.png")
        lines.append(f"{i}.png,{i}_label.png")
    (tmp_path / "metadata.csv").write_text("\n".join(lines))
    (tmp_path / "id2label.json").write_text(json.dumps({"0": "a", "1": "b", "2": "c"}))
    dataset = load_segmentation_dataset(str(tmp_path))
    assert len(dataset) == 3
    assert dataset[0]["image"].shape == (8, 8, 3)  # grayscale converted to RGB
    assert dataset[0]["label"].max() < 3


def test_rgba_images_are_converted(tmp_path):
    rows = [
        {"image": png(np.full((4, 4, 4), 200, dtype=np.uint8), mode="RGBA"), "label": png(np.zeros((4, 4), np.uint8))}
    ]
    dataset = load_segmentation_dataset(str(write_parquet(tmp_path / "x.parquet", rows)), num_labels=2)
    assert dataset[0]["image"].shape == (4, 4, 3)


def test_bad_samples_are_named(tmp_path):
    wrong_values = pairs(1, num_labels=7)
    path = write_parquet(tmp_path / "values.parquet", wrong_values)
    with pytest.raises(ValueError, match=r"outside the expected range \[0, 3\)"):
        load_segmentation_dataset(str(path), num_labels=3)[0]

    mismatched = [{"image": png(np.zeros((8, 8, 3), np.uint8)), "label": png(np.zeros((8, 6), np.uint8))}]
    path = write_parquet(tmp_path / "sizes.parquet", mismatched)
    with pytest.raises(ValueError, match="row 0: the image is 8x8 but its label map 6x8"):  # the dataset row
        load_segmentation_dataset(str(path), num_labels=3)[0]

    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 0] = 1
    colour_mask = [{"image": png(np.zeros((8, 8, 3), np.uint8)), "label": png(colour)}]
    path = write_parquet(tmp_path / "rgb.parquet", colour_mask)
    with pytest.raises(ValueError, match="one class id per pixel"):
        load_segmentation_dataset(str(path), num_labels=3)[0]


def test_corrupt_images_fail_in_a_dataset_and_are_skipped_in_a_stream(tmp_path):
    rows = pairs(4)
    rows[1] = {"image": {"bytes": b"not a png at all", "path": None}, "label": rows[1]["label"]}
    path = write_parquet(tmp_path / "corrupt.parquet", rows)
    dataset = load_segmentation_dataset(str(path), num_labels=3)
    with pytest.raises(ValueError, match="Cannot decode"):
        dataset[1]
    stream = load_segmentation_dataset(str(path), num_labels=3, streaming=True)
    assert len(list(stream)) == 3


def test_transform_gives_rows_for_the_trainers(digit_scenes):
    transform = SegmentationTransforms((32, 32), seed=0)
    dataset = load_segmentation_dataset(str(digit_scenes), "train", transform=transform)
    row = dataset[0]
    assert row["pixel_values"].shape == (3, 32, 32) and row["labels"].shape == (32, 32)


def test_streaming_dataset_trains_with_max_steps(digit_scenes, tmp_path):
    from conftest import tiny_lad_seg_config, trainer_args

    from lad_hf import LadSegForSemanticSegmentation, SegmentationConfig, SegmentationTrainer

    stream = load_segmentation_dataset(
        str(digit_scenes), "train", streaming=True, transform=SegmentationTransforms((32, 32), seed=0)
    )
    model = LadSegForSemanticSegmentation(tiny_lad_seg_config(num_labels=11))
    args = trainer_args(SegmentationConfig, tmp_path, max_steps=3, per_device_train_batch_size=4)
    trainer = SegmentationTrainer(model=model, args=args, train_dataset=stream, data_collator=SegmentationCollator())
    trainer.train()
    assert trainer.state.global_step == 3


# The digit-scenes benchmark


def test_digit_splits_share_no_digit_image():
    digits, labels = load_mnist_digits()
    assert digits.shape == (5000, 28, 28) and np.bincount(labels).tolist() == [500] * 10
    splits = split_digits(labels)
    train, validation, test = (set(splits[name].tolist()) for name in ("train", "validation", "test"))
    assert not (train & validation or train & test or validation & test)
    assert len(train | validation | test) == 5000


def test_digit_scenes_are_deterministic_and_hub_format(digit_scenes, tmp_path):
    again = build_digit_scenes(
        tmp_path / "again",
        seed=0,
        num_scenes={"train": 40, "validation": 12, "test": 12},
        num_shards={"train": 4, "validation": 2, "test": 2},
    )
    first = load_segmentation_dataset(str(digit_scenes), "test")
    second = load_segmentation_dataset(str(again), "test")
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])
    assert json.loads((digit_scenes / "id2label.json").read_text()) == {
        str(k): v for k, v in DIGIT_SCENES_ID2LABEL.items()
    }
    assert "configs:" in (digit_scenes / "README.md").read_text()
    assert (digit_scenes / "preview.png").exists()
    labels = np.stack([row["label"] for row in load_segmentation_dataset(str(digit_scenes), "train")])
    assert set(np.unique(labels).tolist()) == set(range(11))  # background and all ten digits
    assert 0.1 < (labels > 0).mean() < 0.6  # dense scenes, yet mostly background


def test_digit_scenes_hide_grouping_and_show_clutter():
    # What the label channel is meant to carry: digits that touch one another, and ink that is not a digit.
    digits, labels = load_mnist_digits()
    rng = np.random.default_rng(0)
    touching = clutter = 0
    for _ in range(50):
        image, label = compose_scene(digits, labels, rng)
        horizontal = (label[:, 1:] != label[:, :-1]) & (label[:, 1:] > 0) & (label[:, :-1] > 0)
        vertical = (label[1:] != label[:-1]) & (label[1:] > 0) & (label[:-1] > 0)
        touching += bool(horizontal.any() or vertical.any())
        # Clutter: background pixels far from the local background colour, as ink is.
        background = image[label == 0].astype(np.float32)
        ink = np.abs(background - np.median(background, axis=0)).sum(axis=1) > 120
        clutter += ink.mean() > 0.01
    assert touching >= 20  # distinct digits meet in many scenes
    assert clutter >= 40  # nearly every scene has digit-like clutter labelled background


def test_digit_scenes_rebuild_rules(digit_scenes, tmp_path):
    settings = dict(
        num_scenes={"train": 40, "validation": 12, "test": 12}, num_shards={"train": 4, "validation": 2, "test": 2}
    )
    assert build_digit_scenes(digit_scenes, seed=0, **settings) == digit_scenes  # same arguments: reused as it is
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_digit_scenes(digit_scenes, seed=1, **settings)


# Presets, each on a local fixture with the dataset's schema and raw label values


@pytest.mark.parametrize(
    ("preset", "raw_to_train"),
    [
        ("cityscapes", {7: 0, 26: 13, 33: 18, 0: 255, 6: 255}),  # labelIds -> trainIds
        ("ade20k", {1: 0, 150: 149, 0: 255}),  # reduce_labels
        ("pascal_voc_aug", {0: 0, 20: 20, 255: 255}),
        ("coco_stuff_10k", {0: 0, 12: 11, 181: 170, 255: 255}),
        ("coco_stuff_164k", {0: 0, 12: 11, 91: 80, 181: 170, 255: 255}),
    ],
)
def test_presets_on_local_fixtures(tmp_path, preset, raw_to_train):
    from lad_hf.data import PRESETS

    spec = PRESETS[preset]
    raw = np.array(list(raw_to_train), dtype=np.uint8).reshape(1, -1).repeat(2, axis=0)
    row = {"image": png(np.zeros((*raw.shape, 3), np.uint8)), "label": png(raw)}
    path = write_parquet(tmp_path / "fixture.parquet", [row], spec.image_column, spec.label_column)
    dataset = load_segmentation_dataset(str(path), preset=preset)
    assert dataset[0]["label"][0].tolist() == list(raw_to_train.values())
    assert spec.num_labels == {"cityscapes": 19, "ade20k": 150, "pascal_voc_aug": 21}.get(preset, 171)


def test_unmapped_raw_ids_are_refused_or_ignored(tmp_path):
    # COCO-Stuff's unused thing id 11 maps to ignore; a value beyond the table's classes fails, naming it.
    row = {"image": png(np.zeros((1, 2, 3), np.uint8)), "label": png(np.array([[11, 0]], np.uint8))}
    path = write_parquet(tmp_path / "coco.parquet", [row], "image", "mask")
    assert load_segmentation_dataset(str(path), preset="coco_stuff_164k")[0]["label"].tolist() == [[255, 0]]
    row = {"image": png(np.zeros((1, 2, 3), np.uint8)), "label": png(np.array([[151, 0]], np.uint8))}
    path = write_parquet(tmp_path / "ade.parquet", [row], "image", "annotation")
    with pytest.raises(ValueError, match=r"\[150\]"):
        load_segmentation_dataset(str(path), preset="ade20k")[0]
    with pytest.raises(ValueError, match="Unknown preset"):
        load_segmentation_dataset(str(path), preset="kitti")


def test_a_rebuilt_folder_is_not_read_from_a_stale_cache(tmp_path):
    settings = dict(num_shards={"train": 1, "validation": 1, "test": 1})
    path = build_digit_scenes(
        tmp_path / "digit_scenes", num_scenes={"train": 6, "validation": 2, "test": 2}, **settings
    )
    assert len(load_segmentation_dataset(str(path), "train")) == 6
    build_digit_scenes(path, num_scenes={"train": 9, "validation": 2, "test": 2}, overwrite=True, **settings)
    assert len(load_segmentation_dataset(str(path), "train")) == 9
