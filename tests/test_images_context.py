"""`images/build.sh context-archive`: the build context a host builds an image from (the
Ansible images role ships it). One image's wheels only, the site's CA bundle, the same bytes for
the same inputs, so a converge with nothing new changes nothing."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "images" / "build.sh"

HUB_LOCK = ["jupyterhub==6.1.1", "psycopg2-binary==2.9.10", "ruamel.yaml==0.18.6"]
RESEARCHER_LOCK = ["torch==2.13.0", "monai==1.5.1", "ruamel.yaml==0.18.6"]
WHEELS = [
    "jupyterhub-6.1.1-py3-none-any.whl",
    "psycopg2_binary-2.9.10-cp311-cp311-manylinux_2_17_x86_64.whl",
    "ruamel.yaml-0.18.6-py3-none-any.whl",
    "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl",
    "monai-1.5.1-py3-none-any.whl",
]


@pytest.fixture()
def wheelhouse(tmp_path: Path) -> Path:
    """A wheelhouse as `images/build.sh wheelhouse` lays it out (the wheels are placeholders:
    nothing installs them here)."""
    wh = tmp_path / "wheelhouse"
    (wh / "wheels").mkdir(parents=True)
    for name in WHEELS:
        (wh / "wheels" / name).write_bytes(name.encode())
    (wh / "hub.lock").write_text("\n".join(HUB_LOCK) + "\n")
    (wh / "researcher.lock").write_text("\n".join(RESEARCHER_LOCK) + "\n")
    chp = wh / "npm" / "node_modules" / "configurable-http-proxy"
    (chp / "bin").mkdir(parents=True)
    (chp / "package.json").write_text('{"version": "4.6.3"}\n')
    (wh / "npm" / "node_modules" / ".bin").mkdir()
    return wh


def context_archive(tmp_path: Path, wheelhouse: Path, ca: Path | None, name: str, *args: str):
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MBC_WHEELHOUSE": str(wheelhouse),
        "MBC_CONTEXT_DIR": str(tmp_path / "context"),
        "MBC_PIP": f"{sys.executable} -m pip",
    }
    if ca is not None:
        env["MBC_EXTRA_CA_BUNDLE"] = str(ca)
    out = tmp_path / name
    done = subprocess.run(
        ["bash", str(BUILD), "context-archive", *args, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done, out


@pytest.mark.slow
def test_hub_context_holds_the_hub_wheels_the_ca_and_is_reproducible(tmp_path, wheelhouse):
    ca = tmp_path / "site-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    first, archive = context_archive(tmp_path, wheelhouse, ca, "one.tar.gz", "hub")
    assert first.returncode == 0, first.stderr
    with tarfile.open(archive) as tar:
        names = {n.removeprefix("./") for n in tar.getnames()}
        assert tar.extractfile("./ca/mbc-extra-ca.crt").read() == ca.read_bytes()
    wheels = {n.split("/")[-1] for n in names if n.startswith("wheelhouse/wheels/")}
    assert wheels == {WHEELS[0], WHEELS[1], WHEELS[2]}
    assert "wheelhouse/hub.lock" in names and "wheelhouse/researcher.lock" not in names
    assert {"images/hub/Dockerfile", "pyproject.toml", "hub/jupyterhub_config.py"} <= names
    assert any(n.startswith("mbc/mbc-") and n.endswith(".whl") for n in names)
    assert "npm/node_modules/configurable-http-proxy/package.json" in names

    second, again = context_archive(tmp_path, wheelhouse, ca, "two.tar.gz", "hub")
    assert second.returncode == 0, second.stderr
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (archive, again)]
    assert digest[0] == digest[1], "the same inputs gave a different archive"


@pytest.mark.slow
def test_researcher_context_leaves_the_hub_wheels_out(tmp_path, wheelhouse):
    done, archive = context_archive(tmp_path, wheelhouse, None, "r.tar.gz", "researcher")
    assert done.returncode == 0, done.stderr
    with tarfile.open(archive) as tar:
        names = {n.removeprefix("./") for n in tar.getnames()}
    wheels = {n.split("/")[-1] for n in names if n.startswith("wheelhouse/wheels/")}
    assert wheels == {WHEELS[2], WHEELS[3], WHEELS[4]}
    assert not any(n.startswith("ca/") and n.endswith(".crt") for n in names)


def test_an_unknown_image_set_is_refused_in_one_line(tmp_path, wheelhouse):
    done, archive = context_archive(tmp_path, wheelhouse, None, "x.tar.gz", "desktop")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "images/build.sh: context-archive: SET is hub or researcher, not 'desktop'"
    ]
    assert not archive.exists()
