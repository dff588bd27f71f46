"""Drives a provisioned platform from outside, as its users would (the Molecule scenario's
verify, ansible/molecule/default): a society uploads a sample through the ingest service, a
researcher logs in through OpenID Connect and starts a GPU server, and the server reports
what it sees.

    python -m tests.hub.platform_driver upload|spawn|stop --hub https://HOST --work DIR ...

Each step prints one JSON line; the hub's certificate is checked against SSL_CERT_FILE.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import requests

from .hub_helpers import (
    auth,
    oidc_login,
    run_in_kernel,
    start_server,
    stop_server,
    user_token,
    wait_for,
)
from .oidc_provider import OidcProvider

#: What the researcher's kernel reports: the datasets it sees, and whether a dataset's folder
#: refuses a write.
PROBE = """
import json, os, mbc_lib
datasets = mbc_lib.open_store().datasets()
try:
    open(os.path.join(os.environ["MBC_STORE"], datasets[0], "probe"), "w").close()
    refused = None
except OSError as exc:
    refused = exc.strerror
print(json.dumps({"datasets": datasets, "write_refused": refused}))
"""


def upload_sample(args: argparse.Namespace) -> dict:
    from mbc_lib.deid.keys import generate_key_file
    from mbc_lib.sample import write_sample_tree
    from mbc_lib.upload import upload

    work = Path(args.work)
    tree = work / "society-tree"
    if not tree.exists():
        write_sample_tree(tree, seed=3, n_fundus=args.n_fundus, n_ct=1, ct_size=32)
    key = work / "society.key"
    if not key.exists():
        generate_key_file(key)
    token = Path(args.token_file).read_text().strip()
    summary = upload(
        tree / args.dataset, args.hub, token, args.dataset, deid_key_file=key, progress=False
    )
    return {
        "dataset": args.dataset,
        "files": dict(summary.counts()),
        "accounted": summary.accounted,
        "lines": summary.lines(),
    }


def login(args: argparse.Namespace) -> tuple[requests.Session, str]:
    """The browser's path through the institution's provider; the user's API token."""
    provider = OidcProvider(args.client_id, args.client_secret, args.oidc_host, args.oidc_port)
    with provider:
        provider.sign_in_as(args.user, args.groups)
        session, reply = oidc_login(args.hub, timeout=60)
        if reply.status_code != 200 or "/hub/home" not in reply.url:
            raise SystemExit(f"login failed: {reply.status_code} {reply.url}")
        return session, user_token(session, args.hub, args.user)


def spawn(args: argparse.Namespace) -> dict:
    _session, token = login(args)
    start_server(args.hub, args.user, token, timeout=args.timeout, profile=args.profile)
    seen = json.loads(run_in_kernel(args.hub, args.user, token, PROBE, timeout=180))
    Path(args.work, f"{args.user}.token").write_text(token)
    return {"user": args.user, "profile": args.profile, **seen}


def stop(args: argparse.Namespace) -> dict:
    token = Path(args.work, f"{args.user}.token").read_text()
    stop_server(args.hub, args.user, token, timeout=args.timeout)
    reply = requests.get(f"{args.hub}/hub/api/users/{args.user}", headers=auth(token), timeout=30)
    return {"user": args.user, "servers": reply.json().get("servers", {})}


def health(args: argparse.Namespace) -> dict:
    reply = wait_for(lambda: _get(f"{args.hub}/hub/health"), args.timeout, "the hub's HTTPS port")
    return {"status": reply.status_code, "tls": reply.url.startswith("https://")}


def _get(url: str) -> requests.Response | None:
    try:
        reply = requests.get(url, timeout=5)
    except requests.ConnectionError:
        return None
    return reply if reply.ok else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="platform_driver")
    parser.add_argument("step", choices=["health", "upload", "spawn", "stop"])
    parser.add_argument("--hub", required=True, help="https://HOST[:PORT] of the hub")
    parser.add_argument("--work", required=True, help="a folder for the driver's files")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--token-file", help="upload: the society's token")
    parser.add_argument("--dataset", default="fundus-glaucoma")
    parser.add_argument("--n-fundus", type=int, default=4)
    parser.add_argument("--user", default="olivia")
    parser.add_argument("--groups", nargs="*", default=["ophthalmology"])
    parser.add_argument("--profile", default="gpu")
    parser.add_argument("--client-id", default="mbc-hub")
    parser.add_argument("--client-secret-file", help="the OIDC client's secret")
    parser.add_argument("--oidc-host", default="127.0.0.1")
    parser.add_argument("--oidc-port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.client_secret_file:
        args.client_secret = Path(args.client_secret_file).read_text().strip()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    step = {"health": health, "upload": upload_sample, "spawn": spawn, "stop": stop}[args.step]
    print(json.dumps(step(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
