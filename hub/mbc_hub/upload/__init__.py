"""The ingest service: the store's only writer, fed by upload sessions, STOW-RS and C-STORE.

``python -m mbc_hub.upload`` is what the hub runs (``JupyterHub.services``); docs/upload.md
describes the API, the society accounts and the limits.
"""

from .settings import SERVICE_NAME, UPLOAD_SCOPE, MbcUpload, dataset_scope

__all__ = ["SERVICE_NAME", "UPLOAD_SCOPE", "MbcUpload", "dataset_scope"]
