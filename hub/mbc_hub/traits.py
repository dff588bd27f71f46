"""Trait types of the mbc hub's settings: each checks its value when the config is loaded.

As :mod:`jupyterhub.traitlets` does for JupyterHub's own (``ByteSpecification``, ``Command``),
these types carry the rules of a setting, so an invalid value is refused with the setting named,
wherever it was set (the platform file, the environment or ``jupyterhub_config.py``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from jupyterhub.traitlets import ByteSpecification
from traitlets import Float, HasTraits, Int, List, TraitError, TraitType, Unicode

#: In a path setting: the hub's data folder (``MbcPlatform.data_dir``).
DATA_DIR = "{data_dir}"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_DEVICE_RE = re.compile(r"^[A-Za-z0-9:_-]+$")


class AbsolutePath(Unicode):
    """A path; a relative one is taken from the folder the hub starts in (as JupyterHub takes
    its own files). ``{data_dir}`` is left for the loader to fill in."""

    info_text = "a path"

    def validate(self, obj: Any, value: Any) -> str:
        value = super().validate(obj, value)
        if not value or DATA_DIR in value:
            return value
        return str(Path(value).expanduser().absolute())


class ContainerPath(Unicode):
    """An absolute path inside a container."""

    info_text = "an absolute path in the container"

    def validate(self, obj: Any, value: Any) -> str:
        value = super().validate(obj, value)
        if not value.startswith("/"):
            raise TraitError(
                f"{self.name} must be an absolute path in the container, got {value!r}"
            )
        return value.rstrip("/") or "/"


class UsernameTemplate(Unicode):
    """A name or path made per user: it must contain ``{username}``."""

    info_text = "a template with {username}"

    def validate(self, obj: Any, value: Any) -> str:
        value = super().validate(obj, value)
        if "{username}" not in value:
            raise TraitError(f"{self.name} must contain {{username}}: one each, got {value!r}")
        return value


class ContainerUser(Unicode):
    """``UID`` or ``UID:GID`` in digits, never root."""

    info_text = "UID or UID:GID, not 0"

    def validate(self, obj: Any, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        value = super().validate(obj, value)
        uid, _, gid = value.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise TraitError(f"{self.name} must be 'UID' or 'UID:GID' in digits, got {value!r}")
        if int(uid) == 0:
            raise TraitError(f"{self.name} must not be root (uid 0): containers run unprivileged")
        return value


class GpuDevices(TraitType):
    """``'auto'`` (ask ``nvidia-smi``), ``'none'``, or a list of device ids (also written
    ``"0,1"``); normalised to ``'auto'`` or a list of strings."""

    info_text = "'auto', 'none' or a list of GPU device ids"
    default_value = "auto"

    def validate(self, obj: Any, value: Any) -> str | list[str]:
        if isinstance(value, str):
            text = value.strip().lower()
            if text == "auto":
                return "auto"
            if text in ("", "none"):
                return []
            value = [v.strip() for v in text.split(",") if v.strip()]
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple):
            raise TraitError(f"{self.name} must be {self.info_text}, got {value!r}")
        ids = [str(v) for v in value]
        if len(set(ids)) != len(ids) or not all(_DEVICE_RE.match(i) for i in ids):
            raise TraitError(f"{self.name} has repeated or odd ids: {ids}")
        return ids


class Profile(HasTraits):
    """One choice of the spawn form: what a researcher's server may use."""

    name = Unicode(help="the profile's id in the form and the API (lower case, digits, - _)")
    display_name = Unicode(help="what the form shows")
    description = Unicode("", help="one line under it")
    cpu_limit = Float(2.0, min=0.1, help="CPUs")
    mem_limit = Unicode("8G", help="memory limit, e.g. 8G")
    shm_size = Unicode("2G", help="/dev/shm size, for data-loader worker processes")
    gpus = Int(0, min=0, max=1, help="0 or 1: one GPU per researcher")

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in PROFILE_KEYS}


PROFILE_KEYS = ("name", "display_name", "description", "cpu_limit", "mem_limit", "shm_size", "gpus")
_SIZE = ByteSpecification()


def _size(where: str, value: Any) -> str:
    text = str(value).strip().upper()
    try:
        _SIZE.validate(None, text)
    except (TraitError, IndexError):
        raise TraitError(f"{where} must be a size like 512M or 8G, got {value!r}") from None
    return text


class Profiles(List):
    """The spawn form's profiles: a non-empty list of mappings with :class:`Profile`'s keys;
    names unique. Each is checked and completed with the keys it leaves out."""

    info_text = "a list of profiles (mappings)"

    def __init__(self, default_value: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(default_value=default_value, **kwargs)

    def validate(self, obj: Any, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list | tuple) or not value:
            raise TraitError(f"{self.name} must be a non-empty list of profiles")
        out = []
        for i, raw in enumerate(value):
            where = f"{self.name}[{i}]"
            if not isinstance(raw, dict):
                raise TraitError(f"{where} must be a mapping")
            unknown = sorted(set(raw) - set(PROFILE_KEYS))
            if unknown:
                raise TraitError(f"{where}: unknown key {unknown[0]!r} (known: {PROFILE_KEYS})")
            spec = dict(raw)
            name = str(spec.get("name") or "")
            if not _NAME_RE.match(name):
                raise TraitError(f"{where}.name {name!r}: lower-case letters, digits, - and _")
            spec.setdefault("display_name", name)
            for key in ("mem_limit", "shm_size"):
                if key in spec:
                    spec[key] = _size(f"{where}.{key}", spec[key])
            if spec.get("gpus") not in (None, 0, 1):
                raise TraitError(f"{where}.gpus must be 0 or 1 (one GPU per researcher)")
            try:
                out.append(Profile(**spec).to_dict())
            except TraitError as exc:
                raise TraitError(f"{where}: {exc}") from None
        names = [p["name"] for p in out]
        if len(set(names)) != len(names):
            raise TraitError(f"{self.name}: names must be unique, got {names}")
        return out
