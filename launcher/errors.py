"""How every entry point reports bad input: one line, exit status 2, no traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from core.errors import UserError


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a :class:`~core.errors.UserError` into ``error: <message>`` on stderr and exit
    status 2; with ``HYDRA_FULL_ERROR=1`` the traceback is kept, as Hydra does for its own."""
    try:
        yield
    except UserError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
