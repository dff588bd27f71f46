"""The ingest service's settings, and what the hub adds to its config for it.

The service is a hub-managed service (``JupyterHub.services``): the hub starts it, proxies
``/services/mbc-upload/`` to it and answers its token checks. Each society is an account the
hub knows (a hub service without a server) holding a role with the custom scopes
``custom:mbc:upload:<dataset>`` of the datasets it may fill; its API token lives in a file
(made on first start, mode 0600), so it can be handed over, rotated and templated by Ansible.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Float, Int, TraitError, Unicode
from traitlets.config import Configurable

from ..traits import AbsolutePath

SERVICE_NAME = "mbc-upload"
#: Every upload scope is a subscope of this one: a role holding it may fill every dataset.
UPLOAD_SCOPE = "custom:mbc:upload"
_SOCIETY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_DATASET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_AE_RE = re.compile(r"^[ -~]{1,16}$")
MiB = 1024 * 1024


def dataset_scope(dataset: str) -> str:
    """The custom scope that lets a token upload into ``dataset``."""
    return f"{UPLOAD_SCOPE}:{dataset}"


def society_role(society: str) -> str:
    return f"mbc-society-{society}"


class Societies(Dict):
    """Society name -> the datasets it may fill (a name or a list; sorted, without repeats)."""

    info_text = "a mapping of society names to lists of dataset names"

    def validate(self, obj: Any, value: Any) -> dict[str, list[str]]:
        value = super().validate(obj, value)
        out: dict[str, list[str]] = {}
        for name, datasets in value.items():
            if not _SOCIETY_RE.match(str(name)):
                raise TraitError(f"societies: {name!r} must be lower-case letters, digits and -")
            if isinstance(datasets, str):
                datasets = [datasets]
            if not isinstance(datasets, list | tuple) or not datasets:
                raise TraitError(f"societies.{name} must list the datasets it may fill")
            for ds in datasets:
                if not _DATASET_RE.match(str(ds)):
                    raise TraitError(f"societies.{name}: {ds!r} is not a dataset name")
            out[str(name)] = sorted({str(d) for d in datasets})
        return out


class DicomCallers(Dict):
    """Calling AE title -> {society, dataset}."""

    info_text = "a mapping of AE titles to {society, dataset}"

    def validate(self, obj: Any, value: Any) -> dict[str, dict[str, str]]:
        value = super().validate(obj, value)
        out = {}
        for ae, spec in value.items():
            if not _AE_RE.match(str(ae)) or str(ae).strip() != str(ae) or "\\" in str(ae):
                raise TraitError(f"dicom_callers: {ae!r} is not an AE title (1-16 characters)")
            if not isinstance(spec, Mapping) or set(spec) != {"society", "dataset"}:
                raise TraitError(f"dicom_callers.{ae} must give society and dataset")
            out[str(ae)] = {"society": str(spec["society"]), "dataset": str(spec["dataset"])}
        return out


class MbcUpload(Configurable):
    """The ingest service: upload sessions, DICOMweb STOW-RS and a DICOM receiver, all ending in
    the one ingest that writes the store."""

    enabled = Bool(
        True, help="Run the ingest service as a hub service (the store's only writer)."
    ).tag(config=True)

    managed = Bool(
        True,
        help="True: the hub starts the service (the demo, one host). False: the service runs "
        "apart (its own container or host, the only one with the store mounted read-write) and "
        "the hub only proxies to MbcUpload.url and checks its tokens; the service's API token is "
        "then token_dir/mbc-upload.token, which the service gets as JUPYTERHUB_API_TOKEN.",
    ).tag(config=True)

    service_url = Unicode(
        "",
        help="Where the hub's proxy reaches an unmanaged service (default http://ip:port).",
    ).tag(config=True)

    ip = Unicode(
        "127.0.0.1", help="Address the service listens on (the hub's proxy reaches it)."
    ).tag(config=True)
    port = Int(8091, min=1, max=65535, help="Port of the service's HTTP API.").tag(config=True)

    spool_dir = AbsolutePath(
        "{data_dir}/upload",
        help="The service's private folder (mode 0700): upload sessions in progress, received "
        "DICOM studies, the index of what was ingested. Never mounted into a researcher's "
        "container.",
    ).tag(config=True)

    quarantine = AbsolutePath(
        "",
        help="Where refused files go (default: STORE.quarantine beside the store).",
    ).tag(config=True)

    token_dir = AbsolutePath(
        "{data_dir}/society-tokens",
        help="One file per society, <society>.token (mode 0600), holding its API token; made "
        "on first start when missing. Replace a file and restart the hub to rotate a token.",
    ).tag(config=True)

    societies = Societies(
        default_value={},
        help="Society accounts: name -> the datasets it may fill, e.g. "
        "{ophthalmology-society: [fundus-glaucoma]}. Each gets the role mbc-society-<name> with "
        "the scopes custom:mbc:upload:<dataset>.",
    ).tag(config=True)

    max_part_bytes = Int(64 * MiB, min=1, help="Largest part of a file one request may send.").tag(
        config=True
    )
    max_files_per_session = Int(100_000, min=1, help="Most files one upload session may hold.").tag(
        config=True
    )
    max_session_bytes = Int(
        64 * 1024 * MiB, min=1, help="Most bytes one upload session may hold."
    ).tag(config=True)
    max_sessions_per_society = Int(
        4, min=1, help="Open upload sessions one society may have at once."
    ).tag(config=True)
    max_stow_bytes = Int(2048 * MiB, min=1, help="Largest STOW-RS request body.").tag(config=True)

    stow_settle_seconds = Float(
        5.0,
        min=0,
        help="A study sent by STOW-RS is ingested once no instance of it has arrived for this "
        "many seconds (senders split a study over several requests).",
    ).tag(config=True)

    dicom_port = Int(
        0, min=0, max=65535, help="Port of the DICOM receiver (C-STORE SCP); 0: no receiver."
    ).tag(config=True)
    dicom_ip = Unicode("127.0.0.1", help="Address the DICOM receiver listens on.").tag(config=True)
    dicom_ae_title = Unicode("MBC-INGEST", help="The receiver's own AE title.").tag(config=True)
    dicom_callers = DicomCallers(
        default_value={},
        help="Calling AE titles the receiver accepts: AE title -> {society: NAME, dataset: NAME}; "
        "any other caller is rejected at association.",
    ).tag(config=True)

    # -- what the hub adds to its config ---------------------------------------------------
    @property
    def url(self) -> str:
        return self.service_url or f"http://{self.ip}:{self.port}"

    def check(self) -> None:
        """Settings that only make sense together; ValueError naming the setting."""
        for ae, spec in self.dicom_callers.items():
            allowed = self.societies.get(spec["society"])
            if allowed is None:
                raise ValueError(f"MbcUpload.dicom_callers.{ae}: no society {spec['society']!r}")
            if spec["dataset"] not in allowed:
                raise ValueError(
                    f"MbcUpload.dicom_callers.{ae}: society {spec['society']} may not fill "
                    f"{spec['dataset']}"
                )

    def token_file(self, society: str) -> Path:
        return Path(self.token_dir) / f"{society}.token"

    def society_token(self, society: str) -> str:
        """The society's (or an unmanaged service's) API token, made (mode 0600) when its
        file is missing."""
        path = self.token_file(society)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
        token = path.read_text().strip()
        if len(token) < 16:
            raise ValueError(f"MbcUpload: the token in {path} is shorter than 16 characters")
        return token

    def custom_scopes(self, datasets: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``JupyterHub.custom_scopes``: one upload scope per dataset, all under UPLOAD_SCOPE."""
        names = sorted(set(datasets) | {d for ds in self.societies.values() for d in ds})
        scopes = {
            dataset_scope(d): {"description": f"Upload images into the dataset {d}."} for d in names
        }
        scopes[UPLOAD_SCOPE] = {
            "description": "Upload images into any dataset of the store.",
            "subscopes": sorted(scopes),
        }
        return scopes

    def services(self, environment: Mapping[str, str]) -> list[dict[str, Any]]:
        """``JupyterHub.services`` entries: the ingest service and one account per society."""
        service: dict[str, Any] = {"name": SERVICE_NAME, "url": self.url, "display": False}
        if self.managed:
            service["command"] = [sys.executable, "-m", "mbc_hub.upload"]
            service["environment"] = dict(environment)
        else:
            service["api_token"] = self.society_token(SERVICE_NAME)
        entries: list[dict[str, Any]] = [service]
        for society in sorted(self.societies):
            entries.append({"name": society, "api_token": self.society_token(society)})
        return entries

    def roles(self) -> list[dict[str, Any]]:
        """``JupyterHub.load_roles`` entries: each society with its datasets' upload scopes."""
        return [
            {
                "name": society_role(society),
                "description": f"Society {society}: uploads into {', '.join(datasets)}",
                "scopes": [dataset_scope(d) for d in datasets],
                "services": [society],
            }
            for society, datasets in sorted(self.societies.items())
        ]


def may_upload(scopes: Iterable[str], dataset: str) -> bool:
    """Whether a token with ``scopes`` (as the hub expands them) may fill ``dataset``."""
    held = set(scopes)
    return dataset_scope(dataset) in held or UPLOAD_SCOPE in held
