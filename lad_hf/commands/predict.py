"""`lad-hf predict`: segment image files or folders; write a PNG class map and a colour overlay per image.

    lad-hf predict --model_name_or_path runs/student --inputs photos/ street.jpg --output_dir predictions

Each `<name>.png` is a palette PNG whose pixel values are the class ids (viewers show them in colour); each
`<name>_overlay.png` blends the class colours over the image.
"""

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from ..data import SegmentationTransforms
from ..hub import check_hub_ids, load_segmentation_model
from ..inference import segment
from ..label_channel.noising import is_lad_teacher
from ..utils.files import atomic_path
from ..utils.visualization import class_palette, overlay
from .arguments import InferenceArguments, PredictArguments, parse_arguments
from .common import load_image_processor


DESCRIPTION = "Segment images with a trained model: PNG class maps and colour overlays."
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def find_images(inputs: list[str]) -> list[Path]:
    """The image files named, and those in the folders named (sorted); errors name what is missing."""
    files = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"No file or folder {os.path.abspath(path)}.")
    stems = [p.stem for p in files]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise ValueError(f"Several inputs are named {repeated}: their outputs would overwrite each other.")
    return files


def check_images(files: list[Path]) -> None:
    """Decode every image once first, so that a corrupt file stops the run before any work, naming all bad files."""
    bad = []
    for path in files:
        try:
            with Image.open(path) as image:
                image.load()
        except (OSError, UnidentifiedImageError, SyntaxError) as error:
            bad.append(f"{path} ({error})")
    if bad:
        raise ValueError("Cannot decode: " + "; ".join(bad) + ". Remove or repair these files.")


def _save(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def main(argv: list[str] | None = None, prog: str = "lad-hf predict") -> list[Path]:
    args, inference, _ = parse_arguments((PredictArguments, InferenceArguments), argv, prog, DESCRIPTION)
    if args.model_name_or_path is None:
        raise ValueError("Name the model: --model_name_or_path (a Hub id or the folder of a trained run).")
    if not args.inputs:
        raise ValueError("Name the images: --inputs FILE_OR_FOLDER [...].")
    files = find_images(args.inputs)
    check_images(files)
    check_hub_ids(("the model", args.model_name_or_path, "model"))
    model = load_segmentation_model(args.model_name_or_path).to(args.device).eval()
    if is_lad_teacher(model.config):
        raise ValueError(
            f"{args.model_name_or_path} is a LAD teacher: it needs the ground-truth label as input. Predict with a "
            "student (or any image-only model)."
        )
    if model.config.num_labels > 256:
        raise ValueError(f"The model predicts {model.config.num_labels} classes; PNG class maps hold at most 256.")
    # The normalisation the model was trained with: that of its saved image processor, else ImageNet's.
    transforms = SegmentationTransforms.from_image_processor(load_image_processor(args.model_name_or_path), (1, 1))
    window = tuple(inference.window_size) if inference.sliding_window else None
    if inference.sliding_window and window is None:
        raise ValueError("sliding_window needs --window_size height width.")
    stride = tuple(inference.window_stride) if inference.window_stride else None
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    palette = class_palette()
    written = []
    for path in tqdm(files, desc="predict", unit="image"):
        with Image.open(path) as image:
            array = np.array(image.convert("RGB"))
        pixels = torch.from_numpy(array).permute(2, 0, 1)[None].float().div(255)
        if args.image_size is not None:
            pixels = F.interpolate(pixels, size=tuple(args.image_size), mode="bilinear", antialias=True)
        pixels = transforms.normalize(pixels).to(args.device)
        with torch.inference_mode():
            probabilities = segment(model, pixels, inference.scales, inference.flip, window, stride)
            probabilities = F.interpolate(probabilities, size=array.shape[:2], mode="bilinear")
        classes = probabilities.argmax(1)[0].byte().cpu().numpy()
        class_map = Image.fromarray(classes, mode="P")
        class_map.putpalette(palette.flatten().tolist())
        _save(class_map, output_dir / f"{path.stem}.png")
        _save(Image.fromarray(overlay(array, classes, args.overlay_alpha)), output_dir / f"{path.stem}_overlay.png")
        written.append(output_dir / f"{path.stem}.png")
    return written
