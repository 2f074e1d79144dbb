"""User-facing errors: one line that names the file, key or flag, exit status 2."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn


class UserError(Exception):
    """A mistake the user can fix (bad path, corrupt file, wrong flag).

    Command-line entry points print its message on one line and exit with
    status 2 instead of showing a traceback.
    """


EXIT_USER_ERROR = 2


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


def run_cli(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a command-line `main`, turning a UserError into a one-line error."""
    try:
        main(argv)
    except UserError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted")
