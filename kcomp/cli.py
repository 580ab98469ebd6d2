"""The kcomp command line. Verbs arrive with later work (build, summary, check, fit)."""

import argparse
import sys

import kcomp


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kcomp",
        description="Compile Keras-style models to fused Triton GPU kernels.",
    )
    parser.add_argument("--version", action="version", version=f"kcomp {kcomp.__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_subparsers(dest="verb", metavar="VERB")
    return parser


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
