"""The control socket's typed messages: wire form, checks, and the one error path,
over a real ZMQ ipc socket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from appliance.control import ControlError, ControlServer, ask, control_request
from appliance.control.messages import (
    Branch,
    IndexerStatus,
    PairingOpen,
    PairingRevoke,
    Revoked,
    TowerStatusReply,
    WalletAdd,
    WalletAdded,
    WalletList,
    WalletSummary,
    WindowOpen,
)

SUMMARY = WalletSummary("ab" * 8, "w", "live", 5, 20, 10, [Branch("wpkh(x/0/*)", 20, 3)],
                        None, [], None)


def test_request_wire_form_is_cmd_and_fields_in_order() -> None:
    req = WalletAdd(["wpkh(x/0/*)"], birthday=3, label="me")
    assert json.dumps({"cmd": req.cmd, **req.to_wire()}) == (
        '{"cmd": "wallet.add", "descriptors": ["wpkh(x/0/*)"], "birthday": 3, '
        '"gap": null, "change_gap": null, "label": "me"}')
    assert WalletAdd.from_wire({"cmd": "wallet.add", **req.to_wire()}) == req


def test_flat_replies_keep_their_wire_form() -> None:
    # wallet.add: "new" first, then the summary's keys in one object (as hearth.wallet.add)
    wire = WalletAdded(True, SUMMARY).to_wire()
    assert list(wire)[:3] == ["new", "id", "label"] and wire["branches"][0]["used"] == 3
    assert WalletAdd.decode_reply(wire) == WalletAdded(True, SUMMARY)
    # tower status: the counters sit next to the other fields
    status = TowerStatusReply(7, True, {"http": 9814}, None, "02ab", {"sweeps": 2})
    assert status.to_wire() == {"height": 7, "live": True, "ports": {"http": 9814},
                                "tip": None, "tower_id": "02ab", "sweeps": 2}
    assert TowerStatusReply.from_wire(status.to_wire()) == status


@pytest.mark.parametrize(("data", "message"), [
    ({}, "descriptors is missing"),
    ({"descriptors": "wpkh(x)"}, "descriptors must be a list"),
    ({"descriptors": [1]}, "descriptors[0] must be a string"),
    ({"descriptors": [], "birthday": "today"}, "birthday must be an integer"),
    ({"descriptors": [], "gap": True}, "gap must be an integer"),
    ([], "must be a JSON object"),
])
def test_a_bad_request_names_the_field(data: object, message: str) -> None:
    with pytest.raises(ControlError, match=message.replace("[", r"\[").replace("]", r"\]")):
        WalletAdd.from_wire(data)


def test_a_reply_without_the_reply_types_fields_is_refused() -> None:
    with pytest.raises(ControlError, match=r"reply\[0\].birthday is missing"):
        WalletList().decode_reply([{"id": "ab", "label": "", "state": "live"}])
    assert WalletList().decode_reply([SUMMARY.to_wire()]) == [SUMMARY]


def test_server_and_ask_round_trip_with_one_error_path(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/run/t.ctl"
    revoked: list[str] = []

    async def revoke(req: PairingRevoke) -> Revoked:
        if not req.key:
            raise ControlError("no single paired client with key ''")
        revoked.append(req.key)
        return Revoked(req.key)

    async def crash(req: PairingOpen) -> WindowOpen:
        raise RuntimeError("a bug")

    async def main() -> None:
        server = ControlServer(endpoint, {PairingRevoke: revoke, PairingOpen: crash})
        serving = asyncio.create_task(server.serve())
        try:
            def client() -> None:
                assert ask(endpoint, PairingRevoke("02ab")) == Revoked("02ab")
                with pytest.raises(ControlError, match="no single paired client"):
                    ask(endpoint, PairingRevoke())
                with pytest.raises(ControlError, match="internal error: RuntimeError"):
                    ask(endpoint, PairingOpen())
                with pytest.raises(ControlError, match="unknown command 'status'"):
                    ask(endpoint, IndexerStatus())
                with pytest.raises(ControlError, match="key must be a string"):
                    control_request(endpoint, "pairing.revoke", key=5)
            await asyncio.to_thread(client)
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
    asyncio.run(main())
    assert revoked == ["02ab"]


def test_ask_says_when_the_service_is_not_running(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="not running"):
        ask(f"ipc://{tmp_path}/none.ctl", WalletList())
