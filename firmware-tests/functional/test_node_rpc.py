"""appliance.node.rpc against a real regtest bitcoind (ground truth: the framework's RPC)."""

from __future__ import annotations

import asyncio
import hmac
import secrets
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load_config
from appliance.node import (
    BitcoinRPC,
    NodeAuthError,
    NodeError,
    NodeUnavailable,
    NodeWarmingUp,
    RPCError,
)
from functional.framework.node import NodeFactory, TestNode
from functional.framework.util import free_port

pytestmark = pytest.mark.node



def client(node: TestNode, **kw: Any) -> BitcoinRPC:
    return BitcoinRPC(node.rpc_url, cookie_file=node.cookie_file, **kw)


def test_call_matches_ground_truth(node: TestNode) -> None:
    async def main() -> None:
        async with client(node) as rpc:
            assert await rpc.call("getblockcount") == node.getblockcount() == 200
            assert await rpc.call("getblockhash", 7) == node.getblockhash(7)
            best = await rpc.call("getbestblockhash")
            header = await rpc.call("getblockheader", best)
            assert header == node.getblockheader(best)
            # Fractions parse as Decimal, integers stay int.
            info = await rpc.call("getblockchaininfo")
            assert isinstance(info["difficulty"], Decimal) and isinstance(info["blocks"], int)

    asyncio.run(main())


def test_from_config(node: TestNode) -> None:
    cfg = load_config(None, env={}, overrides={
        "hearth": {"network": "regtest"},
        "node": {"rpc_url": node.rpc_url, "cookie_file": str(node.cookie_file),
                 "rpc_timeout": 7.5},
    })

    async def main() -> None:
        async with BitcoinRPC.from_config(cfg) as rpc:
            assert rpc.timeout == 7.5
            assert await rpc.call("getblockcount") == 200

    asyncio.run(main())


def test_batch_results_in_order_with_errors_in_place(node: TestNode) -> None:
    async def main() -> None:
        async with client(node) as rpc:
            out = await rpc.batch([
                ("getblockcount", []),
                ("getblockhash", [10]),
                ("nosuchmethod", []),
                ("getblockhash", [10**6]),
                ("getblockheader", [node.getblockhash(3)]),
            ])
            assert out[0] == 200
            assert out[1] == node.getblockhash(10)
            assert isinstance(out[2], RPCError) and out[2].code == -32601
            assert out[2].method == "nosuchmethod"
            assert isinstance(out[3], RPCError) and out[3].code == -8
            assert out[4] == node.getblockheader(node.getblockhash(3))
            assert await rpc.batch([]) == []

    asyncio.run(main())


def test_wallet_path_and_exact_amounts(node: TestNode) -> None:
    address = node.new_address()

    async def main() -> None:
        async with client(node) as rpc:
            assert await rpc.call("getbalance", wallet=node.wallet) == node.w("getbalance")
            info = await rpc.call("getwalletinfo", wallet=node.wallet)
            assert info["walletname"] == node.wallet
            # A Decimal parameter goes out as an exact JSON number.
            amount = Decimal("0.12345678")
            sent = await rpc.call("send", {address: amount}, wallet=node.wallet)
            assert sent["complete"] is True
            assert node.w("getreceivedbyaddress", address, 0) == amount
            with pytest.raises(RPCError) as err:
                await rpc.call("getbalance", wallet="no-such-wallet")
            assert err.value.code == -18

    asyncio.run(main())


def test_rpc_errors_map_to_rpcerror(node: TestNode, timeout_factor: float) -> None:
    async def main() -> None:
        async with client(node) as rpc:
            with pytest.raises(RPCError) as err:
                await rpc.call("nosuchmethod")
            assert (err.value.code, err.value.method) == (-32601, "nosuchmethod")
            with pytest.raises(RPCError) as err:
                await rpc.call("getblockhash", "ten")
            assert err.value.code == -3  # wrong type
            with pytest.raises(RPCError) as err:
                await rpc.call("getblockhash", -1)
            assert err.value.code == -8 and "out of range" in err.value.message
            # retry=True only retries "not there yet"; a real error is raised at once.
            started = time.monotonic()
            with pytest.raises(RPCError):
                await rpc.call("nosuchmethod", retry=True, deadline=30)
            assert time.monotonic() - started < 2 * timeout_factor
            # The client is still usable after errors.
            assert await rpc.call("getblockcount") == 200

    asyncio.run(main())


def test_wrong_cookie_is_auth_error_without_the_secret(node: TestNode, tmp_path: Path,
                                                       timeout_factor: float) -> None:
    secret = secrets.token_hex(32)
    cookie = tmp_path / "wrong.cookie"
    cookie.write_text(f"__cookie__:{secret}")
    missing = tmp_path / "missing.cookie"

    async def main() -> None:
        async with BitcoinRPC(node.rpc_url, cookie_file=cookie) as rpc:
            with pytest.raises(NodeAuthError) as err:
                await rpc.call("getblockcount")
            assert str(cookie) in str(err.value) and secret not in str(err.value)
            assert secret not in repr(err.value)
            # Not retried: waiting would not fix a wrong cookie.
            started = time.monotonic()
            with pytest.raises(NodeAuthError):
                await rpc.call("getblockcount", retry=True, deadline=30)
            assert time.monotonic() - started < 5 * timeout_factor
        # A missing cookie is what a stopped bitcoind leaves: retryable, path named.
        async with BitcoinRPC(node.rpc_url, cookie_file=missing) as rpc:
            with pytest.raises(NodeUnavailable, match="missing.cookie"):
                await rpc.call("getblockcount")

    asyncio.run(main())


