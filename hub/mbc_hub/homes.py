"""Researchers' homes: the notebooks they start from and JupyterLab's platform settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

#: JupyterLab settings every researcher starts with: servers have no route out, so JupyterLab
#: must not ask to fetch news or check for updates.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def copy_notebooks(source: Path, home: Path, folder: str = "notebooks") -> list[Path]:
    """Copy each ``*.ipynb`` of ``source`` into ``home/folder`` unless it is there already.

    A researcher's edits are never overwritten; a notebook added to ``source`` later arrives on
    the next start. Returns the files copied.
    """
    source, target = Path(source), Path(home) / folder
    if not source.is_dir():
        return []
    copied = []
    for notebook in sorted(source.glob("*.ipynb")):
        dest = target / notebook.name
        if dest.exists():
            continue
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(notebook, dest)
        copied.append(dest)
    return copied


def write_lab_settings(home: Path) -> list[Path]:
    """Write :data:`LAB_SETTINGS` into ``home``'s JupyterLab user settings, where not set yet."""
    base = Path(home) / ".jupyter" / "lab" / "user-settings"
    written = []
    for name, settings in LAB_SETTINGS.items():
        path = base / name
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2) + "\n")
        written.append(path)
    return written
