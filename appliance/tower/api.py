"""The tower's two request protocols, without HTTP: the HTTP layer (``http.py``) and the
tests both call these.

Electrum (JSON-RPC 2.0 on ``POST /``, what Electrum's ``watchtower_url`` speaks):
``get_ctn(funding_outpoint, funding_address) -> int`` and
``add_sweep_tx(funding_outpoint, ctn, prevout, raw_tx_hex) -> null``.

TEOS (rust-teos's HTTP JSON API): ``/register``, ``/add_appointment``,
``/get_appointment``, ``/get_subscription_info``, ``/ping``; bytes as hex, signatures
zbase32, errors ``{"error": ..., "error_code": ...}`` with rust-teos's codes.

A write that fails is never acknowledged: a full disk is TEOS ``SERVICE_UNAVAILABLE``
(32) with HTTP 507 (another failed write: 503), and JSON-RPC error -32001 (-32002) for
Electrum; the store has already made memory agree with the disk again.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from coincurve import PrivateKey, PublicKey

from ..chain import ChainParseError, hex_str_to_hash, parse_tx
from ..config import TowerSection
from ..durability import DiskFull, WriteFailed
from .crypto import (
    LOCATOR_SIZE,
    SUBSCRIPTION_INFO_MESSAGE,
    SignatureError,
    appointment_message,
    appointment_receipt,
    get_appointment_message,
    recover_user,
    registration_receipt,
    sign_message,
)
from .store import Appointment, TowerStore, User, outpoint, slots_for

__all__ = ["TeosError", "TowerAPI", "TowerLimits"]

# rust-teos error codes (teos-common/src/errors.rs)
MISSING_FIELD = 1
EMPTY_FIELD = 2
WRONG_FIELD_TYPE = 3
WRONG_FIELD_SIZE = 4
WRONG_FIELD_FORMAT = 5
INVALID_REQUEST_FORMAT = 6
INVALID_SIGNATURE_OR_SUBSCRIPTION_ERROR = 7
SERVICE_UNAVAILABLE = 32
APPOINTMENT_FIELD_TOO_BIG = 34
APPOINTMENT_ALREADY_TRIGGERED = 35
APPOINTMENT_NOT_FOUND = 36

# JSON-RPC 2.0 error codes
_PARSE_ERROR = -32700
_INVALID_REQUEST = -32600
_METHOD_NOT_FOUND = -32601
_INVALID_PARAMS = -32602
_TOWER_FULL = -32000  # JSON-RPC's "server error" range
DISK_FULL_RPC = -32001
WRITE_FAILED_RPC = -32002

_OUTPOINT = re.compile(r"^([0-9a-fA-F]{64}):(\d{1,6})$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})*$")
_ADDRESS = re.compile(r"^[0-9A-Za-z]{14,90}$")


class TeosError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "error_code": self.code}


class _ParamError(ValueError):
    pass


class _TowerFull(Exception):
    """A quota is reached: the request was fine, the tower keeps no more."""


@contextmanager
def _teos_storage() -> Iterator[None]:
    """A failed write as rust-teos's "service unavailable", with a status that says why."""
    try:
        yield
    except DiskFull as exc:
        raise TeosError(507, SERVICE_UNAVAILABLE, exc.text) from None
    except WriteFailed as exc:
        raise TeosError(503, SERVICE_UNAVAILABLE, exc.text) from None


_DEFAULTS = TowerSection()


@dataclass(frozen=True)
class TowerLimits:
    """What the API accepts; the defaults are ``[tower]``'s (one home: config.py)."""

    slots: int = _DEFAULTS.slots
    subscription_blocks: int = _DEFAULTS.subscription_blocks
    max_blob_bytes: int = _DEFAULTS.max_blob_bytes
    # Electrum's protocol has no slots: these bound what its credential holders can
    # make the box store (a few hundred bytes each) so the card keeps room for blocks.
    max_channels: int = _DEFAULTS.max_channels
    max_sweeps: int = _DEFAULTS.max_sweeps
    # TEOS renewals add slots (as in rust-teos), so slots alone bound nothing in total.
    max_users: int = _DEFAULTS.max_users
    max_appointments: int = _DEFAULTS.max_appointments

    @classmethod
    def configured(cls, tc: TowerSection) -> TowerLimits:
        return cls(**{f.name: getattr(tc, f.name) for f in dataclasses.fields(cls)})


