"""``mbc demo``: the sample store, the hub on a loopback address, its URL and the demo logins.

Demo only: the logins are generated once into ``WORKDIR/hub/demo-users.yaml`` (mode 0600) and
the hub refuses the demo login on any address but loopback.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import yaml

from mbc_lib.errors import MbcError

from .config import layered_config, proxy_command
from .platform import PlatformConfigError

#: demo user -> groups (mbc-admins: hub admin); ines teaches the demo course to sam and tess
DEMO_USERS: dict[str, list[str]] = {
    "alice": ["ophthalmology"],
    "bob": ["radiology"],
    "carol": ["ophthalmology", "radiology", "mbc-admins"],
    "ines": [],
    "sam": [],
    "tess": [],
}
#: the demo's course (docs/instructors.md): the login adds its group to the three of them
DEMO_COURSE = {
    "name": "demo-course",
    "title": "Glaucoma screening (demo course)",
    "instructors": ["ines"],
    "students": ["sam", "tess"],
    "datasets": ["fundus-glaucoma", "ct-covid"],  # what the instructors' tutorial reads
}
DEMO_ROLES = {
    "alice": "researcher",
    "bob": "researcher",
    "carol": "researcher, hub admin",
    "ines": "instructor of demo-course",
    "sam": "student of demo-course",
    "tess": "student of demo-course",
}
#: the demo's society account: it may fill the sample store's datasets, over HTTP and DICOM
DEMO_SOCIETY = "demo-society"
DEMO_PACS = "DEMO-PACS"
#: what the demo's platform file holds under the settings of the user's own (if any)
DEMO_PLATFORM = {
    "MbcUpload": {
        "societies": {DEMO_SOCIETY: ["ct-covid", "fundus-glaucoma"]},
        "dicom_port": 11112,
        "dicom_callers": {DEMO_PACS: {"society": DEMO_SOCIETY, "dataset": "ct-covid"}},
    },
    "MbcCourses": {"courses": [DEMO_COURSE]},
}


def project_dir() -> Path:
    """The checkout that holds ``hub/`` next to ``mbc_lib/``."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "hub" / "jupyterhub_config.py").is_file():
        raise MbcError(f"mbc demo runs from a checkout of the mbc repository (no hub/ in {root})")
    return root


