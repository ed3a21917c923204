"""Fair sharing under hostile LAN clients (issue 12, Why #4 and #5), against the real
indexer and tower processes on loopback: every loop here is bounded in count and time.

* idle sockets that never send ``server.version`` (writing blank lines) and one-byte-a-
  second senders are closed after ``electrum.version_timeout_s``;
* paired Noise clients get a session while unauthenticated ones fill their pool;
* 1 MB ``[1,1,...]`` lines are refused unparsed and leave the indexer's memory alone;
* a 5,000-deep JSON array on the TEOS endpoints is a 400 with a TEOS error code;
* a flood of failed Noise handshakes is counted on the status bus, not logged line by line.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from appliance.pairing.payload import PairingPayload
from appliance.transport.noise import Keypair
from appliance.transport.stream import STREAM_ERRORS, connect
from functional.framework.appliance import ElectrumClient, IndexerProcess, TowerProcess
from functional.framework.util import wait_until

pytestmark = pytest.mark.node


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (reads whatever it said first)."""
    while select.select([sock], [], [], 0)[0]:
        try:
            if not sock.recv(65536):
                return True
        except OSError:
            return True
    return False


def counters(box: IndexerProcess) -> dict[str, Any]:
    """The indexer's counters as the status bus carries them."""
    report = box.status()
    status = report.get("services", {}).get("indexer", {}).get("status") or {}
    result: dict[str, Any] = status.get("counters", {})
    return result


def rss_mib(box: IndexerProcess, field: str) -> int:
    assert box.process is not None
    for line in Path(f"/proc/{box.process.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no {field}")


@pytest.mark.parametrize("box_env", [{"HEARTH_ELECTRUM_VERSION_TIMEOUT_S": "1",
                                      "HEARTH_ELECTRUM_SESSIONS_PER_ADDRESS": "64"}])
def test_connections_without_server_version_are_closed(box: IndexerProcess) -> None:
    """Issue: 100 idle sockets writing a blank line every 30 s held every slot for 11
    minutes; 120 one-byte-a-second connections did the same."""
    idle = [socket.create_connection(("127.0.0.1", box.tcp_port)) for _ in range(20)]
    slow = [socket.create_connection(("127.0.0.1", box.tcp_port)) for _ in range(10)]
    request = json.dumps({"id": 1, "method": "server.version",
                          "params": ["slowloris", "1.4"]}).encode() + b"\n"
    still_open = set(idle + slow)
    try:
        for step in range(60):  # 60 x 0.25 s: four times the deadline, and then some
            for sock in list(still_open):
                if closed_by_server(sock):
                    still_open.discard(sock)
                    continue
                try:
                    sock.send(b"\n" if sock in idle else request[step:step + 1])
                except OSError:
                    still_open.discard(sock)
            if not still_open:
                break
            time.sleep(0.25)
        assert not still_open, f"{len(still_open)} of 30 connections still open after 15 s"
    finally:
        for sock in idle + slow:
            sock.close()
    assert box.status()["indexer"]["electrum"]["version_timeouts"] >= 30
    # A wallet that says who it is is served as before.
    assert box.client().call("server.ping") is None


@pytest.mark.parametrize("box_env", [{"HEARTH_ELECTRUM_MAX_SESSIONS": "4"}])
def test_paired_clients_have_capacity_unauthenticated_ones_cannot_take(
        box: IndexerProcess) -> None:
    """Issue: paired Noise clients shared the TCP clients' cap and were refused 132/132."""
    for _ in range(4):
        box.client()  # four unauthenticated sessions: their pool is full
    extra = ElectrumClient(box.tcp_port, timeout=10)
    with pytest.raises((ConnectionError, OSError)):
        extra.call("server.version", "fifth", "1.4")
    extra.close()

    token = PairingPayload.decode(box.cli("pairing", "show").stdout.strip()).token.hex()
    box_key = bytes.fromhex(box.status()["indexer"]["pairing"]["box_key"])

    async def paired_calls() -> list[Any]:
        stream = await connect("127.0.0.1", box.noise_port, Keypair.generate(), box_key,
                               timeout=10)
        replies: list[Any] = []
        buffer = b""
        try:
            for i, (method, params) in enumerate([
                    ("hearth.pair", {"token": token, "label": "phone"}),
                    ("server.version", ["phone", "1.4"]),
                    ("blockchain.headers.subscribe", [])]):
                await stream.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": method,
                                              "params": params}).encode() + b"\n")
                while b"\n" not in buffer:
                    buffer += await stream.recv(timeout=10)
                line, buffer = buffer.split(b"\n", 1)
                replies.append(json.loads(line))
        except STREAM_ERRORS:
            pass  # refused: the replies so far tell
        finally:
            stream.close()
        return replies

    replies = asyncio.run(paired_calls())
    assert len(replies) == 3, replies
    assert replies[2]["result"]["height"] == box.node.getblockcount()
    assert box.status()["indexer"]["electrum"]["sessions_refused"] >= 1


