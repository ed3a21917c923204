"""The SOCKS5 client of appliance-client --tor/--proxy (real tor: functional/test_tor.py)."""

from __future__ import annotations

import asyncio

import pytest

from appliance.client.socks import SocksError, SocksProxy


@pytest.mark.parametrize("text, host, port", [
    ("127.0.0.1:9050", "127.0.0.1", 9050), ("socks5://10.0.0.2:9150", "10.0.0.2", 9150),
    ("socks5h://localhost:1080", "localhost", 1080)])
def test_proxy_addresses(text: str, host: str, port: int) -> None:
    assert SocksProxy.parse(text) == SocksProxy(host, port)


@pytest.mark.parametrize("bad", ["http://127.0.0.1:8080", "127.0.0.1", "socks5://:9050"])
def test_bad_proxy_addresses(bad: str) -> None:
    with pytest.raises(ValueError, match="SOCKS5"):
        SocksProxy.parse(bad)


async def _proxy_replying(reply: int, seen: list[bytes]) -> asyncio.Server:
    """A SOCKS5 server that records the CONNECT request and answers with ``reply``."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readexactly(3) == b"\x05\x01\x00"
        writer.write(b"\x05\x00")
        head = await reader.readexactly(5)
        seen.append(head + await reader.readexactly(head[4] + 2))
        writer.write(bytes([5, reply, 0, 1]) + bytes(6) + (b"hello" if reply == 0 else b""))
        await writer.drain()
        writer.close()
    return await asyncio.start_server(serve, "127.0.0.1", 0)


def test_connect_sends_the_name_and_reads_past_the_bound_address() -> None:
    async def main() -> None:
        seen: list[bytes] = []
        server = await _proxy_replying(0, seen)
        proxy = SocksProxy("127.0.0.1", server.sockets[0].getsockname()[1])
        reader, writer = await proxy.open_connection("abc.onion", 50003)
        assert await reader.readexactly(5) == b"hello"  # the stream starts after the reply
        writer.close()
        assert seen == [b"\x05\x01\x00\x03\x09abc.onion\xc3\x53"]  # the name, not resolved
        server.close()
    asyncio.run(main())


def test_tors_onion_errors_are_told_in_words() -> None:
    async def main() -> None:
        server = await _proxy_replying(0xF0, [])
        proxy = SocksProxy("127.0.0.1", server.sockets[0].getsockname()[1])
        with pytest.raises(SocksError, match="descriptor not found"):
            await proxy.open_connection("abc.onion", 50001)
        server.close()
    asyncio.run(main())
