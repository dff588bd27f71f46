"""Exceptions that the CLI turns into one clear line and a non-zero exit."""


class MbcError(Exception):
    """An error caused by the user's input or environment (not a bug)."""

    exit_code = 2


class RefusedError(MbcError):
    """Input refused as a whole (for instance identified data offered to ingest)."""

    exit_code = 3


class ReadOnlyStoreError(MbcError, PermissionError):
    """An attempt to write through a read-only store handle."""
