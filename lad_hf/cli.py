"""The `lad-hf` command."""

import argparse
import importlib
import sys

from . import __version__


# Commands whose options are dataclass fields read by HfArgumentParser (`lad-hf COMMAND --help` lists them).
RECIPE_COMMANDS = {
    "train": ("train", "Train a supervised baseline of any segmentation model."),
    "train-teacher": ("train_teacher", "Train a LAD teacher (noised label channel, dual-path consistency)."),
    "distill": ("distill", "Distil a frozen teacher (LAD or conventional) into an image-only student with CWD."),
    "self-distill": ("self_distill", "SDES self-distillation: expert decoders on the student's encoder, no teacher."),
    "evaluate": ("evaluate", "mIoU on a split; flip, multi-scale and sliding-window testing."),
    "predict": ("predict", "Segment image files or folders: PNG class maps and colour overlays."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lad-hf",
        description="Label Assisted Distillation (LAD) for semantic segmentation, on the Hugging Face stack.",
    )
    parser.add_argument("--version", action="version", version=f"lad-hf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in RECIPE_COMMANDS.items():
        command = commands.add_parser(name, help=help_text + " Takes --config recipe.yaml.", add_help=False)
        command.add_argument("options", nargs=argparse.REMAINDER)

    demo = commands.add_parser(
        "demo",
        help="Train and compare LAD with its baselines on the built-in digit-scenes benchmark (CPU, minutes).",
        description="Builds the digit-scenes benchmark if missing, then trains and tests: the student alone, a LAD "
        "teacher, the student distilled from it with CWD, the student distilled from a bigger image-only teacher, "
        "and the control: the student distilled from a same-size image-only teacher. Writes results.md, "
        "results.json, predictions.png and curves.png. Finished runs are reused, so a crashed demo resumes.",
    )
    demo.add_argument(
        "--output-dir", default="lad-demo", help="Where the runs and the results go (default: %(default)s)."
    )
    demo.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="Seeds to run; more than one reports mean ± std."
    )
    demo.add_argument(
        "--budget", type=float, default=1.0, help="Scale of every run's number of steps (default: %(default)s)."
    )
    demo.add_argument("--data-dir", default=None, help="The digit-scenes folder (default: <output-dir>/digit_scenes).")
    demo.add_argument("--no-progress", action="store_true", help="Hide the progress bars.")
    demo.add_argument(
        "--methods",
        nargs="+",
        default=[],
        choices=["fakd", "lad_fakd", "sdes"],
        help="Add rows on the same student and budget: FAKD from the big teacher, LAD + FAKD, SDES.",
    )

    build = commands.add_parser(
        "build-digit-scenes",
        help="Write the digit-scenes benchmark as a Hub-format dataset folder.",
        description="Writes parquet shards (train / validation / test), README.md, id2label.json and preview.png.",
    )
    build.add_argument("out_dir", help="The dataset folder to write.")
    build.add_argument("--seed", type=int, default=0, help="Seed of the scene composition (default: %(default)s).")
    build.add_argument("--overwrite", action="store_true", help="Replace a folder built with other arguments.")
    return parser


def run_recipe_command(name: str, argv: list[str]) -> int:
    """Run `lad-hf NAME ARGV`; a bad input ends it with its message (exit 2), without a traceback."""
    module = importlib.import_module(f".commands.{RECIPE_COMMANDS[name][0]}", __package__)
    try:
        module.main(argv, prog=f"lad-hf {name}")
    except ValueError as error:
        print(f"lad-hf {name}: error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in RECIPE_COMMANDS:
        return run_recipe_command(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "build-digit-scenes":
        from .data import build_digit_scenes

        try:
            path = build_digit_scenes(args.out_dir, seed=args.seed, overwrite=args.overwrite)
        except FileExistsError as error:
            parser.error(f"{error} (--overwrite)")
        print(f"Digit scenes in {path}")
        return 0
    if args.command == "demo":
        from .demo import run_demo

        try:
            run_demo(
                args.output_dir,
                seeds=tuple(args.seeds),
                budget=args.budget,
                data_dir=args.data_dir,
                show_progress=not args.no_progress,
                methods=tuple(args.methods),
            )
        except ValueError as error:
            parser.error(str(error))
        return 0
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    raise SystemExit(main())
