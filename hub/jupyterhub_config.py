"""JupyterHub configuration of the mbc hub.

The platform config is merged into ``c``: mbc's defaults, then the YAML file named by
``$MBC_PLATFORM_CONFIG`` (keyed by class, as ``hub/platform.example.yaml``), then the short
list of environment overrides (``MBC_SPAWNER``, ``MBC_AUTH``, ``MBC_HUB_BIND``, ...). Settings
below this call, or on the command line, win over it. See docs/hub.md.

    jupyterhub -f hub/jupyterhub_config.py
"""

from pathlib import Path

from mbc_hub.config import load_platform_config

c = get_config()  # noqa: F821
load_platform_config(c, project_dir=Path(__file__).resolve().parent.parent)
