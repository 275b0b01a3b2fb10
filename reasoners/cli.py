"""The command-line convention of reasoners' entry points: user errors in one line.

(The ``gridloop`` command that dispatches to every entry point is :mod:`gridloop.cli`.)

A bad value, path, index, config key or checkpoint ends with one line on stderr, ``error:
<what is wrong and how to fix it>``, and exit code 2; no traceback unless ``HYDRA_FULL_ERROR=1`` or
``--debug``. Hydra would print a trimmed traceback (or several lines for a config-composition error)
and exit 1: :func:`user_errors` wraps the task function, and :func:`run_hydra` replaces Hydra's
reporter for config errors for the duration of the call. Exceptions that are not user errors (bugs)
still print their traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

# What a user can cause with a bad argument or file; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IndexError)


def debugging() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def one_line(ex: BaseException) -> str:
    """The message of ``ex`` (and of a config error's cause) on one line, without Hydra's hints: a
    line ending in a colon takes the lines after it as a comma-separated list."""
    parts = [str(ex)]
    cause = ex.__cause__
    if cause is not None and type(cause).__module__.startswith("omegaconf"):
        parts.append(str(cause))
    entries: list[str] = []
    listing = False
    for text in parts:
        for line in (raw.strip() for raw in text.splitlines()):
            if not line or line.startswith(("full_key:", "object_type=", "reference_type=")):
                continue
            if line.startswith("Config search path"):
                break
            if listing and entries:
                entries[-1] += (" " if entries[-1].endswith(":") else ", ") + line
            elif line not in entries:
                entries.append(line)
            listing = listing or line.endswith(":")
        listing = False
    joined = ""
    for entry in entries:
        joined += entry if not joined else (" " if joined.endswith((".", ";")) else "; ") + entry
    return joined or type(ex).__name__


def _report(ex: BaseException) -> None:
    print(f"error: {one_line(ex)}", file=sys.stderr)


def user_errors(extra: tuple[type[BaseException], ...] = ()):
    """Decorator for a Hydra task function: a user error (or one of ``extra``) raised inside it ends
    in one line and exit code 2 (Hydra would print a traceback and exit 1)."""

    def wrap(task):
        @functools.wraps(task)
        def run(*args, **kwargs):
            try:
                return task(*args, **kwargs)
            except (*USER_ERRORS, *extra) as ex:
                if debugging():
                    raise
                _report(ex)
                sys.exit(2)

        return run

    return wrap


def run_hydra(main: Callable[[], object]) -> None:
    """Call a ``@hydra.main`` function so that a config error (an unknown key, a missing config, a
    value of the wrong type) ends in one line and exit code 2; errors inside the task are
    :func:`user_errors`' business."""
    import hydra._internal.utils as hydra_utils
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    def report(func):
        try:
            return func()
        except (*USER_ERRORS, HydraException, OmegaConfBaseException) as ex:
            _report(ex)
            sys.exit(2)

    original = hydra_utils.run_and_report
    if not debugging():
        hydra_utils.run_and_report = report
    try:
        main()
    finally:
        hydra_utils.run_and_report = original
