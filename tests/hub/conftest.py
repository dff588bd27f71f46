"""Hub tests: a small sample store, and a real demo hub shared per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .browser_helpers import chromium
from .docker_helpers import MISSING_ATTR
from .hub_helpers import HubProcess, free_port, write_users
from .upload_helpers import wait_for_service

ROOT = Path(__file__).resolve().parents[2]

#: the user property that marks the report of a test skipped by ``docker_helpers.missing``
MISSING_PROPERTY = "mbc_hub_missing"

DEMO_USERS = {
    "alice": {"password": "alice-demo-pw", "groups": ["ophthalmology"]},
    "bob": {"password": "bob-demo-pw", "groups": ["radiology"]},
    "carol": {"password": "carol-demo-pw", "groups": ["ophthalmology", "radiology", "mbc-admins"]},
}


@pytest.fixture
def browser() -> Iterator:
    """A headless Chromium (Debian's), quit after the test."""
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="session")
def hub_store(tmp_path_factory) -> Path:
    """A small sample store: fundus-glaucoma (ophthalmology) and ct-covid (radiology)."""
    from mbc_lib.sample.store import build_sample_store

    return build_sample_store(
        tmp_path_factory.mktemp("hubstore") / "sample",
        n_fundus=6,
        n_ct=2,
        ct_size=32,
        include_real_dicom=False,
    )


@pytest.fixture(scope="session")
def notebooks_dir(tmp_path_factory) -> Path:
    """The repository's notebooks/, or (until they exist) one stand-in getting-started notebook."""
    repo = ROOT / "notebooks"
    if (repo / "00_getting_started.ipynb").is_file():
        return repo
    import nbformat

    out = tmp_path_factory.mktemp("notebooks")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Getting started (stand-in written by the hub tests)"),
        nbformat.v4.new_code_cell("from mbc_lib.store.reader import open_store\nopen_store()"),
    ]
    nbformat.write(nb, out / "00_getting_started.ipynb")
    return out


@pytest.fixture(scope="session")
def demo_hub(tmp_path_factory, hub_store, notebooks_dir) -> HubProcess:
    """A real JupyterHub + configurable-http-proxy: local spawner, demo login, on loopback."""
    work = tmp_path_factory.mktemp("demohub")
    users = write_users(work / "demo-users.yaml", DEMO_USERS)
    hub = HubProcess(
        work,
        {
            "MbcPlatform": {"spawner": "local", "authenticator": "demo"},
            "Spawner": {"start_timeout": 90, "http_timeout": 90},
            "DemoAuthenticator": {"users_file": str(users)},
            "MbcStore": {"path": str(hub_store)},
            "MbcLocalSpawner": {"notebooks_dir": str(notebooks_dir)},
        },
    )
    hub.start()
    yield hub
    hub.stop()


# -- the ingest service ---------------------------------------------------------------------
UPLOAD_PART = 64 * 1024  # the test hub's part limit: small, so a CT slice takes several parts
SOCIETIES = {
    "radiology-society": ["ct-covid"],
    "second-radiology": ["ct-covid"],
    "eye-society": ["fundus-glaucoma"],
}


@pytest.fixture(scope="session")
def trees(tmp_path_factory) -> dict[str, Path]:
    """Sample trees as a society has them: identified input and its de-identified copy (two
    seeds, so two sets of patients)."""
    from mbc_lib.deid.keys import DeidKey, generate_key_file
    from mbc_lib.deid.tree import deid_tree
    from mbc_lib.sample import write_sample_tree

    root = tmp_path_factory.mktemp("upload-trees")
    key = DeidKey.from_file(generate_key_file(root / "project.key"))
    out = {}
    for seed in (0, 1):
        write_sample_tree(root / f"input{seed}", seed=seed, n_fundus=6, n_ct=2, ct_size=32)
        deid_tree(root / f"input{seed}", root / f"deid{seed}", key, progress=False)
        out[f"input{seed}"] = root / f"input{seed}"
        out[f"deid{seed}"] = root / f"deid{seed}"
    out["key"] = root / "project.key"
    return out


@pytest.fixture(scope="session")
def upload_hub(tmp_path_factory) -> HubProcess:
    """A hub whose ingest service serves three societies and a DICOM receiver (on
    ``hub.dicom_port``, for the calling AE title SOCPACS)."""
    work = tmp_path_factory.mktemp("uploadhub")
    users = write_users(work / "demo-users.yaml", DEMO_USERS)
    dicom_port = free_port()
    hub = HubProcess(
        work,
        {
            "MbcPlatform": {"spawner": "local", "authenticator": "demo"},
            "DemoAuthenticator": {"users_file": str(users)},
            "MbcStore": {"path": str(work / "store")},
            "IdleCuller": {"enabled": False},
            "Spawner": {"start_timeout": 90, "http_timeout": 90},
            "MbcUpload": {
                "societies": SOCIETIES,
                "max_part_bytes": UPLOAD_PART,
                "max_files_per_session": 400,
                "max_sessions_per_society": 3,
                "stow_settle_seconds": 1.0,
                "dicom_port": dicom_port,
                "dicom_callers": {
                    "SOCPACS": {"society": "radiology-society", "dataset": "ct-covid"}
                },
            },
        },
    )
    hub.dicom_port = dicom_port
    hub.start()
    wait_for_service(hub)
    yield hub
    hub.stop()


@pytest.fixture(scope="session")
def upload_store(upload_hub) -> Path:
    """The store the upload hub's ingest service fills."""
    return upload_hub.workdir / "store"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Mark the reports of tests skipped for want of the Docker engine or an image."""
    report = yield
    missing = getattr(call.excinfo.value, MISSING_ATTR, None) if call.excinfo else None
    if missing is not None:
        report.user_properties.append((MISSING_PROPERTY, missing))
    return report


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> Iterator[None]:
    """One prominent line, after the short summary, when hub tests were skipped because the
    engine or an image is missing: outside CI that is a skip, and a silent one reads as a pass."""
    yield
    why: dict[str, tuple[str, str]] = {}
    for report in terminalreporter.stats.get("skipped", []):
        for name, value in getattr(report, "user_properties", ()):
            if name == MISSING_PROPERTY:
                why.setdefault(report.nodeid, tuple(value))
    if not why:
        return
    first: dict[str, str] = {}  # each reason once, with the first detail given for it
    for what, detail in why.values():
        first.setdefault(what, detail)
    reasons = "; ".join(f"{w} ({d[:160]})" if d else w for w, d in first.items())
    tests = "test" if len(why) == 1 else "tests"
    terminalreporter.write_sep("!", "hub tests skipped", yellow=True, bold=True)
    terminalreporter.write_line(
        f"hub: {len(why)} {tests} skipped: {reasons}; run `make docker-engine local-images` "
        "or set CI=true to make this a failure",
        yellow=True,
        bold=True,
    )
