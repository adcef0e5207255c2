"""``python -m chainrule``: the XOR demo and a gradient check; ``demo NAME`` runs the others.

Needs only NumPy; the demos that load scikit-learn's data sets say how to install it.
The ``chainrule`` console script is this module's :func:`main`.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from . import __version__
from .demos import (DEMOS, INSTALL_HINT, build_parser, demo_list, exit_quietly_on_broken_pipe,
                    run_default, run_demo)


def _prog() -> str:
    base = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m chainrule" if base in ("", "-c", "__main__.py") else base


def make_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The top-level parser: no command runs the default demo; ``demo NAME [options]``."""
    prog = prog or _prog()
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="chainrule: backpropagation done right.\n\n"
                    "With no command: trains a 2-4-1 network on XOR (the loss falling, the\n"
                    "predictions, the decision values), then checks backpropagation's gradients\n"
                    "against central finite differences. Needs only NumPy.",
        epilog=f"demos:\n{demo_list()}\n\n"
               f"examples:\n  {prog}\n  {prog} demo digits\n  {prog} demo house_prices "
               f"--quick\n  {prog} demo NAME --help     (the demo's options)\n\n"
               f"The demos marked [needs scikit-learn] load its bundled data sets:\n"
               f"  {INSTALL_HINT}")
    parser.add_argument("--version", action="version", version=f"chainrule {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="run one demo: " + ", ".join(DEMOS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"Runs one demo.\n\ndemos:\n{demo_list()}")
    names = demo.add_subparsers(dest="name", metavar="NAME", required=True)
    for name, d in DEMOS.items():
        sub = names.add_parser(name, help=d.summary, description=d.summary)
        build_parser(name, parser=sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 when a demo's check fails or scikit-learn is missing,
        2 for bad arguments (an unknown demo name included).
    """
    args = vars(make_parser().parse_args(argv))
    command = args.pop("command")
    if command is None:
        return exit_quietly_on_broken_pipe(run_default)
    name = args.pop("name")
    return exit_quietly_on_broken_pipe(lambda: run_demo(name, args))


if __name__ == "__main__":
    sys.exit(main())
