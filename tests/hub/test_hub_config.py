"""The platform config: mbc's defaults, the class-keyed YAML file, the environment list, each
value checked by its trait, and the settings reference in docs/hub.md."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from mbc_hub import reference
from mbc_hub.auth import DemoAuthenticator
from mbc_hub.config import configurable_classes, layered_config, load_platform_config, mbc_classes
from mbc_hub.platform import ENV_OVERRIDES, MBC_DEFAULTS, PlatformConfigError
from mbc_hub.spawner import MbcLocalSpawner, MbcSwarmSpawner
from traitlets import HasTraits

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "hub" / "platform.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "platform.yaml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str = "", **env: str):
    return load_platform_config(path=write(tmp_path, text), environ=env, project_dir=ROOT)


def test_example_file_holds_every_mbc_setting_with_its_default():
    example = yaml.safe_load(EXAMPLE.read_text())
    for cls in mbc_classes():
        for name, trait in cls.class_own_traits(config=True).items():
            section = example.get(cls.__name__) or {}
            assert name in section, f"{cls.__name__}.{name} missing from {EXAMPLE.name}"
            value = trait._validate(HasTraits(), section[name])
            default = trait._validate(HasTraits(), trait.default())
            assert value == default, f"{cls.__name__}.{name}: {value!r} != {default!r}"
    for section, values in MBC_DEFAULTS.items():
        for key in set(values) & set(example.get(section) or {}):
            assert yaml.safe_load(yaml.safe_dump(values[key])) == example[section][key]


def test_example_file_loads_to_the_same_settings_as_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    classes = configurable_classes()

    def effective(c, section, key):
        if key in c[section]:
            return c[section][key]
        trait = classes[section].class_traits(config=True)[key]
        return trait._validate(HasTraits(), trait.default())

    example, plain = layered_config(EXAMPLE, environ={}), layered_config(environ={})
    for section in example:
        for key, value in example[section].items():
            assert value == effective(plain, section, key), f"{section}.{key}"


def test_defaults_are_the_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = load(tmp_path)
    data = tmp_path / "work-demo" / "hub"
    assert c.JupyterHub.spawner_class is MbcLocalSpawner
    assert c.JupyterHub.authenticator_class is DemoAuthenticator
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8000" and c.JupyterHub.cleanup_servers
    assert c.JupyterHub.db_url == f"sqlite:///{data / 'jupyterhub.sqlite'}"
    assert c.JupyterHub.cookie_secret_file == str(data / "jupyterhub_cookie_secret")
    assert c.AuditLog.path == str(data / "audit.jsonl")
    assert c.DemoAuthenticator.users_file == str(data / "demo-users.yaml")
    assert c.SimpleLocalProcessSpawner.home_dir_template == str(data / "homes" / "{username}")
    assert c.Spawner.default_url == "/lab" and c.DockerSpawner.image == "mbc-researcher:latest"
    assert Path(c.ConfigurableHTTPProxy.command[0]).name == "configurable-http-proxy"
    assert data.is_dir()
    culler, upload = c.JupyterHub.services
    assert upload["name"] == "mbc-upload" and upload["url"] == "http://127.0.0.1:8091"
    assert upload["command"][-2:] == ["-m", "mbc_hub.upload"]
    assert "custom:mbc:upload:ct-covid" in c.JupyterHub.custom_scopes
    assert culler["name"] == "idle-culler"
    assert "--timeout=3600" in culler["command"] and "--max-age=28800" in culler["command"]
    (role,) = c.JupyterHub.load_roles
    assert role["services"] == ["idle-culler"] and "delete:servers" in role["scopes"]


def test_yaml_overrides_defaults_and_env_overrides_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (
        "MbcPlatform: {data_dir: /srv/hub}\n"
        "GpuAllocator: {devices: [0, 1, 2]}\n"
        "Spawner: {start_timeout: 300}\n"
        "MbcStore: {path: data/store}\n"
    )
    c = layered_config(write(tmp_path, text), environ={})
    assert c.GpuAllocator.devices == ["0", "1", "2"] and c.Spawner.start_timeout == 300
    assert c.AuditLog.path == "/srv/hub/audit.jsonl"
    assert c.DemoAuthenticator.users_file == "/srv/hub/demo-users.yaml"
    assert c.MbcStore.path == str(tmp_path / "data" / "store")  # from the folder it starts in
    assert c.Spawner.http_timeout == 60  # left out: mbc's default

    env = {
        "MBC_PLATFORM_CONFIG": str(tmp_path / "platform.yaml"),
        "MBC_SPAWNER": "swarm",
        "MBC_AUTH": "demo",
        "MBC_STORE_HOST_PATH": "other/store",
        "MBC_HUB_BIND": "127.0.0.2:9000",
        "MBC_GPUS": "none",
        "MBC_IMAGE": "registry.local/mbc:1",
    }
    c = layered_config(environ=env)
    assert c.MbcPlatform.spawner == "swarm" and c.Spawner.start_timeout == 300
    assert c.MbcStore.path == str(tmp_path / "other" / "store")
    assert c.JupyterHub.bind_url == "http://127.0.0.2:9000"
    assert c.GpuAllocator.devices == [] and c.DockerSpawner.image == "registry.local/mbc:1"


def test_gpu_ids_from_the_environment():
    assert layered_config(environ={"MBC_GPUS": "0, 3"}).GpuAllocator.devices == ["0", "3"]
    assert layered_config(environ={"MBC_GPUS": "auto"}).GpuAllocator.devices == "auto"


def test_only_the_documented_environment_variables_are_read(tmp_path, monkeypatch):
    """Variables that once were read (a client secret of our own, a culler switch) are not:
    OIDC secrets come through OAuthenticator's own variables, everything else from the file."""
    monkeypatch.chdir(tmp_path)
    plain = layered_config(environ={})
    noisy = layered_config(
        environ={"MBC_OIDC_CLIENT_SECRET": "s3cret", "MBC_CULLER": "off", "MBC_PROFILE": "gpu"}
    )
    assert noisy == plain
    docs = (ROOT / "docs" / "hub.md").read_text()
    for var, (section, key) in ENV_OVERRIDES.items():
        assert f"| `{var}` | `{section}.{key}` |" in docs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("JupyterHub: {bnd_url: x}\n", "JupyterHub has no setting 'bnd_url'"),
        ("Hub: {bind_url: x}\n", "unknown class 'Hub'"),
        ("MbcPlatform: {spawner: kubernetes}\n", "MbcPlatform.spawner: The 'spawner' trait"),
        ("MbcContainerSpawner: {container_user: '0:0'}\n", "must not be root"),
        ("DockerSpawner: {network_name: bridge}\n", "internal network"),
        ("MbcContainerSpawner: {home_volume: shared-home}\n", "{username}"),
        ("MbcContainerSpawner: {profiles: [{name: big, gpus: 2}]}\n", "0 or 1"),
        ("MbcContainerSpawner: {profiles: [{name: cpu, mem_limit: lots}]}\n", "like 512M"),
        ("MbcContainerSpawner: {profiles: [{name: cpu, gpu: 1}]}\n", "unknown key 'gpu'"),
        ("MbcContainerSpawner: {profiles: [{name: a}, {name: a}]}\n", "names must be unique"),
        ("MbcContainerSpawner: {pids_limit: 10}\n", "MbcContainerSpawner.pids_limit"),
        ("GpuAllocator: {devices: [0, 0]}\n", "repeated or odd ids"),
        ("MbcPlatform: {authenticator: oidc}\n", "needs MbcOAuthenticator.authorize_url"),
        ("IdleCuller: {timeout: 5}\n", "IdleCuller.timeout"),
        ("MbcStore: {mount_path: mnt/store}\n", "absolute path"),
        ("JupyterHub: {spawner_class: x}\n", "set MbcPlatform.spawner instead"),
        ("JupyterHub: [1, 2]\n", "JupyterHub must map settings to values"),
        ("- 1\n", "top level must map class names"),
        ("JupyterHub: {bind_url: 'http://127.0.0.1:8000'\n", "not valid YAML (line 2)"),
        ("MbcPlatform: {spawner: docker}\n", "containers cannot reach the hub API"),
        ("JupyterHub: {hub_bind_url: 'http://{gateway}:8081'}\n", "docker mode only"),
    ],
)
def test_invalid_config_is_refused_with_the_setting_named(tmp_path, text, message):
    with pytest.raises(PlatformConfigError) as err:
        load(tmp_path, text)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_env_values_are_checked_and_named():
    with pytest.raises(PlatformConfigError, match="^MBC_SPAWNER: MbcPlatform.spawner"):
        layered_config(environ={"MBC_SPAWNER": "kubernetes"})


