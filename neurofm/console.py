"""Logging and progress bars (rich), shared by the CLI and long-running functions."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

logger = logging.getLogger("neurofm")
T = TypeVar("T")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_stderr = Console(stderr=True)


def say(text: str) -> None:
    """Print a block of text (a summary, next steps) to stderr as it is, without log prefixes."""
    _stderr.print(text, soft_wrap=True, highlight=False, markup=False)


def setup_logging(level: int | str | None = None) -> None:
    """Route the ``neurofm`` logger through rich; level from ``NEUROFM_LOG_LEVEL`` (INFO)."""
    level = level or os.environ.get("NEUROFM_LOG_LEVEL", "INFO")
    if isinstance(level, str):
        name = level.strip().upper()
        if name.isdigit():
            level = int(name)
        elif name in LEVELS:
            level = name
        else:
            from neurofm.errors import ConfigError

            raise ConfigError(f"NEUROFM_LOG_LEVEL={level!r} is not a log level; use one of "
                              f"{', '.join(LEVELS).lower()} (any case)")
    if not any(getattr(h, "neurofm", False) for h in logger.handlers):
        if sys.stderr.isatty():
            handler = RichHandler(console=_stderr, show_path=False, rich_tracebacks=False)
            handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
        else:  # log files (SLURM, CI): one plain line per record, never wrapped or padded
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s %(message)s", "%H:%M:%S"))
        handler.neurofm = True
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)


def progress_enabled() -> bool:
    """Progress bars show on an interactive stderr unless ``NEUROFM_PROGRESS=0``."""
    flag = os.environ.get("NEUROFM_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "no")
    return sys.stderr.isatty()


def make_progress(transient: bool = False) -> Progress:
    """A rich progress bar with count, elapsed time and ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=_stderr,
        transient=transient,
        disable=not progress_enabled(),
    )


def progress_over(items: Sequence[T], description: str, every_s: float = 30.0) -> Iterator[T]:
    """``items`` one by one, with a progress bar on a terminal and otherwise (log files,
    SLURM, CI) a plain line at least every ``every_s`` seconds and at the end."""
    total = len(items)
    if progress_enabled():
        with make_progress() as progress:
            bar = progress.add_task(description, total=total)
            for item in items:
                yield item
                progress.advance(bar)
        return
    start = last = time.monotonic()
    for k, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= every_s or k == total:
            logger.info("%s: %d/%d (%.0f s)", description, k, total, now - start)
            last = now