def test_megabyte_array_lines_are_refused_unparsed(box: IndexerProcess) -> None:
    """Issue: eight connections repeating a 1 MB ``[1,1,...]`` line pushed the indexer
    to 1,690 MB resident, never returned."""
    before = rss_mib(box, "VmRSS")
    line = b"[" + b"1," * 499_998 + b"1]\n"  # just under the 1 MB line limit
    clients = [box.client() for _ in range(8)]
    answers: list[str] = []
    for _ in range(4):
        for c in clients:
            try:
                c.send_raw(line)
                answers.append(str(c.read()["error"]["message"]))
            except (ConnectionError, OSError):
                answers.append("closed")
    peak = rss_mib(box, "VmHWM")
    assert peak - before < 100, f"indexer grew from {before} MiB to a peak of {peak} MiB"
    assert all(a.startswith(("message refused", "too many request bytes", "excessive",
                             "closed")) for a in answers), answers[:4]
    assert "closed" in answers  # one refusal closes the address's other sessions too
    assert box.status()["indexer"]["electrum"]["requests_refused"] >= 1
    # The address is kept out for a while; another one is served as before.
    again = ElectrumClient(box.tcp_port, timeout=10)
    try:
        with pytest.raises((ConnectionError, OSError)):
            again.call("server.version", "again", "1.4")
    finally:
        again.close()
    with socket.create_connection(("127.0.0.1", box.tcp_port), timeout=10,
                                  source_address=("127.0.0.3", 0)) as other, \
            other.makefile("rwb") as stream:
        stream.write(b'{"jsonrpc": "2.0", "id": 1, "method": "server.version", '
                     b'"params": ["other", "1.4"]}\n')
        stream.flush()
        assert json.loads(stream.readline())["result"][1] == "1.4"


def test_deep_json_on_the_tower_is_a_clean_400(tower: TowerProcess) -> None:
    """Issue: a 5,000-deep array on the unauthenticated TEOS endpoints gave HTTP 500 and
    a traceback per request."""
    deep = b"[" * 5000 + b"]" * 5000
    for path in ("/add_appointment", "/get_appointment", "/get_subscription_info",
                 "/register"):
        status, reply = tower.post(path, deep)
        assert status == 400, (path, status, reply)
        assert reply["error_code"] == 6 and "nested deeper" in reply["error"], reply
    status, reply = tower.post("/", deep)
    assert status == 400 and reply["error"]["code"] == -32600, reply
    wide = b"[" + b"0," * 60_000 + b"0]"  # over the body limit too: 413, same shape
    status, reply = tower.post("/add_appointment", wide)
    assert status == 413 and reply["error_code"] == 6, (status, reply)
    assert "Traceback" not in tower.log_text(since_start=True)
    wait_until(lambda: tower.status().get("http_refused", 0) >= 6)


def test_failed_handshake_flood_is_counted_not_logged(box: IndexerProcess) -> None:
    """Issue: each failed Noise handshake wrote an INFO line; a flood rewrote the 3 x
    5 MB logs within a minute."""
    flood = 200
    for start in range(0, flood, 8):  # 8 at a time: the per-address handshake limit
        socks = [socket.create_connection(("127.0.0.1", box.noise_port))
                 for _ in range(min(8, flood - start))]
        for sock in socks:
            sock.sendall(b"\x00" * 50)  # act one of the right size, wrong version
        for sock in socks:
            sock.settimeout(10)
            try:
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass
            sock.close()
    lines = [ln for ln in box.log_text(since_start=True).splitlines() if "noise peer" in ln]
    assert len(lines) <= 10, f"{len(lines)} log lines for {flood} failed handshakes"
    wait_until(lambda: counters(box).get("handshakes_failed", 0) >= flood, timeout=30)
