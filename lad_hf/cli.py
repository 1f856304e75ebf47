"""The `lad-hf` command."""

import argparse

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lad-hf",
        description="Label Assisted Distillation (LAD) for semantic segmentation, on the Hugging Face stack.",
    )
    parser.add_argument("--version", action="version", version=f"lad-hf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

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

    build = commands.add_parser(
        "build-digit-scenes",
        help="Write the digit-scenes benchmark as a Hub-format dataset folder.",
        description="Writes parquet shards (train / validation / test), README.md, id2label.json and preview.png.",
    )
    build.add_argument("out_dir", help="The dataset folder to write.")
    build.add_argument("--seed", type=int, default=0, help="Seed of the scene composition (default: %(default)s).")
    build.add_argument("--overwrite", action="store_true", help="Replace a folder built with other arguments.")
    return parser


def main(argv: list[str] | None = None) -> int:
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
            )
        except ValueError as error:
            parser.error(str(error))
        return 0
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    raise SystemExit(main())
