"""appliance.tower.http: request limits on a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from coincurve import PrivateKey

from appliance.tower.api import TowerAPI, TowerLimits
from appliance.tower.http import RequestGuard, make_app
from appliance.tower.store import TowerStore


async def _serve(tmp_path: Path, guard: RequestGuard) -> tuple[web.AppRunner, int, TowerStore]:
    store = TowerStore(tmp_path / "db")
    app = make_app(TowerAPI(store, PrivateKey(), lambda: 500, TowerLimits()), auth=None,
                   lan_only=True, guard_with=guard)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    return runner, port, store


async def _post_head(port: int, path: str, length: int) -> tuple[asyncio.StreamReader,
                                                                 asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {length}\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def _answer(reader: asyncio.StreamReader) -> tuple[int, Any]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split()[1])
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    return status, json.loads(await reader.readexactly(length))


def test_RequestGuard_times_out_slow_bodies_and_caps_requests_per_address(
        tmp_path: Path) -> None:
    async def main() -> None:
        guard = RequestGuard(per_address=2, body_timeout=0.3)
        runner, port, store = await _serve(tmp_path, guard)
        try:
            slow = [await _post_head(port, "/add_appointment", 100) for _ in range(2)]
            await asyncio.sleep(0.05)
            reader, writer = await _post_head(port, "/get_appointment", 2)
            writer.write(b"{}")
            status, body = await _answer(reader)  # a third at once from this address
            assert status == 503 and body["error_code"] == 6, body
            writer.close()
            for reader, writer in slow:  # a body that never comes: 408, nothing held
                status, body = await _answer(reader)
                assert status == 408 and "within 0.3 s" in body["error"], body
                writer.close()
            reader, writer = await _post_head(port, "/add_appointment", 10_000)
            writer.write(b"[" * 5000 + b"]" * 5000)
            status, body = await _answer(reader)
            assert status == 400 and body == {
                "error": "the body is refused: nested deeper than 8 levels", "error_code": 6}
            writer.close()
            assert guard.refused == 4
        finally:
            await runner.cleanup()
            store.close()
    asyncio.run(main())


async def _serve_gated(tmp_path: Path, guard: RequestGuard) -> tuple[web.AppRunner, int]:
    from appliance.tower.gate import GatedSite

    app = make_app(TowerAPI(TowerStore(tmp_path / "db"), PrivateKey(), lambda: 500,
                            TowerLimits()), auth=None, lan_only=True, guard_with=guard)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = GatedSite(runner, "127.0.0.1", 0, gate=guard.gate)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    return runner, port


def test_gate_caps_connections_and_closes_slow_or_idle_ones(tmp_path: Path) -> None:
    from appliance.tower.gate import GateLimits

    async def run() -> None:
        guard = RequestGuard(gate=GateLimits(per_address=3, max_connections=4, header_timeout=0.5))
        runner, port = await _serve_gated(tmp_path, guard)
        try:
            # A keep-alive client is answered twice on one connection, each in time.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(2):
                writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await _answer(reader))[0] == 200
            # ... then, idle past the header deadline, it is closed.
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            # Headers that never end are cut at the deadline, not held.
            slow_reader, slow = await asyncio.open_connection("127.0.0.1", port)
            slow.write(b"GET /ping HTTP/1.1\r\nHo")
            assert await asyncio.wait_for(slow_reader.read(), 5) == b""
            slow.close()
            # Past the per-address cap a connection is reset at once; the held ones stay.
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
            assert await asyncio.wait_for(held[3][0].read(), 5) == b""
            assert guard.gate.connections == 3
            assert guard.refused >= 3  # idle, slow headers, over the cap
            for _, w in held:
                w.close()
        finally:
            await runner.cleanup()
        assert guard.gate.connections == 0

    asyncio.run(run())
