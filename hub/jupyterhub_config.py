"""JupyterHub configuration of the mbc hub.

Everything comes from the platform config: the embedded defaults, the YAML file named by
``$MBC_PLATFORM_CONFIG`` (every key: ``hub/platform.example.yaml``) and the environment
(``MBC_SPAWNER``, ``MBC_AUTH``, ``MBC_STORE_HOST_PATH``, ``MBC_HUB_BIND``, ...). See docs/hub.md.

    jupyterhub -f hub/jupyterhub_config.py
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from mbc_hub.apply import apply_platform_config  # noqa: E402
from mbc_hub.config import load_platform_config  # noqa: E402

c = get_config()  # noqa: F821
apply_platform_config(c, load_platform_config(), project_dir=HERE.parent)
