"""First boot: the pairing gate shows no code and redeems no token until the owner has
acknowledged the recovery phrase (a real indexer against a real regtest bitcoind)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.pairing.payload import PairingPayload
from appliance.transport.noise import Keypair
from appliance.usb.phrase import acknowledge
from functional.framework.appliance import IndexerProcess
from functional.framework.node import TestNode
from functional.test_pairing import noise_call

pytestmark = pytest.mark.node


def test_no_pairing_before_the_phrase_is_acknowledged(tmp_path: Path, node: TestNode,
                                                      timeout_factor: float) -> None:
    box = IndexerProcess(tmp_path / "appliance", node, timeout_factor=timeout_factor)
    text = box.config.read_text()
    assert "phrase_gate = false" in text
    box.config.write_text(text.replace("phrase_gate = false", "phrase_gate = true"))
    box.start()
    try:
        shown = box.cli("pairing", "show", check=False)
        assert shown.returncode == 1 and "closed" in shown.stderr
        acknowledge(load_config(box.config))  # what the last button press does
        payload = PairingPayload.decode(box.cli("pairing", "show").stdout.strip())
        phone = Keypair.generate()
        replies = asyncio.run(noise_call(box, phone, {"method": "hearth.pair", "params": {
            "token": payload.token.hex(), "label": "phone"}}))
        assert replies and replies[0]["result"]["paired"] is True, replies
    finally:
        box.stop()
