"""Is data loading the bottleneck of a training step? Images per second of the training pipeline (PNG decoding, label
remapping, random rescale, crop to 512x1024, flip, normalisation) on 1024x2048 Cityscapes-like images, against the
time of one DeepLabV3-R18 training step at the same batch size, measured in one run.

    python benchmarks/data_pipeline.py                   # 1024x2048 -> 512x1024, batch 2
    python benchmarks/data_pipeline.py --smoke           # tiny sizes, seconds: keeps the script working

Prints a table and writes JSON (--output). A ratio (data time per batch / step time) well below 1 means one data
worker keeps up with training; the Trainer's `dataloader_num_workers` divides the data time further.
"""

import argparse
import io
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, Features, Image
from PIL import Image as PILImage

from lad_hf import LadSegConfig, LadSegForSemanticSegmentation
from lad_hf.data import PRESETS, SegmentationTransforms, load_segmentation_dataset
from lad_hf.utils.files import write_json


def street_like_pair(rng: np.random.Generator, height: int, width: int) -> tuple[bytes, bytes]:
    """A smooth image with blocky regions and its Cityscapes labelId map, as PNG bytes (compress like real photos)."""
    rows, cols = np.mgrid[0:height, 0:width]
    label = np.full((height, width), 7, dtype=np.uint8)  # road
    for _ in range(12):
        top, left = rng.integers(0, height), rng.integers(0, width)
        block = (rows >= top) & (rows < top + height // 4) & (cols >= left) & (cols < left + width // 6)
        label[block] = rng.choice([11, 17, 21, 23, 24, 26])
    colours = rng.integers(0, 256, (34, 3), dtype=np.uint8)
    image = (
        colours[label].astype(np.float32) + 20 * np.sin(rows / 37.0)[..., None] + 20 * np.cos(cols / 53.0)[..., None]
    )
    image = np.clip(image, 0, 255).astype(np.uint8)

    def encode(array):
        buffer = io.BytesIO()
        PILImage.fromarray(array).save(buffer, format="PNG")
        return buffer.getvalue()

    return encode(image), encode(label)


def time_data(path: str, crop: tuple[int, int], batch_size: int, batches: int) -> list[float]:
    transform = SegmentationTransforms(crop, seed=0)
    dataset = load_segmentation_dataset(path, preset="cityscapes", transform=transform)
    times = []
    for batch in range(batches + 1):  # the first batch warms up
        start = time.perf_counter()
        rows = [dataset[(batch * batch_size + i) % len(dataset)] for i in range(batch_size)]
        torch.stack([row["pixel_values"] for row in rows])
        times.append(time.perf_counter() - start)
    return times[1:]


def time_step(crop: tuple[int, int], batch_size: int, steps: int) -> tuple[list[float], int]:
    model = LadSegForSemanticSegmentation(LadSegConfig(backbone="resnet-18", decode_head="aspp", num_labels=19))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pixel_values = torch.randn(batch_size, 3, *crop)
    labels = torch.randint(0, 19, (batch_size, *crop))
    times = []
    for _ in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        loss = model(pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return times[1:], model.num_parameters()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_size", type=int, nargs=2, default=[1024, 2048])
    parser.add_argument("--crop_size", type=int, nargs=2, default=[512, 1024])
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4, help="timed data batches (after one warm-up)")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps (after one warm-up)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check that the script runs")
    parser.add_argument("--output", default="benchmarks/results/data_pipeline.json")
    args = parser.parse_args()
    if args.smoke:
        args.image_size, args.crop_size, args.batches, args.steps = [64, 128], [32, 64], 2, 1

    rng = np.random.default_rng(0)
    num_images = args.batch_size * (args.batches + 1)
    pairs = [street_like_pair(rng, *args.image_size) for _ in range(num_images)]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp, "street.parquet"))
        spec = PRESETS["cityscapes"]
        Dataset.from_dict(
            {
                spec.image_column: [{"bytes": image, "path": None} for image, _ in pairs],
                spec.label_column: [{"bytes": label, "path": None} for _, label in pairs],
            },
            features=Features({spec.image_column: Image(), spec.label_column: Image()}),
        ).to_parquet(path)
        data_times = time_data(path, tuple(args.crop_size), args.batch_size, args.batches)
    step_times, parameters = time_step(tuple(args.crop_size), args.batch_size, args.steps)

    data_batch = statistics.median(data_times)
    step = statistics.median(step_times)
    result = {
        "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, CPU",
        "torch": torch.__version__,
        "image_size": args.image_size,
        "crop_size": args.crop_size,
        "batch_size": args.batch_size,
        "data_images_per_second": args.batch_size / data_batch,
        "data_seconds_per_batch": data_batch,
        "train_step_seconds": step,
        "model_parameters": parameters,
        "data_to_step_ratio": data_batch / step,
    }
    print(f"{'data pipeline':<32}{result['data_images_per_second']:>10.2f} images/s")
    print(f"{'data, one batch of ' + str(args.batch_size):<32}{data_batch:>10.3f} s")
    print(f"{'DeepLabV3-R18 training step':<32}{step:>10.3f} s")
    print(f"{'ratio data / step':<32}{result['data_to_step_ratio']:>10.3f}")
    print(
        f"({result['hardware']}, {args.image_size[0]}x{args.image_size[1]} -> {args.crop_size[0]}x{args.crop_size[1]})"
    )
    write_json(args.output, result, indent=2)


if __name__ == "__main__":
    main()
