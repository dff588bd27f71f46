"""``python -m mbc_hub.upload``: the ingest service as the hub starts it.

The hub passes ``JUPYTERHUB_SERVICE_URL`` (where to listen), ``JUPYTERHUB_SERVICE_PREFIX`` and
the API token; the settings come from the same platform file as the hub's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from ..audit import AuditLog
from ..config import layered_config
from ..platform import PlatformConfigError
from ..store import MbcStore
from .app import UploadService, serve
from .ingest_jobs import IngestTarget
from .settings import SERVICE_NAME, MbcUpload


def build_service() -> tuple[UploadService, str, str]:
    """The service from the platform config and the hub's environment."""
    config = layered_config()
    settings = MbcUpload(config=config)
    store = MbcStore(config=config)
    target = IngestTarget(
        store=store.root,
        quarantine=Path(settings.quarantine) if settings.quarantine else None,
    )
    url = os.environ.get("JUPYTERHUB_SERVICE_URL") or f"http://{settings.ip}:{settings.port}"
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or f"/services/{SERVICE_NAME}/"
    return UploadService(settings, target, AuditLog(config=config)), url, prefix


async def _run() -> None:
    service, url, prefix = build_service()
    service.start()
    serve(service, url, prefix)
    logging.getLogger("mbc.upload").info("ingest service on %s%s", url, prefix)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    service.stop()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="[mbc-upload %(levelname)s] %(message)s")
    try:
        asyncio.run(_run())
    except PlatformConfigError as exc:
        print(f"mbc-upload: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
