"""Exceptions that the CLI turns into one clear line and a non-zero exit, and those lines."""

import re


class MbcError(Exception):
    """An error caused by the user's input or environment (not a bug)."""

    exit_code = 2


class RefusedError(MbcError):
    """Input refused as a whole (for instance identified data offered to ingest)."""

    exit_code = 3


class ReadOnlyStoreError(MbcError, PermissionError):
    """An attempt to write through a read-only store handle."""


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|b'[^']*'")


def one_line(text: str, limit: int = 200) -> str:
    """A single line of at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_error(exc: BaseException) -> str:
    """Exception type and message with quoted values redacted (they may be PHI)."""
    message = _QUOTED.sub("'…'", str(exc)) or "no details"
    return one_line(f"{type(exc).__name__}: {message}", 160)