def demo_logins(path: Path) -> dict[str, dict]:
    """The demo users file: written once with fresh passwords, then reused; a demo user the
    file lacks (one a later mbc added) is added with a fresh password, the others kept."""
    users: dict[str, dict] = {}
    if path.exists():
        data = yaml.safe_load(path.read_text()) or {}
        users = data.get("users") if isinstance(data, dict) else None
        if not isinstance(users, dict) or not users:
            raise MbcError(f"{path} holds no demo users; remove it and run mbc demo again")
        if set(DEMO_USERS) <= set(users):
            return users
    for name, groups in DEMO_USERS.items():
        users.setdefault(
            name, {"password": secrets.token_urlsafe(9), "groups": groups, "admin": False}
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.unlink(missing_ok=True)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# mbc demo logins: DEMO ONLY (the hub accepts them on loopback only)\n")
        yaml.safe_dump({"users": users}, out, sort_keys=False)
    part.replace(path)
    return users


def find_proxy(root: Path) -> str:
    try:
        return proxy_command(None, root)[0]
    except PlatformConfigError:
        raise MbcError(
            "configurable-http-proxy is not installed: run `make proxy` (or `make demo`)"
        ) from None


def bind_url(bind: str) -> str:
    url = bind if "://" in bind else f"http://{bind}"
    parsed = urlparse(url)
    if not parsed.hostname or not parsed.port:
        raise MbcError(f"--bind needs HOST:PORT, got {bind!r}")
    return url.rstrip("/")


def check_port_free(url: str, hint: str = "pass --bind HOST:PORT") -> None:
    parsed = urlparse(url)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((parsed.hostname, parsed.port))
        except OSError:
            raise MbcError(
                f"{parsed.hostname}:{parsed.port} is in use (a hub already running?); "
                f"stop it or {hint}"
            ) from None


def demo_platform_file(data_dir: Path, own: str | None = None) -> Path:
    """The demo's platform file (rewritten on each start): the demo society, the DICOM
    receiver and the demo course, under the settings of the platform file ``own`` (the
    user's ``MBC_PLATFORM_CONFIG``, whose settings win); everything else at mbc's defaults."""
    settings = {section: dict(values) for section, values in DEMO_PLATFORM.items()}
    if own:
        try:
            mine = yaml.safe_load(Path(own).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise MbcError(f"cannot read the platform file {own}: {exc}") from None
        if not isinstance(mine, dict):
            raise MbcError(f"{own} is not a platform file (a mapping of classes)")
        for section, values in mine.items():
            if isinstance(values, dict):
                settings[section] = {**settings.get(section, {}), **values}
            else:
                settings[section] = values
    path = data_dir / "demo-platform.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# written by mbc demo on each start: the demo society, receiver and course"
    header += f", under {own}\n" if own else "\n"
    path.write_text(header + yaml.safe_dump(settings, sort_keys=False))
    return path


def upload_lines(url: str, env: dict[str, str], workdir: Path) -> list[str]:
    """What the banner says of the ingest service: how the demo society uploads."""
    from .upload.settings import MbcUpload

    upload = MbcUpload(config=layered_config(environ=env))
    if not upload.enabled:
        return []
    lines = [f"  ingest service: {url}/services/mbc-upload/ (docs/upload.md)"]
    for society, datasets in upload.societies.items():
        token = upload.token_file(society)
        lines.append(f"    society {society} may fill {', '.join(datasets)}; token in {token}")
        lines.append(
            f"      mbc upload {workdir / 'deid' / datasets[0]} --url {url} "
            f"--token-file {token} --dataset {datasets[0]}"
        )
    if upload.dicom_port:
        for ae, spec in upload.dicom_callers.items():
            lines.append(
                f"    DICOM receiver {upload.dicom_ae_title} at {upload.dicom_ip}:"
                f"{upload.dicom_port} takes calling AE {ae} into {spec['dataset']}"
            )
    return lines


def check_upload_ports(env: dict[str, str]) -> None:
    from .upload.settings import MbcUpload

    upload = MbcUpload(config=layered_config(environ=env))
    if not upload.enabled or not upload.managed:
        return
    check_port_free(f"http://{upload.ip}:{upload.port}", "set MbcUpload.port")
    if upload.dicom_port:
        check_port_free(f"http://{upload.dicom_ip}:{upload.dicom_port}", "set MbcUpload.dicom_port")


#: What JupyterHub logs once its proxy routes to it: asking the proxy before that is answered
#: with a 404 that the proxy prints in red.
RUNNING_LINE = "JupyterHub is now running at"


def relay_log(proc: subprocess.Popen, running: threading.Event) -> None:
    """Copy the hub's log to stderr, line by line; set ``running`` when it is up."""
    assert proc.stderr is not None
    for line in iter(proc.stderr.readline, b""):
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()
        if RUNNING_LINE.encode() in line:
            running.set()


def wait_until_up(
    url: str, proc: subprocess.Popen, running: threading.Event, timeout: float = 90
) -> None:
    """Wait for the hub's running line, then for its health check through the proxy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MbcError(f"the hub exited (code {proc.returncode}) before it answered; see above")
        if not running.wait(0.5):
            continue
        try:
            with urllib.request.urlopen(f"{url}/hub/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise MbcError(f"the hub did not answer at {url} within {timeout:.0f} s")


def banner(
    url: str, users: dict[str, dict], store: Path, data_dir: Path, upload: list[str] = ()
) -> str:
    lines = [
        "",
        f"mbc demo hub: {url}",
        "  log in as (demo only)",
    ]
    for name, spec in users.items():
        role = DEMO_ROLES.get(name, "researcher")
        groups = ", ".join(spec.get("groups") or [])
        groups = f"; groups {groups}" if groups else ""
        lines.append(f"    {name:<8} password {spec['password']:<14} {role}{groups}")
    lines += [
        f"  store (read-only to researchers): {store}",
        f"  audit log: {data_dir / 'audit.jsonl'}",
        *upload,
        "  Ctrl-C stops the hub.",
        "",
    ]
    return "\n".join(lines)


def remove_demo_network(env: dict[str, str]) -> str | None:
    """Remove the platform network the demo's hub used, once no container is on it; returns
    its name, or None where it is gone already or still in use (a line says so)."""
    import docker
    from docker.utils import kwargs_from_env

    # the network's name as the hub resolved it (its platform file and environment)
    try:
        name = layered_config(environ=env).DockerSpawner.network_name
    except PlatformConfigError as exc:
        print(f"mbc demo: platform network not removed ({exc})", file=sys.stderr)
        return None
    client = docker.APIClient(version="auto", **kwargs_from_env())
    for network in client.networks(names=[name]):
        if network.get("Name") != name:
            continue
        attached = client.inspect_network(network["Id"]).get("Containers") or {}
        if attached:
            print(
                f"mbc demo: network {name} kept: {len(attached)} containers still on it",
                file=sys.stderr,
            )
            return None
        client.remove_network(network["Id"])
        return name
    return None


def run_demo(workdir: Path, bind: str, spawner: str) -> int:
    """Build (or reuse) the sample store, start the hub in the foreground, print how to log in."""
    from mbc_lib.sample.store import build_sample_store

    # Ctrl-C stops the demo even where it was started with SIGINT ignored (a background job
    # of a non-interactive shell, some CI runners), which Python would otherwise inherit.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    if spawner == "swarm":
        raise MbcError(
            "swarm mode runs the hub in its image on a swarm manager (docs/hub.md); "
            "the demo runs --spawner local or docker"
        )
    root = project_dir()
    url = bind_url(bind)
    check_port_free(url)
    find_proxy(root)
    workdir = Path(workdir).absolute()
    print(f"sample store in {workdir} (built once, then reused) ...", flush=True)
    store = build_sample_store(workdir, progress=True)
    data_dir = workdir / "hub"
    users_file = data_dir / "demo-users.yaml"
    users = demo_logins(users_file)
    env = {
        **os.environ,
        "MBC_SPAWNER": spawner,
        "MBC_AUTH": "demo",
        "MBC_HUB_BIND": url,
        "MBC_HUB_DATA_DIR": str(data_dir),
        "MBC_STORE_HOST_PATH": str(store),
        "MBC_DEMO_USERS_FILE": str(users_file),
    }
    user_settings = {"MBC_HUB_API_BIND", "MBC_PLATFORM_CONFIG"} & set(env)
    # the demo's society, receiver and course, under the user's own platform file if any
    env["MBC_PLATFORM_CONFIG"] = str(demo_platform_file(data_dir, env.get("MBC_PLATFORM_CONFIG")))
    if spawner != "local" and not user_settings:
        # Containers reach the hub's API at their network's gateway: the API listens there,
        # on no other address of the host; the web pages stay on loopback.
        env["MBC_HUB_API_BIND"] = "http://{gateway}:8081"
    try:
        check_upload_ports(env)
    except PlatformConfigError as exc:
        raise MbcError(str(exc)) from None
    command = [sys.executable, "-m", "jupyterhub", "-f", str(root / "hub" / "jupyterhub_config.py")]
    if spawner == "docker":
        # The demo stops what it started: the researchers' containers go with the hub (their
        # homes stay on their volumes), and the platform network after it.
        command.append("--JupyterHub.cleanup_servers=True")
    proc = subprocess.Popen(command, cwd=root, env=env, stderr=subprocess.PIPE)
    running = threading.Event()
    relay = threading.Thread(target=relay_log, args=(proc, running), daemon=True)
    relay.start()
    try:
        wait_until_up(url, proc, running)
        print(banner(url, users, store, data_dir, upload_lines(url, env, workdir)), flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        relay.join(timeout=10)
        if spawner == "docker":
            remove_demo_network(env)
