"""The Electrum methods: one table per negotiated protocol version, one handler per wire name.

``handlers_for(version)`` returns ``{wire name: Method}``; a handler is a plain coroutine
``handler(ctx, *params)`` named after its wire name (``blockchain.scripthash.get_history``
-> ``blockchain_scripthash_get_history``). Handlers validate their own parameters, charge
their cost to the session, call the :class:`ElectrumBackend` and shape the result as
``spesmilo/electrum-protocol`` ``docs/protocol-methods.rst`` says; everything about the
connection (subscriptions, limits, I/O) is behind :class:`HandlerContext`.

Byte order: txids, block hashes and merkle nodes are internal-order bytes in the backend
and reversed hex on the wire. Scripthashes follow ``appliance.chain.script_to_scripthash``
(the bytes are already sha256(script) reversed): wire hex is simply ``scripthash.hex()``.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from appliance import __version__
from appliance.chain.encoding import hash_to_hex_str, hex_str_to_hash
from appliance.chain.tx import parse_tx

from .backend import ElectrumBackend, HistoryItem
from .errors import INVALID_PARAMS, RPCError

__all__ = [
    "KNOWN_VERSIONS",
    "MAX_HEADERS",
    "MAX_PACKAGE_TXS",
    "PROTOCOL_MAX",
    "PROTOCOL_MIN",
    "HandlerContext",
    "Method",
    "ServerInfo",
    "canonical_history",
    "handlers_for",
    "negotiate_version",
    "parse_version",
    "scripthash_status",
    "status_of",
    "version_string",
]

PROTOCOL_MIN: tuple[int, ...] = (1, 4)
PROTOCOL_MAX: tuple[int, ...] = (1, 6)
#: Versions this server can speak. 1.4.1 only changes AuxPoW chains, 1.4.3 only adds a
#: Namecoin method, and 1.5 was skipped: a request for those gets the nearest lower one.
KNOWN_VERSIONS: tuple[tuple[int, ...], ...] = ((1, 4), (1, 4, 1), (1, 4, 2), (1, 6))
#: Headers per blockchain.block.headers call: one difficulty period, as the spec suggests.
MAX_HEADERS = 2016
#: bitcoind's submitpackage limit.
MAX_PACKAGE_TXS = 25

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_VERSION = re.compile(r"\d{1,4}(?:\.\d{1,4}){1,3}")
_FEE_MODES = ("CONSERVATIVE", "ECONOMICAL")


@dataclass(frozen=True)
class ServerInfo:
    """What the operator configures about the server (shown by ``server.*`` methods)."""

    server_version: str = f"Hearth {__version__}"
    banner: str = f"Welcome to Hearth {__version__}."
    donation_address: str = ""
    #: ``server.features`` "hosts": {host: {"tcp_port": int|None, "ssl_port": int|None}}
    hosts: Mapping[str, Mapping[str, int | None]] = field(default_factory=dict)
    #: History pruning limit; None because the index keeps full history for its scripts.
    pruning: int | None = None


class HandlerContext(Protocol):
    """The session as the handlers see it (``ElectrumSession`` implements it)."""

    @property
    def backend(self) -> ElectrumBackend: ...

    @property
    def info(self) -> ServerInfo: ...

    @property
    def protocol(self) -> tuple[int, ...] | None:
        """Negotiated version; None until ``server.version`` succeeded."""

    def bump_cost(self, cost: float) -> None: ...

    def set_protocol(self, client_name: str, version: tuple[int, ...]) -> None: ...

    async def query_script(self, scripthash: bytes) -> bool:
        """Tell the backend a client asked; False (and counted) if the script is unknown."""

    def subscribe_headers(self, height: int, header: bytes) -> None: ...

    def begin_subscription(self, scripthash: bytes) -> None:
        """Register before computing the status, so no change can slip in between."""

    def end_subscription(self, scripthash: bytes, status: str | None) -> str | None:
        """Record the status answered; returns a fresher one if a change came meanwhile."""

    def abort_subscription(self, scripthash: bytes) -> None: ...

    def unsubscribe(self, scripthash: bytes) -> bool: ...

    def watch_unknown(self, scripthash: bytes) -> None:
        """Ask the backend to watch a script no wallet owns, within the session's limit."""


Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Method:
    """A handler plus what its signature accepts, worked out once per table."""

    name: str
    func: Handler
    names: tuple[str, ...]
    required: int
    var_positional: bool
    var_keyword: bool

    @classmethod
    def of(cls, name: str, func: Handler, *, drop: tuple[str, ...] = ()) -> Method:
        """``drop`` hides optional parameters a protocol version does not have."""
        params = list(inspect.signature(func).parameters.values())[1:]  # skip ctx
        kinds = inspect.Parameter
        names = tuple(p.name for p in params
                      if p.kind is kinds.POSITIONAL_OR_KEYWORD and p.name not in drop)
        required = sum(1 for p in params
                       if p.kind is kinds.POSITIONAL_OR_KEYWORD and p.default is p.empty)
        return cls(name, func, names, required,
                   any(p.kind is kinds.VAR_POSITIONAL for p in params),
                   any(p.kind is kinds.VAR_KEYWORD for p in params))

    def bind(self, params: list[Any] | dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments for ``func``, or RPCError(INVALID_PARAMS)."""
        if isinstance(params, list):
            most = len(self.names)
            if len(params) < self.required or (len(params) > most and not self.var_positional):
                want = (f"{self.required}" if self.required == most else
                        f"{self.required} to {most}")
                raise RPCError.invalid_params(
                    f"{self.name} takes {want} params, got {len(params)}")
            return params, {}
        for key in params:
            if key not in self.names and not self.var_keyword:
                raise RPCError.invalid_params(f"{self.name} has no param {_echo(key)}")
        for key in self.names[:self.required]:
            if key not in params:
                raise RPCError.invalid_params(f"{self.name} is missing param {key!r}")
        # Unknown names are only tolerated (server.version), never passed on.
        return [], {k: v for k, v in params.items() if k in self.names}


def _echo(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


# --- parameter checks ---------------------------------------------------------------


def _non_negative(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RPCError.invalid_params(f"{name} must be a non-negative integer")
    return int(value)


def _boolean(value: Any, name: str) -> bool:
    # ElectrumX also accepts 0 and 1 here; clients send true/false.
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise RPCError.invalid_params(f"{name} must be a boolean")


def _hash32(value: Any, name: str) -> bytes:
    """A 64-hex-char display-order hash -> internal-order bytes."""
    return hex_str_to_hash(_hex64(value, name))


def _scripthash(value: Any) -> bytes:
    """Scripthash bytes as the index keys them: the wire hex, decoded (no reversal)."""
    return bytes.fromhex(_hex64(value, "scripthash"))


def _hex64(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise RPCError.invalid_params(f"{name} must be 64 hex characters")
    return value


def _raw_hex(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise RPCError.invalid_params(f"{name} must be a non-empty hex string")
    return bytes.fromhex(value)


# --- versions -----------------------------------------------------------------------


def parse_version(text: Any) -> tuple[int, ...]:
    """``"1.4.2"`` -> ``(1, 4, 2)``; trailing zeros dropped so "1.4.0" == "1.4"."""
    if not isinstance(text, str) or not _VERSION.fullmatch(text):
        raise ValueError(f"not a protocol version: {_echo(text)}")
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 2 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def version_string(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


def negotiate_version(requested: Any) -> tuple[int, ...]:
    """The version to speak for ``server.version``'s *protocol_version* argument.

    Per the spec: ``min(client max, server max)``, refused when below
    ``max(client min, server min)``. Every failure disconnects.
    """
    try:
        if requested is None:  # the spec's default, "1.4"
            client_min = client_max = PROTOCOL_MIN
        elif isinstance(requested, str):
            client_min = client_max = parse_version(requested)
        elif isinstance(requested, list) and len(requested) == 2:
            client_min, client_max = parse_version(requested[0]), parse_version(requested[1])
        else:
            raise ValueError
    except ValueError:
        raise RPCError(INVALID_PARAMS, "protocol_version must be a version string or "
                       f"[min, max]; got {_echo(requested)}", disconnect=True) from None
    ceiling = min(client_max, PROTOCOL_MAX)
    usable = [v for v in KNOWN_VERSIONS if v <= ceiling]
    if not usable or usable[-1] < max(client_min, PROTOCOL_MIN):
        raise RPCError.bad_request(f"unsupported protocol version: {_echo(requested)}; "
                                   f"this server speaks {version_string(PROTOCOL_MIN)} to "
                                   f"{version_string(PROTOCOL_MAX)}", disconnect=True)
    return usable[-1]


# --- scripthash status ----------------------------------------------------------------


def _mempool_order(item: HistoryItem) -> tuple[int, bytes]:
    # (-height, txid as display hex): reversed bytes sort like their hex.
    return (-item.height, item.txid[::-1])


def canonical_history(items: Iterable[HistoryItem]) -> list[HistoryItem]:
    """Confirmed entries as given (block order), then mempool entries in the 1.6 order.

    The backend already promises this order; re-sorting the (short) mempool tail is
    cheap and keeps ``get_history``, ``get_mempool`` and the status in agreement.
    """
    confirmed: list[HistoryItem] = []
    mempool: list[HistoryItem] = []
    for item in items:
        (confirmed if item.height > 0 else mempool).append(item)
    mempool.sort(key=_mempool_order)
    return confirmed + mempool


def status_of(items: Iterable[HistoryItem]) -> str | None:
    """The spec's status: sha256 of ``"tx_hash:height:"`` for each tx, None if none."""
    text = "".join(f"{hash_to_hex_str(i.txid)}:{i.height}:" for i in canonical_history(items))
    return hashlib.sha256(text.encode()).hexdigest() if text else None


async def scripthash_status(backend: ElectrumBackend, scripthash: bytes) -> str | None:
    """Status as answered to clients: unknown scripts always look unused."""
    if not backend.is_watched(scripthash):
        return None
    return status_of(await backend.history(scripthash))


def _history_json(items: Iterable[HistoryItem]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in canonical_history(items):
        entry: dict[str, Any] = {"tx_hash": hash_to_hex_str(item.txid), "height": item.height}
        if item.height <= 0:
            # Electrum >= 4.0.1 rejects a mempool entry without an integer fee.
            entry["fee"] = item.fee if item.fee is not None else 0
        out.append(entry)
    return out


# --- server.* -----------------------------------------------------------------------


async def server_version(ctx: HandlerContext, client_name: Any = "",
                         protocol_version: Any = None, *_extra: Any,
                         **_extra_named: Any) -> list[str]:
    # 1.6: extra arguments must be tolerated and ignored, for future extensions.
    ctx.bump_cost(0.5)
    if ctx.protocol is not None:
        raise RPCError.bad_request("server.version already sent")
    version = negotiate_version(protocol_version)
    ctx.set_protocol(str(client_name)[:100], version)
    return [ctx.info.server_version, version_string(version)]


async def server_features(ctx: HandlerContext) -> dict[str, Any]:
    ctx.bump_cost(0.2)
    info = ctx.info
    return {
        "hosts": {host: dict(ports) for host, ports in info.hosts.items()},
        "genesis_hash": hash_to_hex_str(ctx.backend.genesis_hash),
        "hash_function": "sha256",
        "server_version": info.server_version,
        "protocol_min": version_string(PROTOCOL_MIN),
        "protocol_max": version_string(PROTOCOL_MAX),
        "pruning": info.pruning,
    }


async def server_banner(ctx: HandlerContext) -> str:
    ctx.bump_cost(0.2)
    return ctx.info.banner


async def server_donation_address(ctx: HandlerContext) -> str:
    ctx.bump_cost(0.1)
    return ctx.info.donation_address


async def server_peers_subscribe(ctx: HandlerContext) -> list[Any]:
    # A home server announces no peers (and sends no notifications for this method).
    ctx.bump_cost(0.1)
    return []


async def server_add_peer(ctx: HandlerContext, features: Any) -> bool:
    ctx.bump_cost(1.0)
    return False


async def server_ping(ctx: HandlerContext) -> None:
    ctx.bump_cost(0.1)
    return None


# --- blockchain headers and fees ---------------------------------------------------


async def _header_proof(ctx: HandlerContext, height: int, cp_height: int) -> dict[str, Any]:
    if height > cp_height:
        raise RPCError.bad_request(f"header height {height} must be <= cp_height {cp_height}")
    tip_height = ctx.backend.tip()[0]
    if cp_height > tip_height:
        raise RPCError.bad_request(f"cp_height {cp_height} must be <= tip height {tip_height}")
    branch, root = await ctx.backend.header_branch(height, cp_height)
    return {"branch": [hash_to_hex_str(h) for h in branch], "root": hash_to_hex_str(root)}


async def blockchain_headers_subscribe(ctx: HandlerContext) -> dict[str, Any]:
    ctx.bump_cost(0.2)
    height, header = ctx.backend.tip()
    ctx.subscribe_headers(height, header)
    return {"height": height, "hex": header.hex()}


async def blockchain_block_header(ctx: HandlerContext, height: Any,
                                  cp_height: Any = 0) -> str | dict[str, Any]:
    height = _non_negative(height, "height")
    cp_height = _non_negative(cp_height, "cp_height")
    ctx.bump_cost(1.25 if cp_height else 0.25)
    proof = await _header_proof(ctx, height, cp_height) if cp_height else None
    headers = await ctx.backend.headers(height, 1)
    if not headers:
        raise RPCError.bad_request(f"height {height} out of range")
    if proof is None:
        return headers[0].hex()
    return {"branch": proof["branch"], "header": headers[0].hex(), "root": proof["root"]}


async def blockchain_block_headers(ctx: HandlerContext, start_height: Any, count: Any,
                                   cp_height: Any = 0) -> dict[str, Any]:
    start_height = _non_negative(start_height, "start_height")
    count = min(_non_negative(count, "count"), MAX_HEADERS)
    cp_height = _non_negative(cp_height, "cp_height")
    ctx.bump_cost(0.25 + count / 50)
    headers = await ctx.backend.headers(start_height, count) if count else []
    headers = headers[:count]
    result: dict[str, Any] = {"count": len(headers), "max": MAX_HEADERS}
    # 1.6 lists the headers; before, they came as one concatenated hex string.
    if (ctx.protocol or PROTOCOL_MIN) >= (1, 6):
        result["headers"] = [h.hex() for h in headers]
    else:
        result["hex"] = b"".join(headers).hex()
    if headers and cp_height:
        ctx.bump_cost(1.0)
        # The proof is for the last header returned; prev_hash links prove the rest.
        result.update(await _header_proof(ctx, start_height + len(headers) - 1, cp_height))
    return result


async def blockchain_estimatefee(ctx: HandlerContext, number: Any,
                                 mode: Any = None) -> float | int:
    number = _non_negative(number, "number")
    if mode is not None:
        if not isinstance(mode, str) or mode.upper() not in _FEE_MODES:
            raise RPCError.invalid_params(f"mode must be one of {', '.join(_FEE_MODES)}")
        mode = mode.upper()
    ctx.bump_cost(1.0)
    fee = await ctx.backend.estimate_fee(number, mode)
    # The spec answers "no estimate" with the integer -1.
    return -1 if fee < 0 else fee


async def blockchain_relayfee(ctx: HandlerContext) -> float:
    ctx.bump_cost(1.0)
    return await ctx.backend.relay_fee()


# --- blockchain.scripthash.* ---------------------------------------------------------


async def _script(ctx: HandlerContext, scripthash: Any) -> tuple[bytes, bool]:
    sh = _scripthash(scripthash)
    return sh, await ctx.query_script(sh)


async def blockchain_scripthash_get_balance(ctx: HandlerContext,
                                            scripthash: Any) -> dict[str, int]:
    sh, watched = await _script(ctx, scripthash)
    ctx.bump_cost(1.0)
    confirmed, unconfirmed = await ctx.backend.balance(sh) if watched else (0, 0)
    return {"confirmed": confirmed, "unconfirmed": unconfirmed}


async def blockchain_scripthash_get_history(ctx: HandlerContext,
                                            scripthash: Any) -> list[dict[str, Any]]:
    sh, watched = await _script(ctx, scripthash)
    items = await ctx.backend.history(sh) if watched else []
    ctx.bump_cost(1.0 + len(items) / 50)
    return _history_json(items)


async def blockchain_scripthash_get_mempool(ctx: HandlerContext,
                                            scripthash: Any) -> list[dict[str, Any]]:
    sh, watched = await _script(ctx, scripthash)
    items = await ctx.backend.mempool(sh) if watched else []
    ctx.bump_cost(1.0 + len(items) / 50)
    return _history_json(i for i in items if i.height <= 0)


async def blockchain_scripthash_listunspent(ctx: HandlerContext,
                                            scripthash: Any) -> list[dict[str, Any]]:
    sh, watched = await _script(ctx, scripthash)
    utxos = await ctx.backend.unspent(sh) if watched else []
    ctx.bump_cost(1.0 + len(utxos) / 50)
    return [{"tx_hash": hash_to_hex_str(u.txid), "tx_pos": u.vout, "height": u.height,
             "value": u.value} for u in utxos]


async def blockchain_scripthash_subscribe(ctx: HandlerContext, scripthash: Any) -> str | None:
    sh, watched = await _script(ctx, scripthash)
    ctx.bump_cost(0.5)
    ctx.begin_subscription(sh)
    try:
        status = await scripthash_status(ctx.backend, sh) if watched else None
    except BaseException:
        ctx.abort_subscription(sh)
        raise
    status = ctx.end_subscription(sh, status)
    if not watched:
        # Answered like any unknown script (nothing tells watched from not); what
        # happens to it from now on is notified as for a wallet's script.
        ctx.watch_unknown(sh)
    return status


async def blockchain_scripthash_unsubscribe(ctx: HandlerContext, scripthash: Any) -> bool:
    sh = _scripthash(scripthash)
    ctx.bump_cost(0.1)
    return ctx.unsubscribe(sh)


# --- blockchain.transaction.* -----------------------------------------------------------


async def blockchain_transaction_get(ctx: HandlerContext, tx_hash: Any,
                                     verbose: Any = False) -> str | dict[str, Any]:
    txid = _hash32(tx_hash, "tx_hash")
    if _boolean(verbose, "verbose"):
        ctx.bump_cost(1.5)
        return await ctx.backend.transaction_verbose(txid)
    ctx.bump_cost(1.0)
    return (await ctx.backend.transaction(txid)).hex()


async def blockchain_transaction_get_merkle(ctx: HandlerContext, tx_hash: Any,
                                            height: Any) -> dict[str, Any]:
    txid = _hash32(tx_hash, "tx_hash")
    height = _non_negative(height, "height")
    ctx.bump_cost(1.0)
    proof = await ctx.backend.merkle_proof(txid, height)
    return {"block_height": proof.block_height,
            "merkle": [hash_to_hex_str(h) for h in proof.branch], "pos": proof.pos}


async def blockchain_transaction_id_from_pos(ctx: HandlerContext, height: Any, tx_pos: Any,
                                             merkle: Any = False) -> str | dict[str, Any]:
    height = _non_negative(height, "height")
    tx_pos = _non_negative(tx_pos, "tx_pos")
    want_merkle = _boolean(merkle, "merkle")
    ctx.bump_cost(1.0)
    txid, branch = await ctx.backend.id_from_pos(height, tx_pos)
    if not want_merkle:
        return hash_to_hex_str(txid)
    return {"tx_hash": hash_to_hex_str(txid), "merkle": [hash_to_hex_str(h) for h in branch]}


async def blockchain_transaction_broadcast(ctx: HandlerContext, raw_tx: Any) -> str:
    raw = _raw_hex(raw_tx, "raw_tx")
    ctx.bump_cost(1.0 + len(raw) / 2500)
    return hash_to_hex_str(await ctx.backend.broadcast(raw))


async def blockchain_transaction_broadcast_package(ctx: HandlerContext, raw_txs: Any,
                                                   verbose: Any = False) -> dict[str, Any]:
    if not isinstance(raw_txs, list) or not 0 < len(raw_txs) <= MAX_PACKAGE_TXS:
        raise RPCError.invalid_params(
            f"raw_txs must be a list of 1 to {MAX_PACKAGE_TXS} hex transactions")
    raws = [_raw_hex(tx, "raw_txs item") for tx in raw_txs]
    want_verbose = _boolean(verbose, "verbose")
    try:
        for raw in raws:
            parse_tx(raw)
    except ValueError:
        raise RPCError.invalid_params("raw_txs item is not a transaction") from None
    ctx.bump_cost(1.0 + sum(len(r) for r in raws) / 2500)
    result = await ctx.backend.broadcast_package(raws)
    if want_verbose:
        return result
    # The stable form: txids (never wtxids) of the transactions that were not accepted.
    errors = [{"txid": str(r.get("txid")), "error": str(r["error"])}
              for r in dict(result.get("tx-results", {})).values() if r.get("error")]
    if result.get("package_msg") == "success" and not errors:
        return {"success": True}
    if not errors:
        errors = [{"txid": hash_to_hex_str(parse_tx(raws[-1]).txid),
                   "error": str(result.get("package_msg", "rejected"))}]
    return {"success": False, "errors": errors}


# --- mempool.* ---------------------------------------------------------------------------


async def mempool_get_fee_histogram(ctx: HandlerContext) -> list[list[float | int]]:
    ctx.bump_cost(1.0)
    return [[fee, vsize] for fee, vsize in await ctx.backend.fee_histogram()]


async def mempool_get_info(ctx: HandlerContext) -> dict[str, Any]:
    ctx.bump_cost(1.0)
    return dict(await ctx.backend.mempool_info())


# --- the table -------------------------------------------------------------------------


def handlers_for(version: tuple[int, ...]) -> dict[str, Method]:
    """The methods a session speaking ``version`` may call (ElectrumX-style gating)."""
    if not PROTOCOL_MIN <= version <= PROTOCOL_MAX:
        raise ValueError(f"unsupported protocol version {version!r}")
    table: dict[str, tuple[Handler, tuple[str, ...]]] = {
        "server.version": (server_version, ()),
        "server.features": (server_features, ()),
        "server.banner": (server_banner, ()),
        "server.donation_address": (server_donation_address, ()),
        "server.peers.subscribe": (server_peers_subscribe, ()),
        "server.add_peer": (server_add_peer, ()),
        "server.ping": (server_ping, ()),
        "blockchain.headers.subscribe": (blockchain_headers_subscribe, ()),
        "blockchain.block.header": (blockchain_block_header, ()),
        "blockchain.block.headers": (blockchain_block_headers, ()),
        "blockchain.estimatefee": (blockchain_estimatefee, ()),
        "blockchain.scripthash.get_balance": (blockchain_scripthash_get_balance, ()),
        "blockchain.scripthash.get_history": (blockchain_scripthash_get_history, ()),
        "blockchain.scripthash.get_mempool": (blockchain_scripthash_get_mempool, ()),
        "blockchain.scripthash.listunspent": (blockchain_scripthash_listunspent, ()),
        "blockchain.scripthash.subscribe": (blockchain_scripthash_subscribe, ()),
        "blockchain.transaction.get": (blockchain_transaction_get, ()),
        "blockchain.transaction.get_merkle": (blockchain_transaction_get_merkle, ()),
        "blockchain.transaction.id_from_pos": (blockchain_transaction_id_from_pos, ()),
        "blockchain.transaction.broadcast": (blockchain_transaction_broadcast, ()),
        "mempool.get_fee_histogram": (mempool_get_fee_histogram, ()),
    }
    if version >= (1, 4, 2):
        table["blockchain.scripthash.unsubscribe"] = (blockchain_scripthash_unsubscribe, ())
    if version >= (1, 6):
        table["blockchain.transaction.broadcast_package"] = (
            blockchain_transaction_broadcast_package, ())
        table["mempool.get_info"] = (mempool_get_info, ())
    else:
        table["blockchain.relayfee"] = (blockchain_relayfee, ())  # removed in 1.6
        table["blockchain.estimatefee"] = (blockchain_estimatefee, ("mode",))  # 1.6 adds mode
    return {name: Method.of(name, func, drop=drop) for name, (func, drop) in table.items()}