def test_demo_login_refuses_a_non_loopback_bind(tmp_path):
    for bind in ("0.0.0.0:8000", "http://hub.example.org:8000"):
        with pytest.raises(PlatformConfigError, match="only a loopback address"):
            load(tmp_path, MBC_HUB_BIND=bind)
    for ok in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000"):
        assert load(tmp_path, MBC_HUB_BIND=ok).JupyterHub.authenticator_class is DemoAuthenticator


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(PlatformConfigError, match="cannot read platform config"):
        layered_config(tmp_path / "nope.yaml", environ={})


def test_culler_settings_and_disabling(tmp_path):
    c = load(tmp_path, "IdleCuller: {timeout: 600, max_age: 0, cull_every: 60}\n")
    culler, _ = c.JupyterHub.services
    assert "--timeout=600" in culler["command"] and "--cull-every=60" in culler["command"]
    assert not any(a.startswith("--max-age") for a in culler["command"])
    c = load(tmp_path, "IdleCuller: {enabled: false}\n")
    assert [s["name"] for s in c.JupyterHub.services] == ["mbc-upload"]
    assert c.JupyterHub.load_roles == []
    c = load(tmp_path, "IdleCuller: {enabled: false}\nMbcUpload: {enabled: false}\n")
    assert c.JupyterHub.services == [] and "custom_scopes" not in c.JupyterHub


