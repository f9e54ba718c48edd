"""Run the ``neurofm`` command in a subprocess, as a user would."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str, env: dict | None = None, timeout: int = 1200) -> subprocess.CompletedProcess:
    """``python -m neurofm.cli *args``; output captured as text (env: this process's by default).

    The timeout is a guard against hangs, far above any command's time on a loaded machine."""
    return subprocess.run([sys.executable, "-m", "neurofm.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)
