"""The mbc hub: JupyterHub with mbc's spawners, login, GPU allocation, audit log and services.

``hub/jupyterhub_config.py`` merges the platform config into JupyterHub's ``c`` with
:func:`mbc_hub.config.load_platform_config`; each setting is a trait of the class that uses it
(docs/hub.md has the reference, made by :mod:`mbc_hub.reference`).
"""

from .config import load_platform_config
from .platform import MbcPlatform, PlatformConfigError

__all__ = ["MbcPlatform", "PlatformConfigError", "load_platform_config"]
