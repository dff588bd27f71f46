"""Driving a real JupyterHub from tests: start it, log in, spawn, run code in a kernel."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
HUB_CONFIG = ROOT / "hub" / "jupyterhub_config.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.3) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} ({last_error})")


class HubProcess:
    """``jupyterhub -f hub/jupyterhub_config.py`` on free loopback ports with a platform file."""

    def __init__(
        self,
        workdir: Path,
        platform: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = self.workdir / "data"
        self.platform_file = self.workdir / "platform.yaml"
        self.log_file = self.workdir / "hub.log"
        self.env = {
            k: v for k, v in os.environ.items() if not (k.startswith("MBC_") or k == "JUPYTERHUB")
        }
        self.env.update({"MBC_PLATFORM_CONFIG": str(self.platform_file), **(env or {})})
        self.proc: subprocess.Popen | None = None
        self.write_platform(platform or {})

    def write_platform(self, platform: dict[str, Any]) -> None:
        """The platform file (keyed by class): ``platform`` on this hub's loopback ports and
        data folder."""
        ports = {
            "JupyterHub": {
                "bind_url": self.url,
                "hub_bind_url": f"http://127.0.0.1:{free_port()}",
            },
            "ConfigurableHTTPProxy": {"api_url": f"http://127.0.0.1:{free_port()}"},
            "MbcPlatform": {"data_dir": str(self.data_dir)},
            "MbcUpload": {"port": free_port()},
        }
        merged = {section: dict(values) for section, values in platform.items()}
        for section, values in ports.items():
            merged[section] = {**values, **merged.get(section, {})}
        self.platform_file.write_text(yaml.safe_dump(merged))

    @property
    def audit_path(self) -> Path:
        return self.data_dir / "audit.jsonl"

    def start(self, timeout: float = 60) -> HubProcess:
        log = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(HUB_CONFIG)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"hub exited with {self.proc.returncode}:\n{self.log()}")
            return requests.get(f"{self.url}/hub/health", timeout=2).status_code == 200

        try:
            wait_for(up, timeout, f"the hub at {self.url}")
        except AssertionError:
            self.stop()
            raise AssertionError(f"hub did not come up:\n{self.log()[-4000:]}") from None
        return self

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.kill_services()
            return
        self.proc.send_signal(signal.SIGTERM)
        try:  # a hub stops in 1-4 s here; one that hangs on its way out is not waited for
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.kill_services()

    def kill_services(self) -> list[int]:
        """Kill what is left of this hub's services (each runs in a session of its own, so a
        hub that had to be killed leaves them behind); returns their pids."""
        platform = yaml.safe_load(self.platform_file.read_text()) or {}
        api = platform.get("JupyterHub", {}).get("hub_bind_url", "")
        port = api.rsplit(":", 1)[-1].split("/")[0] if api else ""
        mark = f"JUPYTERHUB_API_URL=http://127.0.0.1:{port}/hub/api".encode()
        left = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or not port:
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if mark in environ and b"JUPYTERHUB_SERVICE_NAME" in b"".join(environ):
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                    left.append(int(entry.name))
                except ProcessLookupError:
                    continue
        return left


def write_users(path: Path, users: dict[str, dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"users": users}))
    return path


def login(url: str, username: str, password: str) -> tuple[requests.Session, requests.Response]:
    """Log in through the hub's login form as a browser would; return the session and reply."""
    session = requests.Session()
    page = session.get(f"{url}/hub/login", timeout=10)
    page.raise_for_status()
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
    assert xsrf, "the login page has no login form"
    reply = session.post(
        f"{url}/hub/login?next=/hub/home",
        data={"username": username, "password": password, "_xsrf": xsrf.group(1)},
        timeout=30,
    )
    return session, reply


