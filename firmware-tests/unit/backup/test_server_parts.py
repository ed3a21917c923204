"""The pieces of the backup server that need no socket: the paired-key file and framing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from appliance.backup.server import PairedKeys
from appliance.backup.wire import MAX_HEADER, WireError, decode_header, encode_header
from appliance.pairing.store import Whitelist


def test_paired_keys_follow_the_pairing_store(tmp_path: Path) -> None:
    path = tmp_path / "paired-clients.json"
    keys = PairedKeys(path)
    assert b"\x02" * 33 not in keys  # no file yet: nobody
    store = Whitelist(path)
    store.add(b"\x02" * 33, "phone")
    assert b"\x02" * 33 in keys
    store.add(b"\x03" * 33, "laptop")
    store.revoke(b"\x02" * 33)
    assert b"\x02" * 33 not in keys and b"\x03" * 33 in keys
    # a half-written or corrupt file keeps the last good list instead of locking everyone out
    path.write_text("[{")
    os.utime(path, ns=(1, 1))
    assert b"\x03" * 33 in keys
    path.write_text(json.dumps([{"pubkey": "04" * 33, "label": "", "paired_at": 0}]))
    assert b"\x04" * 33 in keys and b"\x03" * 33 not in keys
    path.unlink()
    assert b"\x04" * 33 not in keys


@pytest.mark.parametrize("raw", [b"\xff", b"null", b"[]", b'"op"', b'{"size": -1}', b'{"size": "1"}',
                                 b'{"size": true}', b"{" + b" " * MAX_HEADER + b"}"])
def test_bad_headers_are_wire_errors(raw: bytes) -> None:
    with pytest.raises(WireError):
        decode_header(raw)


def test_header_round_trip_and_limit() -> None:
    assert decode_header(encode_header({"op": "append", "size": 3})) == {"op": "append", "size": 3}
    with pytest.raises(WireError):
        encode_header({"op": "x" * MAX_HEADER})
