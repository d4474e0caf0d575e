"""Child processes of the tests: a Python in the repository with one thread."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
"""The repository."""


def spawn_python(code: str, **env: str) -> subprocess.Popen:
    """A child Python running ``code`` (dedented) in the repository, one thread, with the extra
    environment ``env``; stdout and stderr piped as text."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
