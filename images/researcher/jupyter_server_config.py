# The researcher server's additions to jupyter-server's config (loaded from the venv's
# etc/jupyter): TensorBoard behind jupyter-server-proxy, reading the results folder where
# mbc_lib.notebook_helpers.fit writes its event files. It listens on loopback only; the
# server's own authentication guards <server>/tensorboard/.
import os

results = os.path.expanduser("~/mbc-results")
os.makedirs(results, exist_ok=True)

c.ServerProxy.servers = {  # noqa: F821 - `c` is the config object jupyter-server passes in
    "tensorboard": {
        "command": [
            "tensorboard",
            "--logdir",
            results,
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--reload_interval",
            "15",
        ],
        "timeout": 60,
        "launcher_entry": {"title": "TensorBoard", "enabled": True},
        "new_browser_tab": False,
    }
}
