"""Keyed derivation of pseudonyms, UIDs and date shifts (HMAC-SHA256).

One secret per society or project: the same key always gives the same output, and
outputs of two keys cannot be linked without both secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import MbcError

#: A patient pseudonym as written into PatientID / PatientName and label tables.
PSEUDONYM_RE = re.compile(r"^PSN-[0-9a-f]{16}$")
#: A UID derived by this module (ISO/IEC 9834-8 "2.25" UUID-derived form).
DERIVED_UID_RE = re.compile(r"^2\.25\.[1-9][0-9]{0,38}$")
#: Date shifts lie in [-MAX_SHIFT_DAYS, -1]: dates move back, intervals are kept.
MAX_SHIFT_DAYS = 3650
MIN_KEY_BYTES = 32


def check_key_file(path: Path) -> Path:
    """Refuse a key file that is missing, not a regular file, or open to group or others.

    As ssh does for private keys: the secret links pseudonyms to patients, so only its
    owner may read it. ``mbc deid`` and ``mbc ingest`` both check a key through here.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise MbcError(f"key file not found: {path}") from None
    except OSError as exc:
        raise MbcError(f"cannot read key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise MbcError(f"key file {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise MbcError(
            f"key file {path} is accessible by group or others (mode {mode:04o}); "
            f"run: chmod 600 {path}"
        )
    return path


def _read_key_bytes(path: Path) -> bytes:
    check_key_file(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MbcError(f"cannot read key file {path}: {exc.strerror}") from None
    text = raw.strip()
    try:  # hex text, as written by `generate_key_file`
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = raw
    if len(key) < MIN_KEY_BYTES:
        raise MbcError(
            f"key file {path} holds {len(key)} bytes; at least {MIN_KEY_BYTES} are needed"
        )
    return key


def generate_key_file(path: Path) -> Path:
    """Write a new random 256-bit key as hex, readable by the owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return path


@dataclass(frozen=True)
class DeidKey:
    """A project secret and the derivations made from it."""

    secret: bytes = field(repr=False)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> DeidKey:
        return cls(_read_key_bytes(Path(path)))

    def _digest(self, purpose: str, value: str) -> bytes:
        return _hmac(self.secret, purpose, value)

    def uid(self, original: str) -> str:
        """New UID in the 2.25 form; the same original always maps to the same UID."""
        return "2.25." + str(int.from_bytes(self._digest("uid", original.strip())[:16], "big"))

    def pseudonym(self, patient_id: str) -> str:
        """Patient pseudonym (PatientID and PatientName), e.g. ``PSN-3f2a...``."""
        return "PSN-" + self._digest("patient", patient_id.strip()).hex()[:16]

    def date_shift_days(self, patient_id: str) -> int:
        """Per-patient shift in days (negative): intervals within a patient are kept."""
        n = int.from_bytes(self._digest("dateshift", patient_id.strip())[:8], "big")
        return -(1 + n % MAX_SHIFT_DAYS)


@lru_cache(maxsize=65536)
def _hmac(secret: bytes, purpose: str, value: str) -> bytes:
    return hmac.new(secret, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()
