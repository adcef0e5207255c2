"""Shared by the example scripts: makes ``chainrule`` importable, then runs one demo's CLI.

The demos live in the package (``chainrule.demos``) so that ``python -m chainrule`` can run them
after a pip install; these scripts are thin wrappers. Run from a source checkout without an
install, they fall back to ``../python`` (after ``./dev-build.sh`` has built the extension).
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence


def run(name: str, argv: Optional[Sequence[str]] = None) -> int:
    """Runs the demo ``name`` with the script's command line; returns its exit code."""
    try:
        import chainrule  # noqa: F401
    except ImportError:
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path.insert(0, os.path.join(os.path.dirname(here), "python"))
        try:
            import chainrule  # noqa: F401
        except ImportError as e:
            print(f"error: cannot import chainrule ({e}).\nInstall it from the repository's "
                  "root folder (pip install '.[examples]'), or build it in place there "
                  "(./dev-build.sh) and run PYTHONPATH=python python examples/...",
                  file=sys.stderr)
            return 1
    from chainrule.demos import run_cli
    return run_cli(name, argv)
