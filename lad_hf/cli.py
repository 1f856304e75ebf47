"""The `lad-hf` command."""

import argparse
import difflib
import functools
import importlib
import sys

from . import __version__
from .benchmark.settings import METHOD_RUNS, DemoSettings


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
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"lad-hf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_command = functools.partial(commands.add_parser, allow_abbrev=False)  # --max_step is not --max_steps
    for name, (_, help_text) in RECIPE_COMMANDS.items():
        command = add_command(name, help=help_text + " Takes --config recipe.yaml.", add_help=False)
        command.add_argument("options", nargs=argparse.REMAINDER)

    demo = add_command(
        "demo",
        help="Train and compare LAD with its baselines on the built-in digit-scenes benchmark (CPU, or a GPU if any).",
        description="Builds the digit-scenes benchmark if missing and pretrains the backbones on single digits of "
        "its train pool, then trains and tests, for each seed: the student alone; a LAD teacher, a same-size and a "
        "big image-only teacher, each to convergence; and the student distilled with CWD from each teacher. Writes "
        "results.md, results.json, predictions.png and curves.png. Finished runs are reused, so a crashed demo "
        "resumes.",
    )
    demo.add_argument(
        "--output-dir", default="lad-demo", help="Where the runs and the results go (default: %(default)s)."
    )
    demo.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="Seeds to run, mean ± std over them (default: 0 1 2)."
    )
    demo.add_argument(
        "--quick", action="store_true", help="One seed (0) instead of three: the same runs, for one seed."
    )
    demo.add_argument(
        "--train-size",
        type=int,
        default=DemoSettings.train_size,
        help="Training scenes used, the first of the train split (default: %(default)s, of 4000).",
    )
    demo.add_argument(
        "--scratch",
        action="store_true",
        help="Train every model from scratch instead of from the digit-pretrained backbones.",
    )
    demo.add_argument(
        "--budget", type=float, default=1.0, help="Scale of every run's number of steps (default: %(default)s)."
    )
    demo.add_argument("--data-dir", default=None, help="The digit-scenes folder (default: <output-dir>/digit_scenes).")
    demo.add_argument(
        "--workers",
        type=int,
        default=2,
        help="Runs trained side by side, one process each; 1 runs them in turn with progress bars "
        "(default: %(default)s).",
    )
    demo.add_argument("--no-progress", action="store_true", help="Hide the progress bars.")
    demo.add_argument(
        "--methods",
        nargs="+",
        default=[],
        choices=list(METHOD_RUNS),
        help="Add rows on the same student and budget: FAKD from the big teacher, LAD + FAKD, SDES, and the "
        "paper's comparison methods SKD, IFVD, CIRKD and MasKD from the big teacher.",
    )

    study = add_command(
        "study",
        help="Map when LAD pays on the digit scenes: budgets, training-set sizes, scratch or pretrained, ablations.",
        description="Trains, for every start (scratch, pretrained), training-set size and seed, a LAD teacher, a "
        "same-size and a big image-only teacher to convergence, then students alone and distilled from each at "
        "several budgets, and the paper's Table 8 / 9 ablations. Writes study.md, study.json, study.png and "
        "study_convergence.png (a demo's output folder works: its runs are reused). "
        "Hours on 2 CPU cores; finished runs are reused, so a crashed study resumes.",
    )
    study.add_argument(
        "--output-dir", default="lad-study", help="Where the runs and the results go (default: %(default)s)."
    )
    study.add_argument(
        "--data-dir", default=None, help="The digit-scenes folder (default: <output-dir>/digit_scenes)."
    )
    study.add_argument("--seeds", type=int, nargs="+", default=None, help="Seeds (default: 0 1 2).")
    study.add_argument(
        "--starts",
        nargs="+",
        choices=["scratch", "pretrained"],
        default=None,
        help="Which starts of the grid to run (default: scratch pretrained); the ablations need 'pretrained'.",
    )
    study.add_argument(
        "--train-sizes",
        type=int,
        nargs="+",
        default=None,
        help="Training-set sizes of the grid (default: 1000 4000); the ablations need the demo's 1000.",
    )
    study.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        default=None,
        help="The students' numbers of steps (default: 600 1200 2400, or --smoke's); the ablations need the "
        "demo's (2400).",
    )
    study.add_argument(
        "--ablation-seeds",
        type=int,
        nargs="*",
        default=None,
        help="Seeds of the Table 8 / 9 ablations (default: --seeds); with no seed, no ablations.",
    )
    study.add_argument(
        "--workers", type=int, default=2, help="Runs in parallel, one process each (default: %(default)s)."
    )
    study.add_argument(
        "--stage",
        choices=["all", "convergence", "summary"],
        default="all",
        help="'convergence': only the teachers and the students alone, to choose budgets before any distilled "
        "student is seen; 'summary': train nothing, summarise the runs of the grid that have finished, "
        "replacing the folder's study.md, study.json and figures (default: %(default)s).",
    )
    study.add_argument("--smoke", action="store_true", help="A few steps of everything: checks the study runs.")
    study.add_argument("--no-progress", action="store_true", help="Hide the progress bars.")

    build = add_command(
        "build-digit-scenes",
        help="Write the digit-scenes benchmark as a Hub-format dataset folder.",
        description="Writes parquet shards (train / validation / test), README.md, id2label.json and preview.png.",
    )
    build.add_argument("out_dir", help="The dataset folder to write.")
    build.add_argument("--seed", type=int, default=0, help="Seed of the scene composition (default: %(default)s).")
    build.add_argument("--overwrite", action="store_true", help="Replace a folder built with other arguments.")
    parser.commands = commands.choices
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
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # as the recipe commands do: name the closest option
        command = parser.commands.get(args.command, parser)
        options = sorted(o for o in command._option_string_actions if o.startswith("--"))
        name = unknown[0].split("=")[0]
        if not name.startswith("-"):
            command.error(f"unexpected argument '{unknown[0]}'; --help lists what the command takes.")
        match = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
        command.error(
            f"unknown option '{unknown[0]}'" + (f"; did you mean '{match[0]}'?" if match else "; --help lists them.")
        )
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "build-digit-scenes":
        from .benchmark.digit_scenes import build_digit_scenes

        try:
            path = build_digit_scenes(args.out_dir, seed=args.seed, overwrite=args.overwrite)
        except FileExistsError:
            parser.error(
                f"build-digit-scenes: {args.out_dir} exists and holds scenes built with other arguments (another "
                "--seed or lad_hf version): add --overwrite to replace them, or name another folder."
            )
        print(f"Digit scenes in {path}")
        return 0
    if args.command == "demo":
        from .benchmark.demo import run_demo

        if args.quick and args.seeds is not None:
            parser.error("--quick runs seed 0 alone: leave out --seeds, or leave out --quick.")
        seeds = (0,) if args.quick else tuple(args.seeds or (0, 1, 2))
        try:
            run_demo(
                args.output_dir,
                seeds=seeds,
                budget=args.budget,
                data_dir=args.data_dir,
                settings=DemoSettings(train_size=args.train_size),
                show_progress=not args.no_progress,
                methods=tuple(args.methods),
                pretrained=not args.scratch,
                workers=args.workers,
            )
        except (ValueError, FileExistsError) as error:
            parser.error(str(error))
        return 0
    if args.command == "study":
        from dataclasses import replace

        from .benchmark.study import StudySettings, run_study

        study = StudySettings.smoke() if args.smoke else StudySettings()
        if args.seeds is not None:
            study = replace(study, seeds=tuple(args.seeds))
        if args.starts is not None:
            study = replace(study, starts=tuple(dict.fromkeys(args.starts)))
        if args.train_sizes is not None:
            study = replace(study, train_sizes=tuple(dict.fromkeys(args.train_sizes)))
        if args.budgets is not None:
            study = replace(study, student_budgets=tuple(dict.fromkeys(args.budgets)))
        if args.ablation_seeds is not None:
            study = replace(study, ablation_seeds=tuple(dict.fromkeys(args.ablation_seeds)))
        try:
            run_study(
                args.output_dir,
                study,
                args.data_dir,
                workers=args.workers,
                stage=args.stage,
                show_progress=not args.no_progress,
            )
        except (ValueError, FileExistsError) as error:
            parser.error(str(error))
        return 0
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    raise SystemExit(main())
