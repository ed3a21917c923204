"""The tower's TCP listeners against slow hostile clients (issue 12: "one LAN client can
starve everyone"), with real sockets against the real tower process.

One address (127.0.0.2) opens TLS connections that never finish their handshake (a
ClientHello record announced, then a byte now and then) and plain HTTP connections that
send their headers one byte a second, many more than its share. Meanwhile a well-behaved
TEOS client on another address (127.0.0.1) registers, adds an appointment and reads it
back over HTTPS, and the plain port still answers. Each hostile socket is closed by the
tower (past the per-address cap at once, the others at their handshake or header
deadline) while it is still trickling, and every refusal is counted on the status.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest
from coincurve import PrivateKey

from appliance.config import load_config
from appliance.tower.client import TeosClient
from appliance.tower.crypto import locator_of
from appliance.tower.gate import GateLimits
from functional.framework.appliance import TowerProcess

pytestmark = [pytest.mark.node, pytest.mark.slow]  # about 12 s: the 10 s deadlines

HOSTILE = "127.0.0.2"
PER_PORT = 24  # more than one address's share (GateLimits.per_address) on each port
#: The trickle goes on this long at most: far past the gate's deadlines (10 s), far short
#: of what aiohttp/asyncio alone allow (60 s TLS handshake, 3,630 s keep-alive).
TRICKLE_FOR = 40.0


def hostile_socket(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((HOSTILE, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    return s


def closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


class Trickler(threading.Thread):
    """Sends one byte a second on every socket the tower has not closed yet."""

    def __init__(self, sockets: dict[socket.socket, bytes]) -> None:
        super().__init__(daemon=True)
        self.todo = sockets
        self.closed: dict[socket.socket, float] = {}
        self.started = time.monotonic()

    def run(self) -> None:
        sent = 0
        while self.todo.keys() - self.closed.keys() and time.monotonic() - self.started < TRICKLE_FOR:
            for s, text in self.todo.items():
                if s in self.closed:
                    continue
                if closed_by_peer(s):
                    self.closed[s] = time.monotonic() - self.started
                    continue
                try:
                    s.send(text[sent % len(text):sent % len(text) + 1])
                except OSError:
                    self.closed[s] = time.monotonic() - self.started
            sent += 1
            time.sleep(1.0)


def test_slow_tls_handshakes_and_slow_headers_do_not_starve_a_teos_client(
        tower: TowerProcess) -> None:
    cert, _ = load_config(tower.config).tower_tls_files
    trust = ssl.create_default_context(cafile=str(cert))
    trust.check_hostname = False  # the box's certificate names "localhost", the URL an IP
    refused_before = int(tower.status().get("http_refused", 0))

    # A ClientHello record header announcing 512 bytes, then the rest a byte a second.
    hello = bytes([0x16, 0x03, 0x01, 0x02, 0x00]) + b"\x01" * 512
    headers = (b"POST /add_appointment HTTP/1.1\r\nHost: box\r\nContent-Type: application/json\r\n"
               b"X-Padding: " + b"a" * 400 + b"\r\n\r\n")
    sockets = {hostile_socket(tower.https_port): hello for _ in range(PER_PORT)}
    sockets |= {hostile_socket(tower.http_port): headers for _ in range(PER_PORT)}
    trickler = Trickler(sockets)
    trickler.start()
    try:
        # While the attack holds its share: served over HTTPS and over plain HTTP.
        client = TeosClient(f"https://127.0.0.1:{tower.https_port}", PrivateKey(),
                            basic_auth=(tower.USER, tower.PASSWORD), ssl_context=trust,
                            timeout=20)
        assert client.register()["available_slots"] > 0
        locator_seed = bytes(range(32))
        receipt = client.add_appointment(locator_seed, b"\x02" * 200, to_self_delay=144)
        assert receipt["signature"]
        status, got = client.get_appointment(locator_of(locator_seed))
        assert (status, got["status"]) == (200, "being_watched")
        status, _ = tower.post("/ping", {}, auth=None)
        assert status == 200
        assert trickler.is_alive(), "the attack ended before the client was served"
    finally:
        trickler.join(TRICKLE_FOR + 10)
        for s in sockets:
            s.close()

    still_open = len(sockets) - len(trickler.closed)
    assert still_open == 0, f"{still_open} hostile sockets still held after {TRICKLE_FOR:g} s"
    # The share past the per-address cap was reset at once; the rest waited for a deadline.
    share = GateLimits().per_address
    assert len(trickler.closed) == 2 * PER_PORT
    late = sorted(trickler.closed.values())[-share:]
    print(f"hostile sockets closed after (s): first {min(trickler.closed.values()):.1f}, "
          f"last {max(late):.1f}")
    refused = int(tower.status()["http_refused"]) - refused_before
    assert refused >= 2 * PER_PORT, refused


def test_tower_gate_limits_are_below_what_the_attack_uses() -> None:
    limits = GateLimits()
    assert PER_PORT > limits.per_address
    assert max(limits.handshake_timeout, limits.header_timeout) < TRICKLE_FOR