def test_user_password_auth(node_factory: NodeFactory) -> None:
    user, password, salt = "hearth", secrets.token_hex(16), secrets.token_hex(16)
    digest = hmac.new(salt.encode(), password.encode(), "sha256").hexdigest()
    node = node_factory.create(extra_args=[f"-rpcauth={user}:{salt}${digest}"])

    async def main() -> None:
        async with BitcoinRPC(node.rpc_url, auth=(user, password)) as rpc:
            assert await rpc.call("getblockcount") == 200
        host = node.rpc_url.removeprefix("http://")
        async with BitcoinRPC(f"http://{user}:{password}@{host}") as rpc:
            assert rpc.url == node.rpc_url  # credentials never shown
            assert await rpc.call("getblockcount") == 200
        async with BitcoinRPC(node.rpc_url, auth=(user, "wrong-" + password)) as rpc:
            with pytest.raises(NodeAuthError, match="hearth") as err:
                await rpc.call("getblockcount")
            assert password not in str(err.value)

    asyncio.run(main())


def test_connection_refused_is_unavailable_quickly(tmp_path: Path, timeout_factor: float
                                                   ) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    async def main() -> None:
        async with BitcoinRPC(url, cookie_file=tmp_path / ".cookie") as rpc:
            started = time.monotonic()
            with pytest.raises(NodeUnavailable) as err:
                await rpc.call("getblockcount")
            assert time.monotonic() - started < 1 * timeout_factor
            assert url in str(err.value) and "refused" in str(err.value)
            # With retry it gives up at the deadline with the same error.
            started = time.monotonic()
            with pytest.raises(NodeUnavailable):
                await rpc.call("getblockcount", retry=True, deadline=0.5)
            assert 0.4 < time.monotonic() - started < 2 * timeout_factor

    asyncio.run(main())


def test_timeout_and_cancel_do_not_poison_the_pool(node: TestNode, timeout_factor: float
                                                   ) -> None:
    async def main() -> None:
        async with client(node, pool_size=1) as rpc:
            started = time.monotonic()
            with pytest.raises(NodeUnavailable, match="no reply within"):
                await rpc.call("waitfornewblock", 3000, timeout=0.3)
            assert time.monotonic() - started < 2 * timeout_factor
            # The connection that timed out mid-reply is gone, not reused half-read.
            assert await rpc.call("getblockcount") == 200
            task = asyncio.create_task(rpc.call("waitfornewblock", 3000))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await rpc.call("getblockhash", 1) == node.getblockhash(1)

    asyncio.run(main())


def test_idle_connection_closed_by_bitcoind_is_reopened(node_factory: NodeFactory) -> None:
    node = node_factory.create(extra_args=["-rpcservertimeout=1"])

    async def main() -> None:
        async with client(node, pool_size=1) as rpc:
            assert await rpc.call("getblockcount") == 200
            await asyncio.sleep(2.5)  # bitcoind drops the idle keep-alive connection
            assert await rpc.call("getblockcount") == 200

    asyncio.run(main())


def test_concurrent_calls_use_the_pool(node: TestNode) -> None:
    truth = [node.getblockhash(h) for h in range(50)]

    async def main() -> None:
        async with client(node, pool_size=4) as rpc:
            got = await asyncio.gather(*(rpc.call("getblockhash", h) for h in range(50)))
            assert got == truth
            # Four 1-second long-polls at once take ~1 s; queued on one socket, 4 s.
            started = time.monotonic()
            await asyncio.gather(*(rpc.call("waitfornewblock", 1000) for _ in range(4)))
            assert time.monotonic() - started < 3

    asyncio.run(main())


def test_wait_ready_waits_for_stopped_then_warming_bitcoind(node: TestNode) -> None:
    node.stop()
    # A big keypool makes "Loading wallet..." last long enough to be seen every time.
    starter = threading.Timer(1.0, node.start, args=("-wallet=truth", "-keypool=2000"))
    seen: set[type[BaseException]] = set()

    async def watch(rpc: BitcoinRPC, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await rpc.call("getblockcount")
            except (NodeUnavailable, NodeWarmingUp) as exc:
                seen.add(type(exc))
                if isinstance(exc, NodeWarmingUp):
                    assert exc.message  # bitcoind's status text
            await asyncio.sleep(0.01)

    async def main() -> float:
        async with client(node) as rpc:
            with pytest.raises(NodeUnavailable):
                await rpc.call("getblockcount")  # no retry: fails fast
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch(rpc, stop))
            started = time.monotonic()
            starter.start()
            info = await rpc.wait_ready(timeout=60)
            waited = time.monotonic() - started
            stop.set()
            await watcher
            assert info["blocks"] == 200 and info["chain"] == "regtest"
            return waited

    try:
        waited = asyncio.run(main())
    finally:
        starter.join()
    assert waited >= 1.0
    assert seen == {NodeUnavailable, NodeWarmingUp}


def test_stale_cookie_after_restart_recovers(node: TestNode) -> None:
    async def main() -> None:
        async with client(node) as rpc:
            assert await rpc.call("getblockcount") == 200
            old_cookie = node.cookie_file.read_text()
            node.stop()
            node.start()
            assert node.cookie_file.read_text() != old_cookie
            assert await rpc.call("getblockcount") == 200

    asyncio.run(main())
    # Ground truth that the old cookie really was presented, rejected, and replaced.
    log = (node.regtest_dir / "debug.log").read_text(errors="replace")
    assert "incorrect password attempt" in log


def test_closed_client_refuses_calls(node: TestNode) -> None:
    async def main() -> None:
        rpc = client(node)
        assert await rpc.call("getblockcount") == 200
        await rpc.close()
        with pytest.raises(NodeError, match="closed"):
            await rpc.call("getblockcount")

    asyncio.run(main())