def parse_outpoint(text: Any, name: str) -> bytes:
    match = _OUTPOINT.match(text) if isinstance(text, str) else None
    if match is None:
        raise _ParamError(f"{name} must be 'txid:index'")
    return outpoint(hex_str_to_hash(match.group(1)), int(match.group(2)))


def _hex_field(obj: dict[str, Any], name: str, *, size: int | None = None,
               max_size: int | None = None) -> bytes:
    if name not in obj:
        raise TeosError(400, MISSING_FIELD, f"missing field `{name}`")
    value = obj[name]
    if not isinstance(value, str):
        raise TeosError(400, WRONG_FIELD_TYPE, f"`{name}` must be a hex string")
    if not value:
        raise TeosError(400, EMPTY_FIELD, f"`{name}` field is empty")
    if not _HEX.match(value):
        raise TeosError(400, WRONG_FIELD_FORMAT, f"`{name}` is not hex")
    data = bytes.fromhex(value)
    if size is not None and len(data) != size:
        raise TeosError(400, WRONG_FIELD_SIZE,
                        f"Wrong `{name}` field size. Expected {size}, received {len(data)}")
    if max_size is not None and len(data) > max_size:
        raise TeosError(400, APPOINTMENT_FIELD_TOO_BIG, f"`{name}` is larger than {max_size} bytes")
    return data


def _str_field(obj: dict[str, Any], name: str) -> str:
    if name not in obj:
        raise TeosError(400, MISSING_FIELD, f"missing field `{name}`")
    value = obj[name]
    if not isinstance(value, str):
        raise TeosError(400, WRONG_FIELD_TYPE, f"`{name}` must be a string")
    if not value:
        raise TeosError(400, EMPTY_FIELD, f"`{name}` field is empty")
    return value


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise TeosError(400, INVALID_REQUEST_FORMAT, "the body is not JSON") from None
    if not isinstance(obj, dict):
        raise TeosError(400, WRONG_FIELD_TYPE, "the body must be a JSON object")
    return obj


