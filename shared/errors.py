"""User-facing errors: one line that names the file, key or flag, exit status 2."""
from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import NoReturn


class UserError(Exception):
    """A mistake the user can fix (bad path, corrupt file, wrong flag).

    Command-line entry points print its message on one line and exit with
    status 2 instead of showing a traceback.
    """


EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3  # a training run stopped on a non-finite loss


class RunStopped(Exception):
    """A run that ended early, not by the user's mistake: a signal (exit status 128 + its number) or a non-finite loss (3).

    Its message says what was kept and how to go on; the command-line entry
    points print it on one line and exit with `status`.
    """

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


def run_cli(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a command-line `main`, turning a UserError into a one-line error."""
    try:
        main(argv)
    except UserError as e:
        fail(str(e))
    except RunStopped as e:
        print(f"error: {e}" if e.status == EXIT_DIVERGED else str(e), file=sys.stderr)
        raise SystemExit(e.status) from None
    except KeyboardInterrupt:  # outside a training loop, or a second Ctrl-C inside one
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
