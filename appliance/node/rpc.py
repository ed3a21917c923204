"""Asyncio JSON-RPC client for bitcoind, shared by every service.

Minimal HTTP/1.1 written by hand over :func:`asyncio.open_connection`, not httpx or
aiohttp: bitcoind's RPC is loopback HTTP/1.1 whose libevent server always answers with
``Content-Length``, so a few dozen lines cover it, and each service avoids ~5 extra
packages and several MB of RSS on a 4 GB Pi.

Exceptions (all raised by :meth:`BitcoinRPC.call` / :meth:`BitcoinRPC.batch`)::

    NodeError                 base class: catch this to handle "the node failed us"
    ├── NodeUnavailable       connection refused/reset, time-out, cookie file missing,
    │                         HTTP 503 (work queue full): retryable
    ├── NodeWarmingUp         JSON-RPC code -28 while bitcoind starts ("Loading block
    │                         index..."): retryable; ``.message`` is bitcoind's status
    ├── NodeAuthError         HTTP 401/403: credentials rejected or cookie unreadable
    └── RPCError              any other JSON-RPC error: ``.code``, ``.message``, ``.method``

Messages name the URL (without any user-info) and the cookie *path*, never a secret.

Numbers with a fraction come back as :class:`decimal.Decimal` (``parse_float=Decimal``):
amounts stay exact (0.1 BTC is not 0.1000000000000000055), integers stay ``int``.
Callers that want floats (fee rates for Electrum) convert explicitly. ``Decimal``
parameters are sent as exact JSON numbers.

One client belongs to one event loop; it keeps up to ``pool_size`` keep-alive
connections so concurrent calls run in parallel instead of queueing on one socket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

from ..config import Config

__all__ = [
    "RPC_IN_WARMUP",
    "BitcoinRPC",
    "NodeAuthError",
    "NodeError",
    "NodeUnavailable",
    "NodeWarmingUp",
    "RPCError",
]

log = logging.getLogger(__name__)

#: bitcoind's JSON-RPC error code while it is still starting up.
RPC_IN_WARMUP = -28

# Backoff for retry=True: start fast (a restart takes a second or two), stay gentle.
_BACKOFF_START = 0.1
_BACKOFF_CAP = 5.0
# Header lines are short; a cap keeps a confused peer from growing memory forever.
_MAX_HEADER_LINES = 100

_T = TypeVar("_T")


class NodeError(Exception):
    """Base class of everything this client raises about bitcoind."""


class NodeUnavailable(NodeError):
    """bitcoind cannot be reached right now (down, restarting, overloaded)."""


class NodeWarmingUp(NodeError):
    """bitcoind answers but is still starting (JSON-RPC code -28)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"bitcoind is warming up: {message}")
        self.message = message


class NodeAuthError(NodeError):
    """bitcoind rejected the credentials, or the cookie file could not be read."""


class RPCError(NodeError):
    """A JSON-RPC error returned by bitcoind for one method call."""

    def __init__(self, code: int, message: str, method: str) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.code = code
        self.message = message
        self.method = method


class _StaleConnection(Exception):
    """A reused keep-alive connection was already closed by bitcoind."""


class _Conn:
    __slots__ = ("reader", "writer", "reused")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reused = False