class TowerAPI:
    def __init__(self, store: TowerStore, tower_key: PrivateKey, height: Callable[[], int],
                 limits: TowerLimits, on_stored: Callable[[bytes], None] | None = None,
                 on_failed: Callable[[WriteFailed], None] | None = None) -> None:
        #: called with the locator of every stored sweep or appointment (the watcher
        #: checks whether that breach already happened)
        self.on_stored = on_stored
        #: called when a write failed (the service shows it: status, OLED)
        self.on_failed = on_failed
        self.store = store
        self.tower_key = tower_key
        self.height = height
        self.limits = limits

    @property
    def tower_id(self) -> bytes:
        return self.tower_key.public_key.format(compressed=True)

    # --- Electrum -------------------------------------------------------------------------
    def electrum_rpc(self, body: bytes) -> dict[str, Any]:
        """One JSON-RPC 2.0 request -> its response object (never raises)."""
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _rpc_error(None, _PARSE_ERROR, "parse error: the body is not JSON")
        if not isinstance(request, dict):
            return _rpc_error(None, _INVALID_REQUEST, "a request must be a JSON object")
        rid = request.get("id")
        method, params = request.get("method"), request.get("params", [])
        if not isinstance(method, str):
            return _rpc_error(rid, _INVALID_REQUEST, "missing method")
        if not isinstance(params, list):
            return _rpc_error(rid, _INVALID_PARAMS, "params must be a list")
        handlers: dict[str, Callable[..., Any]] = {"get_ctn": self.get_ctn,
                                                   "add_sweep_tx": self.add_sweep_tx}
        handler = handlers.get(method)
        if handler is None:
            return _rpc_error(rid, _METHOD_NOT_FOUND, f"unknown method {method[:40]!r}")
        try:
            result = handler(*params)
        except TypeError:
            return _rpc_error(rid, _INVALID_PARAMS, f"{method}: wrong number of params")
        except _ParamError as exc:
            return _rpc_error(rid, _INVALID_PARAMS, f"{method}: {exc}")
        except _TowerFull as exc:
            return _rpc_error(rid, _TOWER_FULL, f"{method}: {exc}")
        except WriteFailed as exc:
            self._failed(exc)
            code = DISK_FULL_RPC if isinstance(exc, DiskFull) else WRITE_FAILED_RPC
            return _rpc_error(rid, code, f"{method}: not stored: {exc.text}")
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    def _failed(self, exc: WriteFailed) -> None:
        if self.on_failed is not None:
            self.on_failed(exc)

    @contextmanager
    def _teos_write(self) -> Iterator[None]:
        try:
            with _teos_storage():
                yield
        except TeosError as exc:
            if exc.code == SERVICE_UNAVAILABLE and self.store.failed is not None:
                self._failed(self.store.failed)
            raise

    def get_ctn(self, funding_outpoint: Any, funding_address: Any) -> int:
        funding = parse_outpoint(funding_outpoint, "funding_outpoint")
        if not isinstance(funding_address, str) or not _ADDRESS.match(funding_address):
            raise _ParamError("funding_address must be an address")
        self._check_new_channel(funding)
        self.store.register_channel(funding, funding_address)
        return self.store.max_ctn(funding)

    def add_sweep_tx(self, funding_outpoint: Any, ctn: Any, prevout: Any, raw_tx: Any) -> None:
        funding = parse_outpoint(funding_outpoint, "funding_outpoint")
        if not isinstance(ctn, int) or isinstance(ctn, bool) or not 0 <= ctn < 1 << 48:
            raise _ParamError("ctn must be an integer in [0, 2^48)")
        spent = parse_outpoint(prevout, "prevout")
        if not isinstance(raw_tx, str) or not _HEX.match(raw_tx) or not raw_tx:
            raise _ParamError("raw_tx must be a hex string")
        if len(raw_tx) // 2 > self.limits.max_blob_bytes:
            raise _ParamError(f"raw_tx is larger than {self.limits.max_blob_bytes} bytes")
        try:
            tx = parse_tx(bytes.fromhex(raw_tx))
        except ChainParseError as exc:
            raise _ParamError(f"raw_tx is not a transaction: {exc}") from None
        if not any(outpoint(i.prev_hash, i.prev_idx) == spent for i in tx.inputs):
            raise _ParamError("raw_tx does not spend prevout")
        if not any(i.witness or i.script_sig for i in tx.inputs):
            raise _ParamError("raw_tx is not signed")
        if not self.store.has_sweep(funding, ctn, spent):
            self._check_new_channel(funding)
            self._check_quota("sweeps", self.limits.max_sweeps, "tower.max_sweeps")
        self.store.add_sweep(funding, ctn, spent, tx.raw)
        if self.on_stored is not None:
            self.on_stored(spent[:16])

    def _check_quota(self, counter: str, limit: int, setting: str) -> None:
        if self.store.counters.get(counter, 0) >= limit:
            self.store.count_refusal()
            raise _TowerFull(f"the tower is full: {limit} {counter} stored ({setting})")

    def _check_new_channel(self, funding: bytes) -> None:
        if self.store.channel(funding) is None:
            self._check_quota("channels", self.limits.max_channels, "tower.max_channels")

    def _check_teos_quota(self, counter: str, limit: int, setting: str) -> None:
        try:
            self._check_quota(counter, limit, setting)
        except _TowerFull as exc:
            # rust-teos has no "full" code; 7 is the one its clients read as "cannot subscribe".
            raise TeosError(503, INVALID_SIGNATURE_OR_SUBSCRIPTION_ERROR, str(exc)) from None

    # --- TEOS ---------------------------------------------------------------------------------
    def register(self, body: bytes) -> dict[str, Any]:
        with self._teos_write():
            return self._register(body)

    def _register(self, body: bytes) -> dict[str, Any]:
        obj = _json_object(body)
        user_id = _hex_field(obj, "user_id", size=33)
        try:
            PublicKey(user_id)
        except Exception:
            raise TeosError(400, WRONG_FIELD_FORMAT, "`user_id` is not a public key") from None
        height = self.height()
        old = self.store.user(user_id)
        if old is None:
            self._check_teos_quota("users", self.limits.max_users, "tower.max_users")
        user = User(user_id, (old.available_slots if old else 0) + self.limits.slots, height,
                    height + self.limits.subscription_blocks)
        self.store.put_user(user)
        receipt = registration_receipt(user_id, user.available_slots, user.subscription_expiry)
        return {"user_id": user_id.hex(), "available_slots": user.available_slots,
                "subscription_start": user.subscription_start,
                "subscription_expiry": user.subscription_expiry,
                "subscription_signature": sign_message(receipt, self.tower_key)}

    def _user_by_signature(self, message: bytes, signature: str) -> User:
        try:
            user_id = recover_user(message, signature)
        except SignatureError:
            raise TeosError(401, INVALID_SIGNATURE_OR_SUBSCRIPTION_ERROR,
                            "Invalid signature or user not found") from None
        user = self.store.user(user_id)
        if user is None:
            raise TeosError(401, INVALID_SIGNATURE_OR_SUBSCRIPTION_ERROR,
                            "Invalid signature or user not found")
        return user

    def add_appointment(self, body: bytes) -> dict[str, Any]:
        with self._teos_write():
            return self._add_appointment(body)

    def _add_appointment(self, body: bytes) -> dict[str, Any]:
        obj = _json_object(body)
        if "appointment" not in obj:
            raise TeosError(400, MISSING_FIELD, "missing field `appointment`")
        appt = obj["appointment"]
        if not isinstance(appt, dict):
            raise TeosError(400, WRONG_FIELD_TYPE, "`appointment` must be an object")
        locator = _hex_field(appt, "locator", size=LOCATOR_SIZE)
        blob = _hex_field(appt, "encrypted_blob", max_size=self.limits.max_blob_bytes)
        delay = appt.get("to_self_delay")
        if not isinstance(delay, int) or isinstance(delay, bool) or not 0 <= delay < 1 << 32:
            raise TeosError(400, WRONG_FIELD_TYPE, "`to_self_delay` must be a u32")
        signature = _str_field(obj, "signature")
        user = self._user_by_signature(appointment_message(locator, blob, delay), signature)
        height = self.height()
        if user.subscription_expiry < height:
            raise TeosError(401, INVALID_SIGNATURE_OR_SUBSCRIPTION_ERROR, "subscription expired")
        if self._triggered(locator, user.user_id) is not None:
            raise TeosError(400, APPOINTMENT_ALREADY_TRIGGERED,
                            "The provided appointment has already been triggered")
        old = self.store.appointment(locator, user.user_id)
        if old is None:
            self._check_teos_quota("appointments", self.limits.max_appointments,
                                   "tower.max_appointments")
        needed = slots_for(blob) - (slots_for(old.blob) if old else 0)
        if needed > user.available_slots:
            raise TeosError(401, INVALID_SIGNATURE_OR_SUBSCRIPTION_ERROR, "not enough slots available")
        user = User(user.user_id, user.available_slots - needed, user.subscription_start,
                    user.subscription_expiry)
        self.store.put_appointment(Appointment(locator, user.user_id, delay, height, blob), user)
        if self.on_stored is not None:
            self.on_stored(locator)
        receipt = appointment_receipt(signature, height)
        return {"locator": locator.hex(), "start_block": height,
                "signature": sign_message(receipt, self.tower_key),
                "available_slots": user.available_slots,
                "subscription_expiry": user.subscription_expiry}

    def _triggered(self, locator: bytes, user_id: bytes) -> dict[str, Any] | None:
        for _txid, tracker in self.store.trackers_at(locator):
            for penalty in tracker["penalties"]:
                if penalty["source"] == f"teos:{user_id.hex()}":
                    return {"dispute_txid": tracker["breach_txid"], "penalty_txid": penalty["txid"],
                            "penalty_rawtx": penalty["raw"]}
        return None

    def get_appointment(self, body: bytes) -> tuple[int, dict[str, Any]]:
        obj = _json_object(body)
        locator = _hex_field(obj, "locator", size=LOCATOR_SIZE)
        signature = _str_field(obj, "signature")
        user = self._user_by_signature(get_appointment_message(locator), signature)
        tracker = self._triggered(locator, user.user_id)
        if tracker is not None:
            return 200, {"appointment": tracker, "status": "dispute_responded"}
        appt = self.store.appointment(locator, user.user_id)
        if appt is not None:
            return 200, {"appointment": {"locator": locator.hex(), "encrypted_blob": appt.blob.hex(),
                                         "to_self_delay": appt.to_self_delay},
                         "status": "being_watched"}
        return 404, {"locator": locator.hex(), "status": "not_found"}

    def get_subscription_info(self, body: bytes) -> dict[str, Any]:
        obj = _json_object(body)
        signature = _str_field(obj, "signature")
        user = self._user_by_signature(SUBSCRIPTION_INFO_MESSAGE, signature)
        return {"available_slots": user.available_slots,
                "subscription_expiry": user.subscription_expiry,
                "locators": [loc.hex() for loc in self.store.user_locators(user.user_id)]}

    def ping(self) -> dict[str, Any]:
        return {"tower_id": self.tower_id.hex(), "height": self.height()}


def _rpc_error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}
