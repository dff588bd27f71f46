"""The mbc hub: platform config, spawn policy, GPU allocation, audit, auth and services.

``hub/jupyterhub_config.py`` loads the platform config (:mod:`mbc_hub.config`) and hands it to
:func:`mbc_hub.apply.apply_platform_config`, which sets JupyterHub's traitlets from it.
"""

from .config import PlatformConfig, PlatformConfigError, load_platform_config

__all__ = ["PlatformConfig", "PlatformConfigError", "load_platform_config"]
