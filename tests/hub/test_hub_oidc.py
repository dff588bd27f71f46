"""OIDC login against a real hub and an OIDC provider that the test runs on loopback."""

from __future__ import annotations

import pytest
import requests
from mbc_hub.audit import read_audit

from .hub_helpers import HubProcess, api, auth, oidc_login, user_token
from .oidc_provider import OidcProvider

pytestmark = pytest.mark.slow

CLIENT_ID, CLIENT_SECRET = "mbc-hub", "test-client-secret"


@pytest.fixture(scope="module")
def oidc_hub(tmp_path_factory, hub_store):
    with OidcProvider(CLIENT_ID, CLIENT_SECRET) as provider:
        hub = HubProcess(tmp_path_factory.mktemp("oidchub"))
        hub.write_platform(
            {
                "MbcPlatform": {"authenticator": "oidc"},
                "MbcOAuthenticator": {
                    "authorize_url": f"{provider.url}/authorize",
                    "token_url": f"{provider.url}/token",
                    "userdata_url": f"{provider.url}/userinfo",
                    "client_id": CLIENT_ID,
                    "oauth_callback_url": f"{hub.url}/hub/oauth_callback",
                },
                # no allowed_groups: the groups the store's datasets name may log in
                "MbcStore": {"path": str(hub_store)},
                "IdleCuller": {"enabled": False},
            }
        )
        # the secret comes from the environment, as in production (OAuthenticator's variable)
        hub.env["OAUTH_CLIENT_SECRET"] = CLIENT_SECRET
        hub.start()
        yield hub, provider
        hub.stop()


def whoami(hub: HubProcess, session: requests.Session, name: str) -> dict:
    token = user_token(session, hub.url, name)
    return requests.get(f"{hub.url}/hub/api/user", headers=auth(token), timeout=10).json()


def test_login_flow_sets_hub_groups_from_the_token(oidc_hub):
    hub, provider = oidc_hub
    provider.sign_in_as("dave", ["radiology"])
    session, reply = oidc_login(hub.url)
    assert reply.status_code == 200 and reply.url == f"{hub.url}/hub/home"
    hops = [r.url.split("?")[0] for r in reply.history]
    assert hops == [
        f"{hub.url}/hub/oauth_login",
        f"{provider.url}/authorize",
        f"{hub.url}/hub/oauth_callback",
    ]
    assert provider.requests[-3:] == ["/authorize", "/token", "/userinfo"]
    me = whoami(hub, session, "dave")
    assert me["groups"] == ["radiology"] and not me["admin"]

    # the provider moves dave to ophthalmology: the next login updates the hub's groups
    provider.sign_in_as("dave", ["ophthalmology"])
    session, reply = oidc_login(hub.url)
    assert reply.status_code == 200
    assert whoami(hub, session, "dave")["groups"] == ["ophthalmology"]

    events = [e for e in read_audit(hub.audit_path) if e["user"] == "dave"]
    assert [e["event"] for e in events] == ["login", "login"]
    assert events[0]["groups"] == ["radiology"] and events[1]["groups"] == ["ophthalmology"]
    assert CLIENT_SECRET not in hub.audit_path.read_text()


def test_admin_group_makes_a_hub_admin(oidc_hub):
    hub, provider = oidc_hub
    provider.sign_in_as("erin", ["radiology", "mbc-admins"])
    session, reply = oidc_login(hub.url)
    assert reply.status_code == 200
    me = whoami(hub, session, "erin")
    assert me["admin"] and sorted(me["groups"]) == ["mbc-admins", "radiology"]
    users = api(session, "GET", f"{hub.url}/hub/api/users")
    assert users.status_code == 200 and {"dave", "erin"} <= {u["name"] for u in users.json()}


def test_user_outside_allowed_groups_is_refused_clearly(oidc_hub):
    hub, provider = oidc_hub
    provider.sign_in_as("mallory", ["marketing"])
    session, reply = oidc_login(hub.url)
    assert reply.status_code == 403
    assert "not in a group that may use this hub" in reply.text
    assert "mbc-admins, ophthalmology, radiology" in reply.text
    assert not any(cookie.name == "jupyterhub-hub-login" for cookie in session.cookies)
    refusal = [e for e in read_audit(hub.audit_path) if e["event"] == "refusal"]
    assert refusal and refusal[-1]["user"] == "mallory"
    assert refusal[-1]["reason"] == "not in an allowed group"
    assert refusal[-1]["groups"] == ["marketing"]
