"""The `lad-hf` command."""

import argparse

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lad-hf",
        description="Label Assisted Distillation (LAD) for semantic segmentation, on the Hugging Face stack.",
    )
    parser.add_argument("--version", action="version", version=f"lad-hf {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
