"""A TEOS client: what a user's Lightning node runs to hand the tower encrypted
appointments (used by the tests and benchmarks; Electrum and CLN's teos plugin speak to
the tower directly).

The tower learns nothing from an appointment until the commitment it names is
broadcast: the locator is half the commitment txid, the blob is the penalty transaction
encrypted with the whole txid. Every answer the tower signs is checked against its key.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from coincurve import PrivateKey

from .crypto import (
    SUBSCRIPTION_INFO_MESSAGE,
    appointment_message,
    appointment_receipt,
    encrypt_blob,
    get_appointment_message,
    locator_of,
    recover_user,
    registration_receipt,
    sign_message,
)

__all__ = ["TeosClient", "TowerRefused"]


class TowerRefused(Exception):
    def __init__(self, status: int, body: Any) -> None:
        message = body.get("error") if isinstance(body, dict) else str(body)
        super().__init__(f"tower answered {status}: {message}")
        self.status = status
        self.body = body


class TeosClient:
    def __init__(self, base_url: str, user_key: PrivateKey, *, tower_id: bytes | None = None,
                 basic_auth: tuple[str, str] | None = None, timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.ssl_context = ssl_context  # for https://: e.g. one trusting the box's certificate
        self.key = user_key
        self.tower_id = tower_id
        self.basic_auth = basic_auth
        self.timeout = timeout

    @property
    def user_id(self) -> bytes:
        return self.key.public_key.format(compressed=True)

    def _post(self, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else b""
        req = urllib.request.Request(self.base_url + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
        if self.basic_auth is not None:
            token = base64.b64encode(":".join(self.basic_auth).encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout,
                                        context=self.ssl_context) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            text = exc.read()
            try:
                return exc.code, json.loads(text)
            except ValueError:
                return exc.code, text.decode(errors="replace")

    def _call(self, path: str, body: dict[str, Any] | None) -> Any:
        status, reply = self._post(path, body)
        if status != 200:
            raise TowerRefused(status, reply)
        return reply

    def _check_tower_signature(self, message: bytes, signature: str) -> None:
        signer = recover_user(message, signature)
        if self.tower_id is None:
            self.tower_id = signer  # first contact pins the tower's key
        elif signer != self.tower_id:
            raise TowerRefused(200, {"error": "the receipt is not signed by the pinned tower key"})

    def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("/ping", None)
        return result

    def register(self) -> dict[str, Any]:
        reply: dict[str, Any] = self._call("/register", {"user_id": self.user_id.hex()})
        receipt = registration_receipt(self.user_id, reply["available_slots"],
                                       reply["subscription_expiry"])
        self._check_tower_signature(receipt, reply["subscription_signature"])
        return reply

    def add_appointment(self, commitment_txid: bytes, penalty_tx: bytes,
                        to_self_delay: int = 144) -> dict[str, Any]:
        """``commitment_txid`` in internal byte order (``bytes.fromhex(display)[::-1]``)."""
        locator = locator_of(commitment_txid)
        blob = encrypt_blob(penalty_tx, commitment_txid)
        signature = sign_message(appointment_message(locator, blob, to_self_delay), self.key)
        reply: dict[str, Any] = self._call("/add_appointment", {
            "appointment": {"locator": locator.hex(), "encrypted_blob": blob.hex(),
                            "to_self_delay": to_self_delay},
            "signature": signature})
        self._check_tower_signature(appointment_receipt(signature, reply["start_block"]),
                                    reply["signature"])
        return reply

    def get_appointment(self, locator: bytes) -> tuple[int, dict[str, Any]]:
        signature = sign_message(get_appointment_message(locator), self.key)
        status, reply = self._post("/get_appointment", {"locator": locator.hex(),
                                                        "signature": signature})
        if status not in (200, 404):
            raise TowerRefused(status, reply)
        return status, reply

    def get_subscription_info(self) -> dict[str, Any]:
        signature = sign_message(SUBSCRIPTION_INFO_MESSAGE, self.key)
        result: dict[str, Any] = self._call("/get_subscription_info", {"signature": signature})
        return result
