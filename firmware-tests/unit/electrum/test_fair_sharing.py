"""Fair sharing on a real server on loopback: activity, deadlines, pools, bytes in flight."""

from __future__ import annotations

import asyncio

from appliance.electrum.admission import Admission, FairShare
from appliance.electrum.server import SessionManager
from appliance.electrum.session import SessionLimits

from .fakes import FakeBackend
from .util import Client, run, serving


async def gone(client: Client) -> bool:
    """Whether the server closed the connection (reset counts: the test wrote into it)."""
    try:
        async with asyncio.timeout(2):
            while await client.reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def test_Admission_keeps_the_paired_pool_apart() -> None:
    admission = Admission(FairShare(max_sessions=2, paired_sessions=1, per_address=5))
    a = admission.open("10.0.0.2", paired=False)
    b = admission.open("10.0.0.3", paired=False)
    assert a is not None and b is not None
    assert admission.open("10.0.0.4", paired=False) is None  # unauthenticated pool full
    paired = admission.open("10.0.0.4", paired=True)
    assert paired is not None  # the paired pool is untouched
    assert admission.open("10.0.0.5", paired=True) is None
    a.close()
    a.close()  # idempotent
    assert admission.open("10.0.0.4", paired=False) is not None


def test_Admission_limits_sessions_and_bytes_per_address() -> None:
    admission = Admission(FairShare(per_address=2, address_inflight=1000, total_inflight=1500))
    t1, t2 = admission.open("10.0.0.2", False), admission.open("10.0.0.2", False)
    assert t1 is not None and t2 is not None
    assert admission.open("10.0.0.2", False) is None
    assert admission.refusal("10.0.0.2", False) == "2 sessions open from this address"
    assert t1.hold(600) and not t2.hold(500)  # 1,100 bytes from one address: refused
    other = admission.open("10.0.0.3", False)
    assert other is not None and other.hold(900) and admission.inflight == 1500
    assert not other.hold(1)  # the total budget
    paired = admission.open("10.0.0.3", True)
    assert paired is not None and paired.hold(10_000)  # paired clients are not charged
    t1.release(600)
    assert t2.hold(500)
    t2.close()
    other.close()
    assert admission.inflight == 0


def test_blank_lines_are_not_activity() -> None:
    """A negotiated client that only sends blank lines is idle, and is closed."""
    async def main() -> None:
        async with serving(limits=SessionLimits(idle_timeout=0.3)) as h:
            client = await h.connect()
            for _ in range(40):  # 2 s of blank lines, seven idle timeouts
                try:
                    await client.send_raw(b"\r\n")
                except ConnectionError:
                    break
                if client.reader.at_eof():
                    break
                await asyncio.sleep(0.05)
            assert await gone(client)
    run(main())


def test_a_connection_must_send_server_version_in_time() -> None:
    async def main() -> None:
        async with serving(limits=SessionLimits(version_timeout=0.2)) as h:
            silent = await h.connect(negotiate=False)
            reply = await silent.recv()
            assert reply["error"]["message"] == "use server.version to identify client"
            assert await gone(silent)
            assert h.manager.counters.version_timeouts == 1
            wallet = await h.connect()  # negotiates at once: stays
            await asyncio.sleep(0.4)
            assert await wallet.request("server.ping") is None
    run(main())


def test_a_line_must_end_in_time() -> None:
    async def main() -> None:
        async with serving(limits=SessionLimits(line_timeout=0.3)) as h:
            client = await h.connect()
            for byte in b'{"id"':  # slowloris: a byte every 50 ms, then nothing
                await client.send_raw(bytes([byte]))
                await asyncio.sleep(0.05)
            reply = await client.recv()
            assert "unfinished after 0.3 s" in reply["error"]["message"]
            assert await gone(client)
            assert h.manager.counters.requests_refused == 1
    run(main())


def test_a_full_pool_replaces_a_connection_that_never_said_who_it_is() -> None:
    async def main() -> None:
        async with serving(max_sessions=2) as h:
            lurker = await h.connect(negotiate=False)
            wallet = await h.connect()
            await asyncio.sleep(1.1)  # older than the eviction grace
            newcomer = await h.connect()
            assert await newcomer.request("server.ping") is None
            assert await gone(lurker)
            assert await wallet.request("server.ping") is None  # identified: kept
            late = await Client.connect(h.server.tcp_port)
            h.clients.append(late)
            assert await late.recv() is None  # nobody left to replace: refused
    run(main())


def test_bytes_in_flight_are_charged_to_the_address_before_parsing() -> None:
    async def main() -> None:
        share = FairShare(address_inflight=1_000_000, total_inflight=2_000_000)
        async with serving(share=share) as h:
            first, second = await h.connect(), await h.connect()
            await first.send_raw(b'{"id": 1, "method": "server.ping", "params": ["'
                                 + b"a" * 700_000)  # an unfinished line, held
            for _ in range(100):
                if h.manager.admission.inflight >= 700_000:
                    break
                await asyncio.sleep(0.01)
            await second.send_raw(b"[" + b"1," * 200_000 + b"1]\n")  # 400 kB more: over
            reply = await second.recv()
            assert reply["error"]["message"] == "too many request bytes in flight from your address"
            assert await gone(second)
            # The address abused its share: its other session goes too, and it is kept out.
            assert await gone(first)
            assert h.manager.admission.inflight == 0
            assert h.manager.stats()["requests_refused"] == 1
            again = await Client.connect(h.server.tcp_port)
            h.clients.append(again)
            assert await again.recv() is None
    run(main())


class _Sink:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.closed = False

    def send_line(self, line: bytes) -> None:
        self.lines.append(line)

    def close(self) -> None:
        self.closed = True

    async def drain(self) -> None:
        pass


def test_paired_sessions_have_no_version_deadline() -> None:
    """A paired client is known by its key; it may send only hearth.* calls."""
    async def main() -> None:
        manager = SessionManager(FakeBackend(), limits=SessionLimits(version_timeout=0.05))
        paired, stranger = _Sink(), _Sink()
        assert manager.open_session(paired, paired=True, address="10.0.0.2") is not None
        assert manager.open_session(stranger, address="10.0.0.3") is not None
        await asyncio.sleep(0.2)
        assert stranger.closed and not paired.closed
        await manager.close()
    run(main())
