"""appliance.electrum.server: TCP and TLS listeners, session limits, fan-out, shutdown."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from appliance.electrum.backend import HistoryItem
from appliance.electrum.errors import INVALID_REQUEST
from appliance.electrum.server import ElectrumServer, SessionManager
from appliance.electrum.session import SessionLimits
from appliance.tls import ensure_certificate, server_ssl_context

from .fakes import EXAMPLE_SCRIPTHASH, EXAMPLE_STATUS, FakeBackend
from .util import Client, run, serving

SH = EXAMPLE_SCRIPTHASH.hex()


def client_context(cert: Path) -> ssl.SSLContext:
    """What a careful client does with a pinned self-signed certificate."""
    context = ssl.create_default_context(cafile=str(cert))
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default
    return context


def test_ElectrumServer_serves_tcp() -> None:
    async def main() -> None:
        async with serving() as h:
            assert h.server.tcp_port > 0
            client = await h.connect()
            assert await client.request("blockchain.scripthash.subscribe", SH) == EXAMPLE_STATUS
    run(main())


@pytest.mark.parametrize("server_hostname", ["127.0.0.1", "hearth.local", "hearth-test"])
def test_ElectrumServer_serves_tls_with_a_verifiable_certificate(
        tmp_path: Path, server_hostname: str) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    ensure_certificate(cert, key, hostname="hearth-test", ip_addresses=["127.0.0.1"])

    async def main() -> None:
        async with serving(tls_port=0, ssl_context=server_ssl_context(cert, key)) as h:
            client = await Client.connect(h.server.tls_port, ssl_context=client_context(cert),
                                          server_hostname=server_hostname)
            h.clients.append(client)
            assert await client.version() == ["Hearth 0.1.0", "1.6"]
            assert await client.request("blockchain.scripthash.subscribe", SH) == EXAMPLE_STATUS
            h.backend.histories[EXAMPLE_SCRIPTHASH].append(HistoryItem(b"\x09" * 32, 0, 1))
            await h.backend.announce(EXAMPLE_SCRIPTHASH)
            note = await client.notification()
            assert note["params"][0] == SH and note["params"][1] != EXAMPLE_STATUS
    run(main())


def test_ElectrumServer_tls_refuses_a_certificate_for_another_name(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    ensure_certificate(cert, key, hostname="hearth-test")

    async def main() -> None:
        async with serving(tls_port=0, ssl_context=server_ssl_context(cert, key)) as h:
            with pytest.raises(ssl.SSLCertVerificationError):
                await Client.connect(h.server.tls_port, ssl_context=client_context(cert),
                                     server_hostname="elsewhere.example")
    run(main())


def test_ElectrumServer_tls_port_needs_a_context() -> None:
    with pytest.raises(ValueError):
        ElectrumServer(SessionManager(FakeBackend()), tls_port=50002)


def test_ElectrumServer_reassembles_messages_split_across_writes() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect(negotiate=False)
            data = (b'{"jsonrpc":"2.0","id":1,"method":"server.version","params":["a","1.6"]}\n'
                    b'{"jsonrpc":"2.0","id":2,"method":"server.ping"}\n')
            for i in range(len(data)):
                await client.send_raw(data[i:i + 1])
            assert (await client.recv())["id"] == 1
            assert (await client.recv())["id"] == 2
    run(main())


def test_ElectrumServer_oversize_line_gets_an_error_then_disconnect() -> None:
    async def main() -> None:
        async with serving(limits=SessionLimits(max_line=1000)) as h:
            client = await h.connect()
            await client.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"server.ping"}\n'
                                  + b" " * 2000)
            assert (await client.recv())["id"] == 1  # answered before the oversize line
            assert await client.recv() == {"jsonrpc": "2.0", "id": None, "error": {
                "code": INVALID_REQUEST, "message": "message over 1,000 bytes"}}
            assert await client.closed_by_server()
            assert h.manager.session_count == 0
    run(main())


def test_SessionManager_refuses_connections_past_max_sessions() -> None:
    async def main() -> None:
        async with serving(max_sessions=2) as h:
            first = await h.connect()
            await h.connect()
            refused = await Client.connect(h.server.tcp_port)
            h.clients.append(refused)
            assert await refused.recv() is None  # a clean close, no data
            assert h.manager.counters.sessions_refused == 1
            await first.close()
            for _ in range(100):
                if h.manager.session_count < 2:
                    break
                await asyncio.sleep(0.01)
            again = await h.connect()
            assert await again.request("server.ping") is None
    run(main())


def test_SessionManager_computes_each_changed_status_once_for_all_sessions() -> None:
    async def main() -> None:
        async with serving() as h:
            clients = [await h.connect() for _ in range(5)]
            for client in clients:
                await client.request("blockchain.scripthash.subscribe", SH)
            h.backend.history_calls = 0
            h.backend.histories[EXAMPLE_SCRIPTHASH].append(HistoryItem(b"\x08" * 32, 0, 5))
            await h.backend.announce(EXAMPLE_SCRIPTHASH, bytes(32))  # the 2nd has no subscriber
            notes = [await client.notification() for client in clients]
            assert len({str(n["params"]) for n in notes}) == 1
            assert h.backend.history_calls == 1
    run(main())


def test_SessionManager_counts_requests_errors_and_sessions() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect()
            await client.request("server.ping")
            await client.call("no.such.method")
            await client.request("blockchain.scripthash.get_history", "66" * 32)
            stats = h.manager.stats()
            assert stats == {"sessions": 1, "sessions_total": 1, "sessions_refused": 0,
                             "subscriptions": 0, "requests": 4, "errors": 1,
                             "unknown_script_queries": 1, "adhoc_refused": 0,
                             "notifications": 0, "paired_sessions": 0,
                             "requests_refused": 0, "version_timeouts": 0,
                             "bytes_in_flight": 0}
    run(main())


def test_SessionManager_drops_a_client_that_does_not_read() -> None:
    async def main() -> None:
        backend = FakeBackend()
        backend.chain += [bytes([i % 251]) * 80 for i in range(2100)]
        limits = SessionLimits(max_send_buffer=200_000)
        async with serving(backend, limits=limits) as h:
            client = await h.connect()
            for i in range(40):  # ~320 kB answers, never read
                await client.send({"jsonrpc": "2.0", "id": i, "method":
                                   "blockchain.block.headers", "params": [0, 2016]})
            for _ in range(500):
                if h.manager.session_count == 0:
                    break
                await asyncio.sleep(0.01)
            assert h.manager.session_count == 0
    run(main())


def test_ElectrumServer_close_disconnects_everyone_and_stops_listening() -> None:
    async def main() -> None:
        backend = FakeBackend()
        manager = SessionManager(backend)
        server = ElectrumServer(manager, host="127.0.0.1", tcp_port=0)
        await server.start()
        port = server.tcp_port
        client = await Client.connect(port)
        await client.version()
        await client.request("blockchain.headers.subscribe")
        await server.close()
        assert await client.recv() is None
        assert manager.session_count == 0
        with pytest.raises(OSError):
            await Client.connect(port)
        # Late backend callbacks are harmless.
        await backend.add_block(bytes(80))
        await backend.announce(EXAMPLE_SCRIPTHASH)
        await client.close()
    run(main())


def test_SessionManager_registers_with_the_backend_once() -> None:
    async def main() -> None:
        backend = FakeBackend()
        manager = SessionManager(backend)
        await manager.start()
        await manager.start()
        assert len(backend.tip_listeners) == len(backend.scripthash_listeners) == 1
        await manager.close()
    run(main())


def test_ElectrumServer_caps_tls_handshakes_in_progress_per_address(tmp_path: Path) -> None:
    """asyncio gives a TLS connection 256 KiB from its first byte: half-open handshakes
    are capped before TLS starts (8 per address)."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    ensure_certificate(cert, key, hostname="hearth-test", ip_addresses=["127.0.0.1"])

    async def main() -> None:
        async with serving(tls_port=0, ssl_context=server_ssl_context(cert, key)) as h:
            port = h.server.tls_port
            lurkers = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
            await asyncio.sleep(0.1)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(reader.read(100), 5) == b""  # closed unanswered
            writer.close()
            assert h.manager.counters.sessions_refused == 1
            for _, lurker in lurkers:
                lurker.close()
            await asyncio.sleep(0.1)
            client = await Client.connect(port, ssl_context=client_context(cert),
                                          server_hostname="hearth-test")
            h.clients.append(client)
            assert await client.version() == ["Hearth 0.1.0", "1.6"]
    run(main())
