"""Entry point of `pancreasai`: parses arguments, runs a subcommand, maps errors to exit statuses."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from PancreasAILib import __version__
from PancreasAILib.errors import ExitCode, PancreasAIError

# Subcommand modules, in the order `--help` lists them. Each defines register(subparsers).
SUBCOMMAND_MODULES = ("inspect", "align", "segment", "demo", "synth", "train", "evaluate", "calibrate")

EPILOG = """exit status:
  0 success            3 unusable input        6 output folder exists
  1 internal error     4 inconsistent inputs   7 no pancreas found
  2 usage error        5 alignment failed      8 input too large

Research use only, not for clinical use."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pancreasai",
        description="Find and outline pancreatic cancer on multi-phase contrast CT (research use only).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pancreasai {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(f"PancreasAILib.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except PancreasAIError as error:
        print(f"pancreasai {args.command}: error: {error.problem}\n  fix: {error.fix}", file=sys.stderr)
        return int(error.exit_code)
    except KeyboardInterrupt:
        print(f"pancreasai {args.command}: interrupted; no partial outputs were kept.", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
