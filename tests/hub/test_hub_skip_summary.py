"""Outside CI, hub tests without a Docker engine are skipped, and the summary says so in one line.

The Docker tests run in a pytest of their own, against an engine socket that does not exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

#: The Docker tests (none of them parametrized): each is skipped without an engine.
N_DOCKER_TESTS = len(
    re.findall(r"^def test_", (ROOT / "tests/hub/test_hub_docker.py").read_text(), re.MULTILINE)
)
SUMMARY = re.compile(
    rf"hub: {N_DOCKER_TESTS} tests skipped: no Docker engine \(.+\); run `make docker-engine "
    r"local-images` or set CI=true to make this a failure"
)


def run_docker_tests(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """``pytest tests/hub/test_hub_docker.py`` with ``DOCKER_HOST`` on a socket nobody serves."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CI", "PYTEST_ADDOPTS") and not k.startswith("DOCKER_")
    }
    keep["DOCKER_HOST"] = f"unix://{tmp_path / 'no-engine.sock'}"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + [f"--basetemp={tmp_path / 'run'}", "tests/hub/test_hub_docker.py"],
        cwd=ROOT,
        env={**keep, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_summary_says_when_hub_tests_were_skipped_for_want_of_an_engine(tmp_path):
    proc = run_docker_tests(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{N_DOCKER_TESTS} skipped" in proc.stdout
    lines = [line for line in proc.stdout.splitlines() if line.startswith("hub: ")]
    assert len(lines) == 1 and SUMMARY.fullmatch(lines[0]), proc.stdout


def test_in_ci_a_missing_engine_fails_the_run(tmp_path):
    proc = run_docker_tests(tmp_path, CI="true")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "CI must provide it" in proc.stdout and "skipped" not in proc.stdout
    assert not any(line.startswith("hub: ") for line in proc.stdout.splitlines())
