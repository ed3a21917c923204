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

Connections are bounded before aiohttp sees a byte (:class:`~appliance.tower.gate.ConnectionGate`
on the TCP listeners: per-address and total caps, TLS handshakes capped and timed, request
headers due within 10 s). Request cost is bounded before the API sees a body
(:class:`RequestGuard`, shared by the listeners): at most ``_MAX_BODY`` bytes (413), read
within ``_BODY_TIMEOUT`` (408), at most ``per_address`` requests at once from one address
(503), and JSON with too many values or nested too deep is refused unparsed with 400 and
TEOS's
``INVALID_REQUEST_FORMAT`` (a JSON-RPC error on ``POST /``). Refusals are counted and
logged at a bounded rate.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..jsonguard import json_cost_error
from ..peers import AddressCounts
from ..ratelog import RateLimitedLog
from .api import INVALID_REQUEST_FORMAT, TeosError, TowerAPI
from .gate import ConnectionGate, GateLimits

__all__ = ["BasicAuth", "RequestGuard", "make_app"]

log = logging.getLogger("tower.http")

_MAX_BODY = 16 * 1024  # the largest request: a 2 KiB blob as hex plus JSON
_MAX_DEPTH = 8  # TEOS bodies are 1 level deep, Electrum's 2
_BODY_TIMEOUT = 30.0  # a body trickled in a byte at a time holds nothing for long
_INVALID_REQUEST = -32600  # JSON-RPC 2.0


class RequestGuard:
    """Limits every tower listener shares; ``refused`` counts what they turned away."""

    def __init__(self, *, per_address: int = 8, body_timeout: float = _BODY_TIMEOUT,
                 gate: GateLimits | None = None) -> None:
        self.per_address = per_address
        self.body_timeout = body_timeout
        self.refused = 0
        self._running = AddressCounts()
        self._log = RateLimitedLog(log, "refused tower requests")
        #: before a request: connections, TLS handshakes, header deadline (gate.py)
        self.gate = ConnectionGate(self._refuse_connection, gate)

    def _refuse_connection(self, address: str, message: str) -> None:
        self.refused += 1
        self._log("refused a connection from %s: %s", address, message)

    def refuse(self, request: web.Request, status: int, message: str) -> web.Response:
        self.refused += 1
        self._log("refused %s %s from %s: %s", request.method, request.path,
                  request.remote or "the relay", message)
        return web.json_response({"error": message, "error_code": INVALID_REQUEST_FORMAT},
                                 status=status)

    def check_body(self, body: bytes) -> str | None:
        """Why a body is too costly to parse, or None."""
        return json_cost_error(body, max_depth=_MAX_DEPTH)

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        address = request.remote or ""
        self.gate.headers_in(request.transport)
        if not self._running.acquire(address, self.per_address):
            self.gate.answered(request.transport)
            return self.refuse(request, 503, f"more than {self.per_address} requests at once")
        try:
            async with asyncio.timeout(self.body_timeout):
                return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return self.refuse(request, 413, f"body over {_MAX_BODY:,d} bytes")
        except TimeoutError:
            return self.refuse(request, 408,
                               f"request not received within {self.body_timeout:g} s")
        finally:
            self._running.release(address)
            self.gate.answered(request.transport)


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
             on_change: Callable[[], None] | None = None,
             guard_with: RequestGuard | None = None) -> web.Application:
    """``auth=None``: every caller is trusted (the Noise relay's socket)."""
    limits = guard_with or RequestGuard()

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
        body = await body_of(request)
        too_costly = limits.check_body(body)
        if too_costly is not None:
            limits.refuse(request, 400, too_costly)
            return web.json_response({"jsonrpc": "2.0", "id": None, "error": {
                "code": _INVALID_REQUEST, "message": f"request refused: {too_costly}"}},
                status=400)
        reply = api.electrum_rpc(body)
        if on_change is not None and "result" in reply:
            on_change()
        return web.json_response(reply)

    def teos(handler: Callable[[bytes], Any], *, needs_auth: bool = False
             ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def endpoint(request: web.Request) -> web.Response:
            refused = guard(request) or (authorize(request) if needs_auth else None)
            if refused is not None:
                return refused
            body = await body_of(request)
            too_costly = limits.check_body(body)
            if too_costly is not None:
                return limits.refuse(request, 400, f"the body is refused: {too_costly}")
            try:
                result = handler(body)
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

    app = web.Application(client_max_size=_MAX_BODY, middlewares=[limits.middleware])
    app.router.add_post("/", electrum)
    app.router.add_post("/register", teos(api.register, needs_auth=True))
    app.router.add_post("/add_appointment", teos(api.add_appointment))
    app.router.add_post("/get_appointment", teos(api.get_appointment))
    app.router.add_post("/get_subscription_info", teos(api.get_subscription_info))
    app.router.add_get("/ping", ping)
    app.router.add_post("/ping", ping)
    return app