def test_a_service_of_the_file_is_kept_beside_mbcs(tmp_path):
    c = load(tmp_path, "JupyterHub: {services: [{name: ingest, url: 'http://127.0.0.1:9999'}]}\n")
    assert [s["name"] for s in c.JupyterHub.services] == ["ingest", "idle-culler", "mbc-upload"]


def test_container_hub_settings_reach_the_spawners(tmp_path):
    c = load(
        tmp_path,
        "MbcPlatform: {spawner: swarm}\n"
        "JupyterHub: {hub_bind_url: 'http://0.0.0.0:8081', hub_connect_url: 'http://mbc-hub:8081'}\n",
    )
    assert c.JupyterHub.spawner_class is MbcSwarmSpawner and not c.JupyterHub.cleanup_servers
    assert c.JupyterHub.hub_connect_url == "http://mbc-hub:8081"


def test_docker_hub_on_every_address_is_reached_on_loopback_by_its_proxy(tmp_path):
    c = load(
        tmp_path,
        "MbcPlatform: {spawner: docker}\nJupyterHub: {hub_bind_url: 'http://0.0.0.0:8181'}\n",
    )
    assert c.JupyterHub.hub_bind_url == "http://0.0.0.0:8181"
    assert c.JupyterHub.hub_connect_url == "http://127.0.0.1:8181"


def test_every_mbc_setting_is_a_documented_trait():
    for cls in mbc_classes():
        assert cls.__name__ in configurable_classes()
        for name, trait in cls.class_own_traits(config=True).items():
            assert len(trait.help) > 20, f"{cls.__name__}.{name} has no help"
    for section, values in MBC_DEFAULTS.items():
        traits = configurable_classes()[section].class_own_traits(config=True)
        for key in values:  # set on the class that defines it: a subclass's value wins
            assert key in traits, f"{section}.{key} is defined on a base class of {section}"


def test_docs_hold_the_generated_settings_reference():
    docs = (ROOT / "docs" / "hub.md").read_text()
    assert reference.embedded(docs) == reference.render(), (
        "docs/hub.md is out of date: python -m mbc_hub.reference --write docs/hub.md"
    )


