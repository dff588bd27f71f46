"""A tiny OpenID Connect provider on loopback (or an address the test made), for the hub's
login tests.

Authorization-code flow with PKCE (S256): ``/authorize`` signs in whichever user the test chose
and redirects back with a code; ``/token`` trades the code (client secret and code verifier
checked) for an access token; ``/userinfo`` answers the token's claims.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse


class OidcProvider:
    def __init__(
        self, client_id: str, client_secret: str, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.user: dict[str, Any] = {}
        self.codes: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OidcProvider:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def sign_in_as(self, username: str, groups: list[str]) -> None:
        """The user whom the next ``/authorize`` signs in."""
        self.user = {"sub": f"sub-{username}", "preferred_username": username, "groups": groups}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, body: dict | None = None, **headers: str) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key.replace("_", "-"), value)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                provider.requests.append(url.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/authorize":
                    if query.get("client_id") != provider.client_id:
                        return self._reply(400, {"error": "unauthorized_client"})
                    if query.get("code_challenge_method") != "S256":
                        return self._reply(400, {"error": "invalid_request"})
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = {
                        "user": dict(provider.user),
                        "redirect_uri": query["redirect_uri"],
                        "challenge": query["code_challenge"],
                    }
                    target = (
                        query["redirect_uri"]
                        + "?"
                        + urlencode({"code": code, "state": query.get("state", "")})
                    )
                    return self._reply(302, Location=target)
                if url.path == "/userinfo":
                    token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    if token not in provider.tokens:
                        return self._reply(401, {"error": "invalid_token"})
                    return self._reply(200, provider.tokens[token])
                return self._reply(404, {"error": "not_found"})

            def do_POST(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                provider.requests.append(url.path)
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if url.path != "/token":
                    return self._reply(404, {"error": "not_found"})
                grant = provider.codes.pop(form.get("code", ""), None)
                client_ok = (
                    form.get("client_id") == provider.client_id
                    and form.get("client_secret") == provider.client_secret
                )
                if grant is None or not client_ok:
                    return self._reply(400, {"error": "invalid_grant"})
                verifier = form.get("code_verifier", "").encode()
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest())
                if challenge.rstrip(b"=").decode() != grant["challenge"]:
                    return self._reply(400, {"error": "invalid_grant", "reason": "PKCE"})
                if form.get("redirect_uri") != grant["redirect_uri"]:
                    return self._reply(400, {"error": "invalid_grant", "reason": "redirect"})
                token = secrets.token_urlsafe(24)
                provider.tokens[token] = grant["user"]
                return self._reply(
                    200,
                    {
                        "access_token": token,
                        "token_type": "Bearer",
                        "expires_in": 600,
                        "scope": "openid profile email groups",
                    },
                )

        return Handler
