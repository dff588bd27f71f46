"""The platform config: defaults, the YAML file, environment overrides and validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mbc_hub.config import DEFAULTS, PlatformConfigError, load_platform_config

EXAMPLE = Path(__file__).resolve().parents[2] / "hub" / "platform.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "platform.yaml"
    path.write_text(text)
    return path


def test_example_file_documents_exactly_the_embedded_defaults():
    assert yaml.safe_load(EXAMPLE.read_text()) == DEFAULTS
    assert load_platform_config(EXAMPLE, environ={}).hub == load_platform_config(environ={}).hub


def test_defaults_are_the_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_platform_config(environ={})
    assert cfg.spawner.mode == "local" and cfg.auth.mode == "demo"
    assert cfg.hub.bind_url == "http://127.0.0.1:8000"
    assert cfg.store.host_path == tmp_path / "work-demo" / "store"
    assert cfg.audit_path == tmp_path / "work-demo" / "hub" / "audit.jsonl"
    assert [p.name for p in cfg.profiles] == ["cpu", "gpu"]
    assert cfg.profile("gpu").gpus == 1 and cfg.profile("gpu").shm_size == "16G"
    assert cfg.gpus.devices is None  # detect with nvidia-smi


def test_yaml_overrides_defaults_and_env_overrides_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(
        tmp_path,
        "spawner: {mode: docker}\nhub: {data_dir: /srv/hub}\ngpus: {devices: [0, 1, 2]}\n",
    )
    cfg = load_platform_config(path, environ={})
    assert cfg.spawner.mode == "docker" and cfg.gpus.devices == ("0", "1", "2")
    assert cfg.audit_path == Path("/srv/hub/audit.jsonl")
    assert cfg.auth.demo_users_file == Path("/srv/hub/demo-users.yaml")

    env = {
        "MBC_PLATFORM_CONFIG": str(path),
        "MBC_SPAWNER": "swarm",
        "MBC_AUTH": "demo",
        "MBC_STORE_HOST_PATH": "data/store",
        "MBC_HUB_BIND": "127.0.0.2:9000",
        "MBC_GPUS": "none",
        "MBC_IMAGE": "registry.local/mbc:1",
    }
    cfg = load_platform_config(environ=env)
    assert cfg.spawner.mode == "swarm"
    assert cfg.store.host_path == tmp_path / "data" / "store"
    assert cfg.hub.bind_url == "http://127.0.0.2:9000"
    assert cfg.gpus.devices == () and cfg.docker.image == "registry.local/mbc:1"
    assert cfg.sources[1] == str(path) and "MBC_SPAWNER" in cfg.sources[2]


def test_gpu_ids_from_env_list():
    assert load_platform_config(environ={"MBC_GPUS": "0, 3"}).gpus.devices == ("0", "3")
    assert load_platform_config(environ={"MBC_GPUS": "auto"}).gpus.devices is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hub: {bnd_url: x}\n", "unknown key 'hub.bnd_url'"),
        ("spawner: {mode: kubernetes}\n", "spawner.mode is 'kubernetes'"),
        ("docker: {user: '0:0'}\n", "must not be root"),
        ("docker: {network: bridge}\n", "internal network"),
        ("docker: {home_volume: shared-home}\n", "{username}"),
        ("profiles: [{name: big, gpus: 2}]\n", "0 or 1"),
        ("profiles: [{name: cpu, mem_limit: lots}]\n", "size like 512M"),
        ("auth: {mode: oidc}\n", "auth.oidc.authorize_url is required"),
        ("culler: {timeout: 5}\n", "culler.timeout must be a number >= 10"),
        ("store: {mount_path: mnt/store}\n", "absolute path"),
        ("hub: [1, 2]\n", "hub must be a mapping"),
        ("hub: {bind_url: 'http://127.0.0.1:8000'\n", "not valid YAML (line 2)"),
    ],
)
def test_invalid_config_is_refused_with_the_key_named(tmp_path, text, message):
    with pytest.raises(PlatformConfigError) as err:
        load_platform_config(write(tmp_path, text), environ={})
    assert message in str(err.value)


def test_demo_login_refuses_a_non_loopback_bind():
    with pytest.raises(PlatformConfigError, match="only a loopback address"):
        load_platform_config(environ={"MBC_HUB_BIND": "0.0.0.0:8000"})
    with pytest.raises(PlatformConfigError, match="only a loopback address"):
        load_platform_config(environ={"MBC_HUB_BIND": "http://hub.example.org:8000"})
    for ok in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000"):
        assert load_platform_config(environ={"MBC_HUB_BIND": ok}).auth.mode == "demo"


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(PlatformConfigError, match="cannot read platform config"):
        load_platform_config(tmp_path / "nope.yaml", environ={})