def api(session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
    """A hub API call authenticated by the session's cookie (with the XSRF header it needs)."""
    headers = {"X-XSRFToken": session.cookies.get("_xsrf", path="/hub/") or ""}
    return session.request(method, url, headers=headers, timeout=30, **kwargs)


def oidc_login(url: str, timeout: float = 30) -> tuple[requests.Session, requests.Response]:
    """The browser's path: hub -> provider /authorize -> hub callback -> hub home."""
    session = requests.Session()
    reply = session.get(f"{url}/hub/oauth_login?next=/hub/home", timeout=timeout)
    return session, reply


def user_token(session: requests.Session, url: str, username: str) -> str:
    reply = api(
        session,
        "POST",
        f"{url}/hub/api/users/{username}/tokens",
        json={"note": "test", "expires_in": 900},
    )
    reply.raise_for_status()
    return reply.json()["token"]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


def start_server(url: str, username: str, token: str, timeout: float = 90, **options) -> dict:
    reply = requests.post(
        f"{url}/hub/api/users/{username}/server", headers=auth(token), json=options, timeout=30
    )
    if reply.status_code not in (201, 202):
        raise AssertionError(f"spawn refused: {reply.status_code} {reply.text}")

    def ready() -> dict | None:
        model = requests.get(
            f"{url}/hub/api/users/{username}", headers=auth(token), timeout=10
        ).json()
        server = model.get("servers", {}).get("")
        return model if server and server.get("ready") else None

    return wait_for(ready, timeout, f"{username}'s server to be ready")


def stop_server(url: str, username: str, token: str, timeout: float = 60) -> None:
    reply = requests.delete(
        f"{url}/hub/api/users/{username}/server", headers=auth(token), timeout=60
    )
    assert reply.status_code in (202, 204), reply.text

    def stopped() -> bool:
        model = requests.get(f"{url}/hub/api/users/{username}", headers=auth(token), timeout=10)
        return "" not in model.json().get("servers", {})

    wait_for(stopped, timeout, f"{username}'s server to stop")


def run_in_kernel(url: str, username: str, token: str, code: str, timeout: float = 90) -> str:
    """Start a kernel on the user's server (REST), run ``code`` over its websocket, return stdout.

    Raises AssertionError with the traceback if the code raises.
    """
    base = f"{url}/user/{username}/api"
    reply = requests.post(f"{base}/kernels", headers=auth(token), json={}, timeout=60)
    reply.raise_for_status()
    kernel_id = reply.json()["id"]
    try:
        return asyncio.run(_execute(base, kernel_id, token, code, timeout))
    finally:
        requests.delete(f"{base}/kernels/{kernel_id}", headers=auth(token), timeout=30)


async def _execute(base: str, kernel_id: str, token: str, code: str, timeout: float) -> str:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws_url = base.replace("https://", "wss://").replace("http://", "ws://")
    ws_url += f"/kernels/{kernel_id}/channels"
    request = HTTPRequest(ws_url, headers=auth(token), connect_timeout=30)
    conn = await websocket_connect(request)
    msg_id = uuid.uuid4().hex
    conn.write_message(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "username": "test",
                    "session": uuid.uuid4().hex,
                    "msg_type": "execute_request",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "content": {"code": code, "silent": False, "store_history": False},
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    out: list[str] = []
    error: str | None = None
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"kernel did not finish in {timeout:.0f} s; output: {out}")
            raw = await asyncio.wait_for(conn.read_message(), remaining)
            if raw is None:
                raise AssertionError("kernel websocket closed")
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content.get("name") == "stdout":
                out.append(content["text"])
            elif kind == "error":
                error = "\n".join(content.get("traceback", [])) or content.get("evalue", "")
            elif kind == "status" and content.get("execution_state") == "idle":
                break
    finally:
        conn.close()
    if error is not None:
        raise AssertionError(f"code raised in the kernel:\n{error}")
    return "".join(out)


def run_in_terminal(url: str, username: str, token: str, command: str, timeout: float = 90) -> str:
    """Open a JupyterLab terminal on the user's server (REST), type ``command`` into it as a
    user would (its shell, its environment), return what it printed up to the command's exit
    status, which ends the output as ``exit=<status>``."""
    base = f"{url}/user/{username}"
    reply = requests.post(f"{base}/api/terminals", headers=auth(token), json={}, timeout=60)
    reply.raise_for_status()
    name = reply.json()["name"]
    try:
        return asyncio.run(_type(base, name, token, command, timeout))
    finally:
        requests.delete(f"{base}/api/terminals/{name}", headers=auth(token), timeout=30)


async def _type(base: str, name: str, token: str, command: str, timeout: float) -> str:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws_url = base.replace("https://", "wss://").replace("http://", "ws://")
    request = HTTPRequest(f"{ws_url}/terminals/websocket/{name}", headers=auth(token))
    conn = await websocket_connect(request)
    mark = uuid.uuid4().hex[:8]
    conn.write_message(json.dumps(["set_size", 50, 400]))  # no wrapped lines
    # the marker is split in what is typed, so only the shell's output has it whole
    conn.write_message(json.dumps(["stdin", f"{command}; echo END{mark[:4]}''{mark[4:]}=$?\r"]))
    out = ""
    deadline = time.monotonic() + timeout
    try:
        while (found := re.search(rf"END{mark}=(\d+)", out)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"terminal did not finish in {timeout:.0f} s: {out!r}")
            raw = await asyncio.wait_for(conn.read_message(), remaining)
            if raw is None:
                raise AssertionError(f"terminal websocket closed: {out!r}")
            kind, *payload = json.loads(raw)
            if kind == "stdout":
                out += payload[0]
    finally:
        conn.close()
    # what the command printed: after the echo of the typed line, before the marker. A line
    # typed before the shell is ready is echoed twice: by the terminal, then by readline
    # with the prompt (seen on a loaded machine); the output follows the last echo
    printed = out[: found.start()].rsplit("=$?", 1)[-1]
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", printed).strip() + f"\nexit={found[1]}"
