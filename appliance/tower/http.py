"""HTTP for the tower (aiohttp): Electrum's JSON-RPC on ``POST /`` and rust-teos's paths.

Three ways in, one handler set:

* plain HTTP on the LAN port: served only to loopback and private addresses (Electrum
  itself accepts a plain ``watchtower_url`` only for a private address);
* HTTPS with the box's self-signed certificate, for anything else on the LAN;
* a unix socket in ``run_dir`` that only the Noise relay (``relay.py``) reaches: the
  peer there is a paired client, already authenticated by its key.

HTTP Basic auth guards the Electrum methods and TEOS registration on the network
listeners: no ``Authorization`` header gets 401 (with ``WWW-Authenticate``), a wrong one
403. The other TEOS calls are authenticated by the user's signature.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .api import TeosError, TowerAPI

__all__ = ["BasicAuth", "make_app"]

log = logging.getLogger("tower.http")

_MAX_BODY = 16 * 1024  # the largest request: a 2 KiB blob as hex plus JSON


class BasicAuth:
    def __init__(self, user: str, password: str) -> None:
        self._expected = base64.b64encode(f"{user}:{password}".encode()).decode()

    def check(self, header: str | None) -> int:
        """0 if accepted, else the HTTP status to answer (401 none, 403 wrong)."""
        if not header:
            return 401
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return 401
        return 0 if hmac.compare_digest(value.strip().encode(), self._expected.encode()) else 403


def _is_private(remote: str | None) -> bool:
    if not remote:
        return True  # a unix socket
    try:
        addr = ipaddress.ip_address(remote.split("%")[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_private or addr.is_loopback or addr.is_link_local


def make_app(api: TowerAPI, *, auth: BasicAuth | None, lan_only: bool,
             on_change: Callable[[], None] | None = None) -> web.Application:
    """``auth=None``: every caller is trusted (the Noise relay's socket)."""

    def guard(request: web.Request) -> web.Response | None:
        if lan_only and not _is_private(request.remote):
            return web.json_response({"error": "plain HTTP is for the LAN only: use HTTPS"},
                                     status=403)
        return None

    def authorize(request: web.Request) -> web.Response | None:
        if auth is None:
            return None
        status = auth.check(request.headers.get("Authorization"))
        if status == 401:
            return web.Response(status=401, text="authentication required",
                                headers={"WWW-Authenticate": 'Basic realm="Hearth tower"'})
        if status == 403:
            return web.Response(status=403, text="wrong credentials")
        return None

    async def body_of(request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > _MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=_MAX_BODY, actual_size=request.content_length)
        return await request.read()

    async def electrum(request: web.Request) -> web.Response:
        refused = guard(request) or authorize(request)
        if refused is not None:
            return refused
        reply = api.electrum_rpc(await body_of(request))
        if on_change is not None and "result" in reply:
            on_change()
        return web.json_response(reply)

    def teos(handler: Callable[[bytes], Any], *, needs_auth: bool = False
             ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def endpoint(request: web.Request) -> web.Response:
            refused = guard(request) or (authorize(request) if needs_auth else None)
            if refused is not None:
                return refused
            try:
                result = handler(await body_of(request))
            except TeosError as exc:
                return web.json_response(exc.body(), status=exc.status)
            status, body = result if isinstance(result, tuple) else (200, result)
            if on_change is not None:
                on_change()
            return web.json_response(body, status=status)
        return endpoint

    async def ping(request: web.Request) -> web.Response:
        refused = guard(request)
        return refused if refused is not None else web.json_response(api.ping())

    app = web.Application(client_max_size=_MAX_BODY)
    app.router.add_post("/", electrum)
    app.router.add_post("/register", teos(api.register, needs_auth=True))
    app.router.add_post("/add_appointment", teos(api.add_appointment))
    app.router.add_post("/get_appointment", teos(api.get_appointment))
    app.router.add_post("/get_subscription_info", teos(api.get_subscription_info))
    app.router.add_get("/ping", ping)
    app.router.add_post("/ping", ping)
    return app

