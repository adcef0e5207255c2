"""Progress reporting for fit: a bar with the running loss on a terminal, lines on request.

verbose=0 is silent. verbose=1 shows a progress bar over the epochs with the latest loss (tqdm
when it is installed, a plain self-overwriting line otherwise) only when stderr is a terminal, so
logs and CI output stay clean. verbose=2 prints one line per epoch to stdout, always.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Dict, Optional


def _fmt(logs: Dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in logs.items())


class Progress:
    """Reports epochs as fit completes them; use as a context manager."""

    def __init__(self, verbose: int, epochs: int) -> None:
        if isinstance(verbose, bool) or not isinstance(verbose, int) or verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        self.epochs = epochs
        self.lines = verbose == 2
        self.bar = verbose == 1 and sys.stderr.isatty()
        self._tqdm: Optional[Any] = None
        self._start = time.monotonic()
        if self.bar:
            try:
                from tqdm.auto import tqdm
                self._tqdm = tqdm(total=epochs, unit="epoch", leave=True, file=sys.stderr)
            except ImportError:
                self._tqdm = None

    @property
    def active(self) -> bool:
        """Whether anything is shown (fit then reports epoch by epoch)."""
        return self.lines or self.bar

    def epoch_end(self, epoch: int, logs: Dict[str, float]) -> None:
        if self.lines:
            print(f"epoch {epoch + 1}/{self.epochs} {_fmt(logs)}", flush=True)
        elif self.bar and self._tqdm is not None:
            self._tqdm.set_postfix_str(_fmt(logs), refresh=False)
            self._tqdm.update(1)
        elif self.bar:
            done = epoch + 1
            width = 30
            filled = int(width * done / max(self.epochs, 1))
            elapsed = time.monotonic() - self._start
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.epochs} "
                             f"{elapsed:.1f}s {_fmt(logs)}\x1b[K")
            sys.stderr.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.bar:
            sys.stderr.write("\n")
            sys.stderr.flush()
