"""A society's PACS for the tests: Debian's Orthanc (with its DICOMweb plugin) and dcmtk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import requests

from .docker_helpers import missing
from .hub_helpers import free_port, wait_for

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def tool(name: str) -> str:
    """The path of a DICOM tool ``make dicom-tools`` installs (dcmtk's, not pynetdicom's
    scripts of the same names in the venv), or skip/fail."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        found = shutil.which(name, path=folder)
        if found and _is_dcmtk_or_orthanc(found):
            return found
    missing(f"{name} not installed", "run `make dicom-tools` (Debian's dcmtk and orthanc)")
    raise AssertionError("unreachable")


def _is_dcmtk_or_orthanc(path: str) -> bool:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return False
    text = (out.stdout + out.stderr).lower()
    return "dcmtk" in text or "orthanc" in text


class OrthancProcess:
    """``Orthanc config.json`` on loopback ports; refuses remote HTTP, stores in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        aet: str,
        modalities: dict[str, list[Any]],
        dicomweb_servers: dict[str, dict[str, Any]],
    ) -> None:
        self.binary = tool("Orthanc")
        if not DICOMWEB_PLUGIN.exists():
            missing("the Orthanc DICOMweb plugin is not installed", "run `make dicom-tools`")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        config = {
            "Name": "society-pacs",
            "StorageDirectory": str(self.workdir / "db"),
            "IndexDirectory": str(self.workdir / "db"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": modalities,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Servers": dicomweb_servers},
            "HttpTimeout": 60,
            "StableAge": 1,
        }
        self.config_file = self.workdir / "orthanc.json"
        self.config_file.write_text(json.dumps(config, indent=1))
        self.log_file = self.workdir / "orthanc.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> OrthancProcess:
        log = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            [self.binary, str(self.config_file)], stdout=log, stderr=subprocess.STDOUT
        )

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"Orthanc exited:\n{self.log_file.read_text()[-3000:]}")
            return requests.get(f"{self.url}/system", timeout=2).status_code == 200

        wait_for(up, 60, "Orthanc")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = requests.request(method, f"{self.url}{path}", timeout=120, **kwargs)
        if reply.status_code >= 400:
            raise AssertionError(f"Orthanc {method} {path}: {reply.status_code} {reply.text}")
        return reply.json() if reply.content else None

    def add(self, paths: list[Path]) -> str:
        """Store files in Orthanc (its REST API); returns the Orthanc id of their study."""
        study = None
        for path in paths:
            answer = self.rest("POST", "/instances", data=path.read_bytes())
            study = answer["ParentStudy"]
        assert study is not None
        return study
