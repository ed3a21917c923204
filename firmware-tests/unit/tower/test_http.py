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