class BitcoinRPC:
    """JSON-RPC client for one bitcoind; see the module docstring for errors and types.

    Authenticates with ``cookie_file`` (re-read after every failed connection attempt
    and after a 401, because bitcoind writes a new cookie each time it starts) or with
    ``auth=(user, password)``, or with user-info in ``url``.
    """

    def __init__(
        self,
        url: str,
        *,
        cookie_file: str | Path | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float = 30.0,
        pool_size: int = 4,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"bitcoind RPC URL must be http://host:port, got {parts.scheme}://")
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        if auth is None and parts.username is not None:
            auth = (unquote(parts.username), unquote(parts.password or ""))
        if auth is None and cookie_file is None:
            raise ValueError("bitcoind RPC needs cookie_file or auth")
        self._host = parts.hostname
        self._port = parts.port or 80
        host_port = parts.netloc.rpartition("@")[2]
        self._host_header = host_port.encode()
        self._base_path = parts.path.rstrip("/")
        # Never show credentials: only scheme, host and port.
        self.url = f"http://{host_port}"
        self._cookie_file = Path(cookie_file) if auth is None and cookie_file else None
        self._user = auth[0] if auth else None
        self._auth: bytes | None = _basic(*auth) if auth else None
        self.timeout = timeout
        self.pool_size = pool_size
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[_Conn] = []
        self._next_id = 0
        self._closed = False

    @classmethod
    def from_config(cls, cfg: Config, *, pool_size: int = 4) -> BitcoinRPC:
        """The client every service uses: URL, cookie and time-out from ``cfg``."""
        return cls(cfg.rpc_url, cookie_file=cfg.cookie_file, timeout=cfg.node.rpc_timeout,
                   pool_size=pool_size)

    # --- public API ----------------------------------------------------------------
    async def call(
        self,
        method: str,
        *params: Any,
        wallet: str | None = None,
        retry: bool = False,
        deadline: float = 60.0,
        timeout: float | None = None,
    ) -> Any:
        """Call ``method`` and return its result (raises :class:`RPCError` & co.).

        ``wallet`` sends the call to ``/wallet/<name>``. With ``retry``,
        :class:`NodeUnavailable` and :class:`NodeWarmingUp` are retried with backoff
        (0.1 s doubling to 5 s) for up to ``deadline`` seconds in total; other errors
        are raised at once. ``timeout`` (default: the client's) bounds one attempt.
        """
        self._next_id += 1
        request = {"jsonrpc": "1.0", "id": self._next_id, "method": method,
                   "params": list(params)}
        payload = _dumps(request).encode()

        async def attempt(limit: float) -> Any:
            status, body = await self._post(self._path(wallet), payload, limit)
            reply = self._decode(status, body)
            if not isinstance(reply, dict):
                raise NodeError(f"{self.url}: {method}: unexpected reply {str(reply)[:200]!r}")
            return _result(reply, method)

        return await self._run(attempt, retry, deadline, timeout)

    async def batch(
        self,
        calls: Sequence[tuple[str, Sequence[Any]]],
        *,
        wallet: str | None = None,
        retry: bool = False,
        deadline: float = 60.0,
        timeout: float | None = None,
    ) -> list[Any]:
        """Send ``[(method, params), ...]`` as one JSON-RPC batch (one HTTP request).

        Returns one entry per call, in order: the result, or the :class:`RPCError`
        *instance* for a call that failed (the batch itself does not raise for it).
        Node-level failures (unreachable, warming up, auth) raise as for :meth:`call`.
        """
        if not calls:
            return []
        first = self._next_id + 1
        self._next_id += len(calls)
        requests = [{"jsonrpc": "1.0", "id": first + i, "method": m, "params": list(p)}
                    for i, (m, p) in enumerate(calls)]
        payload = _dumps(requests).encode()

        async def attempt(limit: float) -> list[Any]:
            status, body = await self._post(self._path(wallet), payload, limit)
            replies = self._decode(status, body)
            if not isinstance(replies, list):
                # A batch-level failure comes back as one object, e.g. a parse error.
                if isinstance(replies, dict):
                    _result(replies, "batch")
                raise NodeError(f"{self.url}: batch: unexpected reply {str(replies)[:200]!r}")
            by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
            out: list[Any] = []
            for i, (method, _params) in enumerate(calls):
                reply = by_id.get(first + i)
                if reply is None:
                    raise NodeError(f"{self.url}: batch: no reply for {method}")
                try:
                    out.append(_result(reply, method))
                except RPCError as exc:
                    out.append(exc)
            return out

        result: list[Any] = await self._run(attempt, retry, deadline, timeout)
        return result

    async def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until bitcoind answers (not warming up); return ``getblockchaininfo``.

        Services call this at start so that starting before bitcoind means waiting,
        not crash-looping. Raises the last :class:`NodeUnavailable` /
        :class:`NodeWarmingUp` after ``timeout`` seconds, and auth errors at once.
        """
        info: dict[str, Any] = await self.call("getblockchaininfo", retry=True,
                                               deadline=timeout)
        return info

    async def close(self) -> None:
        """Close idle connections; calls still in flight close theirs when done."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.writer.close()
        for conn in idle:
            try:
                await conn.writer.wait_closed()
            except OSError:  # already reset by the peer: closed is closed
                pass

    async def __aenter__(self) -> BitcoinRPC:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- retries ---------------------------------------------------------------------
    async def _run(
        self,
        attempt: Callable[[float], Awaitable[_T]],
        retry: bool,
        deadline: float,
        timeout: float | None,
    ) -> _T:
        limit = self.timeout if timeout is None else timeout
        if not retry:
            return await attempt(limit)
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        delay = _BACKOFF_START
        tries = 0
        while True:
            tries += 1
            # One hung attempt must not outlive the overall deadline.
            remaining = end - loop.time()
            try:
                return await attempt(max(min(limit, remaining), 0.05))
            except (NodeUnavailable, NodeWarmingUp) as exc:
                remaining = end - loop.time()
                if remaining <= 0:
                    raise
                # First failure is news; the rest would flood the log while we wait.
                log.log(logging.INFO if tries == 1 else logging.DEBUG,
                        "waiting for bitcoind (%s); retrying in %.1fs", exc,
                        min(delay, remaining))
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, _BACKOFF_CAP)

    # --- HTTP ------------------------------------------------------------------------
    def _path(self, wallet: str | None) -> bytes:
        path = self._base_path + (f"/wallet/{quote(wallet, safe='')}" if wallet else "")
        return (path or "/").encode()

    async def _post(self, path: bytes, payload: bytes, timeout: float) -> tuple[int, bytes]:
        """POST one body on a pooled connection; returns (HTTP status, body)."""
        if self._closed:
            raise NodeError("RPC client is closed")
        async with self._slots:
            reauthed = False
            while True:
                conn: _Conn | None = None
                try:
                    async with asyncio.timeout(timeout):
                        conn = await self._checkout()
                        status, body, keep = await self._exchange(conn, path, payload)
                except _StaleConnection:
                    # bitcoind closed an idle keep-alive connection (-rpcservertimeout
                    # or a restart); the request never reached it, so resend.
                    self._discard(conn)
                    continue
                except TimeoutError as exc:
                    self._discard(conn)
                    raise NodeUnavailable(
                        f"bitcoind RPC at {self.url}: no reply within {timeout:g}s") from exc
                except (OSError, asyncio.IncompleteReadError) as exc:
                    self._discard(conn)
                    raise NodeUnavailable(
                        f"bitcoind RPC at {self.url}: connection lost ({_why(exc)})") from exc
                except BaseException:
                    # Cancelled or malformed mid-response: the stream position is unknown.
                    self._discard(conn)
                    raise
                if keep and not self._closed:
                    self._idle.append(conn)
                else:
                    self._discard(conn)
                if status == 401 and self._cookie_file is not None and not reauthed:
                    # bitcoind restarted and wrote a new cookie: read it and try again.
                    reauthed = True
                    self._auth = self._read_cookie(self._cookie_file)
                    continue
                return status, body

    async def _checkout(self) -> _Conn:
        while self._idle:
            conn = self._idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                conn.reused = True
                return conn
            self._discard(conn)
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        except OSError as exc:
            if self._cookie_file is not None:
                self._auth = None  # bitcoind is (re)starting: its cookie will change
            raise NodeUnavailable(
                f"bitcoind RPC at {self.url} unavailable: {_why(exc)}") from exc
        conn = _Conn(reader, writer)
        if self._auth is None and self._cookie_file is not None:
            try:
                self._auth = self._read_cookie(self._cookie_file)
            except BaseException:
                self._discard(conn)
                raise
        return conn

    async def _exchange(self, conn: _Conn, path: bytes, payload: bytes
                        ) -> tuple[int, bytes, bool]:
        """Send one request, read one response; returns (status, body, keep-alive)."""
        assert self._auth is not None
        head = (b"POST " + path + b" HTTP/1.1\r\nHost: " + self._host_header
                + b"\r\nAuthorization: Basic " + self._auth
                + b"\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(payload)).encode() + b"\r\n\r\n")
        try:
            conn.writer.write(head + payload)
            await conn.writer.drain()
            status_line = await conn.reader.readline()
        except (ConnectionResetError, BrokenPipeError) as exc:
            if conn.reused:
                raise _StaleConnection from exc
            raise
        if not status_line:
            if conn.reused:
                raise _StaleConnection
            raise ConnectionResetError("closed before replying")
        version, status = parse_status(status_line)
        headers = await read_headers(conn.reader, f"bitcoind RPC at {self.url}")
        connection = headers.get(b"connection", b"").lower()
        keep = connection != b"close" if version == b"HTTP/1.1" else connection == b"keep-alive"
        if b"content-length" in headers:
            length = headers[b"content-length"]
            if not length.isdigit():
                raise NodeError(f"bitcoind RPC at {self.url}: bad Content-Length {length!r}")
            body = await conn.reader.readexactly(int(length))
        elif headers.get(b"transfer-encoding"):
            raise NodeError(f"bitcoind RPC at {self.url}: unsupported Transfer-Encoding")
        else:
            body = await conn.reader.read()  # length is "until close"
            keep = False
        return status, body, keep

    def _discard(self, conn: _Conn | None) -> None:
        # close() is enough: the loop finishes closing the transport on its next turn.
        if conn is not None:
            conn.writer.close()

    def _read_cookie(self, path: Path) -> bytes:
        # A few bytes from the local disk: a blocking read is cheaper than a thread hop.
        try:
            cookie = path.read_text().strip()
        except FileNotFoundError:
            # bitcoind deletes its cookie on shutdown and writes it at start.
            raise NodeUnavailable(f"bitcoind RPC at {self.url}: cookie file {path} not found "
                                  "(bitcoind not running or still starting?)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise NodeAuthError(f"bitcoind RPC at {self.url}: cookie file {path} rejected or "
                                f"unreadable ({type(exc).__name__})") from None
        if ":" not in cookie:
            raise NodeAuthError(f"bitcoind RPC at {self.url}: cookie file {path} rejected or "
                                "unreadable (not user:password)")
        user, _, password = cookie.partition(":")
        return _basic(user, password)

    def _decode(self, status: int, body: bytes) -> Any:
        """Map an HTTP response to parsed JSON or a node-level exception."""
        if status in (401, 403):
            raise self._auth_error(status)
        if status == 503:
            raise NodeUnavailable(f"bitcoind RPC at {self.url} is overloaded (HTTP 503: "
                                  "work queue full)")
        # RPC errors come as HTTP 500 (404: unknown method or wallet) with a JSON body.
        try:
            return json.loads(body, parse_float=Decimal)
        except ValueError:
            text = body[:200].decode(errors="replace")
            raise NodeError(f"bitcoind RPC at {self.url}: HTTP {status}: {text!r}") from None

    def _auth_error(self, status: int) -> NodeAuthError:
        if status == 403:
            return NodeAuthError(f"bitcoind RPC at {self.url}: HTTP 403 forbidden "
                                 "(is this host allowed by -rpcallowip?)")
        if self._cookie_file is not None:
            return NodeAuthError(f"bitcoind RPC at {self.url}: cookie file "
                                 f"{self._cookie_file} rejected or unreadable")
        return NodeAuthError(f"bitcoind RPC at {self.url}: credentials for user "
                             f"{self._user!r} rejected")


def _result(reply: dict[str, Any], method: str) -> Any:
    """The ``result`` of one JSON-RPC reply object, or its error raised."""
    error = reply.get("error")
    if error:
        code = error.get("code", 0) if isinstance(error, dict) else 0
        message = str(error.get("message", error) if isinstance(error, dict) else error)
        if code == RPC_IN_WARMUP:
            raise NodeWarmingUp(message)
        raise RPCError(int(code), message, method)
    return reply.get("result")


def parse_status(line: bytes) -> tuple[bytes, int]:
    """(HTTP version, status) of a response's status line."""
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise NodeError(f"malformed HTTP status line {line[:80]!r}")
    return parts[0], int(parts[1])


async def read_headers(reader: asyncio.StreamReader, who: str) -> dict[bytes, bytes]:
    """A response's header lines up to the blank one, names lower-cased (also used by
    the indexer's REST reader)."""
    headers: dict[bytes, bytes] = {}
    for _ in range(_MAX_HEADER_LINES):
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            return headers
        if not line:
            raise asyncio.IncompleteReadError(line, None)
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    raise NodeError(f"{who}: too many HTTP header lines")


def _basic(user: str, password: str) -> bytes:
    return base64.b64encode(f"{user}:{password}".encode())


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        # asyncio's strerror is "Connect call failed (...)"; the errno says why.
        return os.strerror(exc.errno).lower()
    return type(exc).__name__


def _dumps(obj: Any) -> str:
    """JSON with ``Decimal`` as an exact number (json.dumps cannot emit raw numbers)."""
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            raise ValueError(f"not a JSON number: {obj}")
        return format(obj, "f")
    if isinstance(obj, dict):
        items = (f"{json.dumps(str(k))}:{_dumps(v)}" for k, v in obj.items())
        return "{" + ",".join(items) + "}"
    if isinstance(obj, list | tuple):
        return "[" + ",".join(_dumps(v) for v in obj) + "]"
    return json.dumps(obj, allow_nan=False)