def test_mbc_hub_is_imported_as_an_installed_package():
    """No file of the hub, the tests or the benchmarks edits sys.path or PYTHONPATH to find
    mbc_hub: it is a package of the mbc distribution."""
    files = [ROOT / "hub" / "jupyterhub_config.py", *(ROOT / "tests").rglob("*.py")]
    files += [*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "hub" / "mbc_hub").glob("*.py")]
    for path in files:
        if path == Path(__file__).resolve():
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path":
                value = node.value
                assert not (isinstance(value, ast.Name) and value.id == "sys"), (
                    f"{path.relative_to(ROOT)} edits sys.path"
                )
            if isinstance(node, ast.Constant) and node.value == "PYTHONPATH":
                raise AssertionError(f"{path.relative_to(ROOT)} sets PYTHONPATH")
    import mbc_hub

    assert Path(mbc_hub.__file__).parent == ROOT / "hub" / "mbc_hub"
    assert not (ROOT / "mbc_lib" / "demo.py").exists()  # the demo launcher lives with the hub


def test_no_private_api_of_dockerspawner_is_called():
    for path in (ROOT / "hub" / "mbc_hub").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                base = node.value
                name = getattr(base, "id", None) or getattr(base, "attr", None)
                assert name not in ("DockerSpawner", "SwarmSpawner"), (
                    f"{path.name} calls {name}.{node.attr}"
                )


def test_societies_become_hub_accounts_with_upload_scopes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = load(
        tmp_path,
        "MbcPlatform: {data_dir: hub}\n"
        "MbcUpload:\n"
        "  societies: {eye-society: [fundus-glaucoma], radiology: [ct-covid, fundus-glaucoma]}\n"
        "  dicom_port: 11112\n"
        "  dicom_callers: {SOCPACS: {society: radiology, dataset: ct-covid}}\n",
    )
    path = tmp_path / "platform.yaml"
    by_name = {s["name"]: s for s in c.JupyterHub.services}
    token_file = tmp_path / "hub" / "society-tokens" / "eye-society.token"
    assert by_name["eye-society"]["api_token"] == token_file.read_text().strip()
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    again = load_platform_config(path=path, environ={}, project_dir=ROOT)
    assert again.JupyterHub.services == c.JupyterHub.services  # the tokens are kept
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["mbc-society-radiology"]["scopes"] == [
        "custom:mbc:upload:ct-covid",
        "custom:mbc:upload:fundus-glaucoma",
    ]
    assert roles["mbc-society-radiology"]["services"] == ["radiology"]
    parent = c.JupyterHub.custom_scopes["custom:mbc:upload"]
    assert "custom:mbc:upload:fundus-glaucoma" in parent["subscopes"]
    assert by_name["mbc-upload"]["environment"]["MBC_PLATFORM_CONFIG"] == str(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("MbcUpload: {societies: {Eye Society: [fundus-glaucoma]}}", "lower-case letters"),
        ("MbcUpload: {societies: {eye: []}}", "must list the datasets"),
        (
            "MbcUpload: {societies: {eye: [fundus-glaucoma]}, dicom_callers: "
            "{PACS: {society: other, dataset: ct-covid}}}",
            "no society 'other'",
        ),
        (
            "MbcUpload: {societies: {eye: [fundus-glaucoma]}, dicom_callers: "
            "{PACS: {society: eye, dataset: ct-covid}}}",
            "may not fill ct-covid",
        ),
        ("MbcUpload: {societies: {idle-culler: [ct-covid]}}", "another hub service"),
        ("MbcUpload: {max_part_bytes: 0}", "MbcUpload.max_part_bytes"),
    ],
)
def test_invalid_upload_settings_are_refused_in_one_line(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PlatformConfigError) as refused:
        load(tmp_path, "MbcPlatform: {data_dir: hub}\n" + text + "\n")
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_an_unmanaged_ingest_service_is_only_proxied_and_given_a_token(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = load(
        tmp_path,
        "MbcPlatform: {data_dir: hub}\n"
        "MbcUpload: {managed: false, service_url: 'http://ingest.internal:8091'}\n",
    )
    service = next(s for s in c.JupyterHub.services if s["name"] == "mbc-upload")
    assert "command" not in service and service["url"] == "http://ingest.internal:8091"
    token = (tmp_path / "hub" / "society-tokens" / "mbc-upload.token").read_text().strip()
    assert service["api_token"] == token and len(token) == 64
