"""appliance.electrum.session: negotiation order, batches, errors, limits and notifications,
over real TCP connections (plus a fuzz test on an in-memory transport)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.chain.encoding import hash_to_hex_str
from appliance.electrum.backend import HistoryItem
from appliance.electrum.errors import (
    BAD_REQUEST,
    EXCESSIVE_RESOURCE_USAGE,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    SERVER_BUSY,
)
from appliance.electrum.server import SessionManager
from appliance.electrum.session import ElectrumSession, SessionLimits

from .fakes import EXAMPLE_HISTORY, EXAMPLE_SCRIPTHASH, EXAMPLE_STATUS, FakeBackend
from .util import run, serving

SH = EXAMPLE_SCRIPTHASH.hex()
OTHER = bytes.fromhex("33" * 32)
OTHER_SH = OTHER.hex()
NEW_TX = HistoryItem(bytes.fromhex("44" * 32), 0, 150)
NOTIFY_DEADLINE = 0.1  # seconds from the backend's callback to the client


def req(msg_id: Any, method: str, *params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": list(params)}


VERSION = req(0, "server.version", "test", ["1.4", "1.6"])


def expected_status(items: list[HistoryItem]) -> str:
    """The spec's definition, spelled out independently of the code under test."""
    confirmed = [i for i in items if i.height > 0]
    mempool = sorted((i for i in items if i.height <= 0),
                     key=lambda i: (-i.height, hash_to_hex_str(i.txid)))
    text = "".join(f"{hash_to_hex_str(i.txid)}:{i.height}:" for i in confirmed + mempool)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# --- version negotiation ------------------------------------------------------------------


def test_ElectrumSession_request_before_version_is_refused_and_disconnected() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect(negotiate=False)
            await client.send(req(5, "blockchain.headers.subscribe"))
            answer = await client.recv()
            assert answer == {"jsonrpc": "2.0", "id": 5, "error": {
                "code": BAD_REQUEST, "message": "use server.version to identify client"}}
            assert await client.closed_by_server()
    run(main())


def test_ElectrumSession_notification_before_version_disconnects_silently() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect(negotiate=False)
            await client.send({"jsonrpc": "2.0", "method": "server.ping"})
            assert await client.recv() is None
    run(main())


def test_ElectrumSession_only_the_first_server_version_is_accepted() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect(negotiate=False)
            assert await client.version("1.4") == ["Hearth 0.1.0", "1.4"]
            msg = await client.call("server.version", "again", "1.6")
            assert msg["error"] == {"code": BAD_REQUEST, "message": "server.version already sent"}
            assert await client.request("server.ping") is None  # still connected, still 1.4
            assert (await client.call("mempool.get_info"))["error"]["code"] == METHOD_NOT_FOUND
    run(main())


def test_ElectrumSession_unsupported_versions_get_an_error_then_disconnect() -> None:
    async def main() -> None:
        async with serving() as h:
            for protocol, code in (("1.2", BAD_REQUEST), (["1.7", "1.8"], BAD_REQUEST),
                                   ("1.5", BAD_REQUEST), (["x", "1.6"], INVALID_PARAMS),
                                   (16, INVALID_PARAMS)):
                client = await h.connect(negotiate=False)
                msg = await client.call("server.version", "old", protocol)
                assert msg["error"]["code"] == code, protocol
                assert await client.closed_by_server()
            assert h.manager.session_count == 0
    run(main())


def test_ElectrumSession_malformed_json_is_answered_and_not_fatal() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect(negotiate=False)
            await client.send_raw(b'{"id": 1, "method": \n')
            assert await client.recv() == {"jsonrpc": "2.0", "id": None, "error": {
                "code": PARSE_ERROR, "message": "invalid JSON"}}
            await client.send_raw(b"\xff\xfe\n")
            assert (await client.recv())["error"]["code"] == PARSE_ERROR
            await client.send_raw(b"[]\n")
            assert (await client.recv())["error"] == {"code": INVALID_REQUEST,
                                                      "message": "batch is empty"}
            assert await client.version() == ["Hearth 0.1.0", "1.6"]
            assert h.manager.counters.errors == 3
    run(main())


def test_ElectrumSession_blank_lines_are_ignored() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect(negotiate=False)
            await client.send_raw(b"\n\r\n   \n")
            assert await client.version() == ["Hearth 0.1.0", "1.6"]
    run(main())


def test_ElectrumSession_json_rpc_1_style_client_gets_2_0_answers() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect(negotiate=False)
            await client.send({"id": 1, "method": "server.version", "params": ["x", "1.4"]})
            assert await client.recv() == {"jsonrpc": "2.0", "id": 1,
                                           "result": ["Hearth 0.1.0", "1.4"]}
            await client.send({"id": "p", "method": "server.ping", "params": []})
            assert await client.recv() == {"jsonrpc": "2.0", "id": "p", "result": None}
    run(main())


def test_ElectrumSession_a_2_0_client_must_stay_2_0() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect()  # sends "jsonrpc": "2.0"
            await client.send({"id": 4, "method": "server.ping"})
            assert (await client.recv())["error"]["code"] == INVALID_REQUEST
    run(main())


# --- requests -------------------------------------------------------------------------------


def test_ElectrumSession_unknown_method() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect()
            msg = await client.call("blockchain.address.get_balance", "1A1z")
            assert msg["error"] == {"code": METHOD_NOT_FOUND,
                                    "message": "unknown method 'blockchain.address.get_balance'"}
    run(main())


def test_ElectrumSession_wrong_arity_and_names() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect()
            for params in ([], [SH, 1]):
                msg = await client.call("blockchain.scripthash.get_history", *params)
                assert msg["error"]["code"] == INVALID_PARAMS
            await client.send({"jsonrpc": "2.0", "id": 3, "method": "blockchain.block.header",
                               "params": {"height": 1, "checkpoint": 2}})
            assert (await client.response(3))["error"]["code"] == INVALID_PARAMS
            await client.send({"jsonrpc": "2.0", "id": 4, "method": "blockchain.block.header",
                               "params": {"height": 1}})
            assert (await client.response(4))["result"] == h.backend.chain[1].hex()
            await client.send({"jsonrpc": "2.0", "id": 5, "method": "server.ping",
                               "params": "x"})
            assert (await client.response(5))["error"]["code"] == INVALID_PARAMS
    run(main())


def test_ElectrumSession_backend_bug_is_an_internal_error_not_a_disconnect() -> None:
    async def main() -> None:
        backend = FakeBackend()

        async def broken(scripthash: bytes) -> tuple[int, int]:
            raise RuntimeError("disk on fire at /var/lib/secret")

        backend.balance = broken  # type: ignore[method-assign]
        async with serving(backend) as h:
            client = await h.connect()
            msg = await client.call("blockchain.scripthash.get_balance", SH)
            assert msg["error"] == {"code": INTERNAL_ERROR, "message": "internal error"}
            assert await client.request("server.ping") is None
    run(main())


def test_ElectrumSession_slow_backend_times_out() -> None:
    async def main() -> None:
        backend = FakeBackend()
        backend.history_delay = 2.0
        async with serving(backend, limits=SessionLimits(request_timeout=0.1)) as h:
            client = await h.connect()
            msg = await client.call("blockchain.scripthash.get_history", SH)
            assert msg["error"] == {"code": SERVER_BUSY, "message": "request timed out"}
    run(main())


# --- batches --------------------------------------------------------------------------------


def test_ElectrumSession_batch_is_answered_in_one_line() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect(negotiate=False)
            await client.send([VERSION, req(1, "server.ping"),
                               {"jsonrpc": "2.0", "method": "server.ping"},  # notification
                               req(2, "nope"), 42,
                               req(3, "blockchain.scripthash.subscribe", SH)])
            line = await client.reader.readline()
            assert line.endswith(b"\n") and line.count(b"\n") == 1
            answers = json.loads(line)
            assert answers == [
                {"jsonrpc": "2.0", "id": 0, "result": ["Hearth 0.1.0", "1.6"]},
                {"jsonrpc": "2.0", "id": 1, "result": None},
                {"jsonrpc": "2.0", "id": 2, "error": {
                    "code": METHOD_NOT_FOUND, "message": "unknown method 'nope'"}},
                {"jsonrpc": "2.0", "id": None, "error": {
                    "code": INVALID_REQUEST, "message": "a request must be a JSON object"}},
                {"jsonrpc": "2.0", "id": 3, "result": EXAMPLE_STATUS},
            ]
    run(main())


def test_ElectrumSession_batch_of_notifications_gets_no_answer() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect()
            await client.send([{"jsonrpc": "2.0", "method": "server.ping"}])
            assert await client.no_message()
            assert await client.request("server.ping") is None
    run(main())


def test_ElectrumSession_batch_before_version_stops_at_the_first_other_request() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect(negotiate=False)
            await client.send([req(1, "server.ping"), VERSION])
            answers = await client.recv()
            assert answers == [{"jsonrpc": "2.0", "id": 1, "error": {
                "code": BAD_REQUEST, "message": "use server.version to identify client"}}]
            assert await client.closed_by_server()
    run(main())


def test_ElectrumSession_batch_too_large() -> None:
    async def main() -> None:
        async with serving(limits=SessionLimits(max_batch=3)) as h:
            client = await h.connect()
            await client.send([req(i, "server.ping") for i in range(4)])
            assert (await client.recv())["error"] == {"code": INVALID_REQUEST,
                                                      "message": "batch of 4 exceeds 3"}
            await client.send([req(i, "server.ping") for i in range(3)])
            assert len(await client.recv()) == 3
    run(main())


def test_ElectrumSession_notifications_wait_for_the_batch_response() -> None:
    async def main() -> None:
        backend = FakeBackend()
        backend.watched.add(OTHER)
        gate = asyncio.Event()

        async def hold_other(scripthash: bytes) -> None:
            if scripthash == OTHER:
                await gate.wait()

        async with serving(backend) as h:
            client = await h.connect()
            backend.history_hook = hold_other
            await client.send([req(1, "blockchain.scripthash.subscribe", SH),
                               req(2, "blockchain.scripthash.get_history", OTHER_SH)])
            await asyncio.sleep(0.05)  # the subscribe has been answered inside the batch
            backend.histories[EXAMPLE_SCRIPTHASH].append(NEW_TX)
            await backend.announce(EXAMPLE_SCRIPTHASH)
            assert await client.no_message(0.2)
            gate.set()
            answers = await client.recv()
            assert [a["id"] for a in answers] == [1, 2]
            assert answers[0]["result"] == EXAMPLE_STATUS
            note = await client.notification()
            assert note["params"] == [SH, expected_status(EXAMPLE_HISTORY + [NEW_TX])]
    run(main())


# --- notifications -------------------------------------------------------------------------


def test_ElectrumSession_headers_notification_on_new_tip() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect()
            quiet = await h.connect()
            await client.request("blockchain.headers.subscribe")
            header = bytes(range(80))
            started = time.monotonic()
            await h.backend.add_block(header)
            note = await client.notification()
            assert time.monotonic() - started < NOTIFY_DEADLINE
            assert note == {"jsonrpc": "2.0", "method": "blockchain.headers.subscribe",
                            "params": [{"height": 9, "hex": header.hex()}]}
            # The same tip again is no news.
            await h.backend.announce()
            for listener in h.backend.tip_listeners:
                await listener(9, header)
            assert await client.no_message()
            assert await quiet.no_message(0.05)
    run(main())


def test_ElectrumSession_scripthash_notification_with_spec_status() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect()
            assert await client.request("blockchain.scripthash.subscribe", SH) == EXAMPLE_STATUS
            h.backend.histories[EXAMPLE_SCRIPTHASH].append(NEW_TX)
            started = time.monotonic()
            await h.backend.announce(EXAMPLE_SCRIPTHASH)
            note = await client.notification()
            assert time.monotonic() - started < NOTIFY_DEADLINE
            new_status = expected_status(EXAMPLE_HISTORY + [NEW_TX])
            assert note == {"jsonrpc": "2.0", "method": "blockchain.scripthash.subscribe",
                            "params": [SH, new_status]}
            # An announcement that changes nothing sends nothing.
            await h.backend.announce(EXAMPLE_SCRIPTHASH)
            assert await client.no_message()
            # Unsubscribed: silence.
            await client.request("blockchain.scripthash.unsubscribe", SH)
            h.backend.histories[EXAMPLE_SCRIPTHASH].pop()
            await h.backend.announce(EXAMPLE_SCRIPTHASH)
            assert await client.no_message()
    run(main())


def test_ElectrumSession_unknown_script_notifies_once_it_gains_history() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect()
            assert await client.request("blockchain.scripthash.subscribe", OTHER_SH) is None
            h.backend.watched.add(OTHER)
            h.backend.histories[OTHER] = [HistoryItem(b"\x07" * 32, 9)]
            await h.backend.announce(OTHER)
            note = await client.notification()
            assert note["params"] == [OTHER_SH, hashlib.sha256(
                f"{'07' * 32}:9:".encode()).hexdigest()]
    run(main())


def test_ElectrumSession_subscribing_to_an_unknown_script_watches_it_answer_unchanged() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect()
            # The answer is the unknown-script answer; only then is the watch taken.
            assert await client.request("blockchain.scripthash.subscribe", OTHER_SH) is None
            assert h.backend.watch_requests == [OTHER]
            assert await client.no_message()
            # Queries that are not subscriptions never make the box watch anything.
            await client.request("blockchain.scripthash.get_history", "55" * 32)
            await client.request("blockchain.scripthash.listunspent", "55" * 32)
            assert h.backend.watch_requests == [OTHER]
            # A wallet's script is not "unknown": nothing to watch.
            await client.request("blockchain.scripthash.subscribe", SH)
            assert h.backend.watch_requests == [OTHER]
            # What happens to it later is notified like any watched script.
            h.backend.histories[OTHER] = [NEW_TX]
            await h.backend.announce(OTHER)
            note = await client.notification()
            assert note["params"] == [OTHER_SH, expected_status([NEW_TX])]
    run(main())


def test_ElectrumSession_adhoc_watch_limit_per_session() -> None:
    async def main() -> None:
        async with serving(limits=SessionLimits(max_adhoc_watches=2)) as h:
            client = await h.connect()
            h.backend.refuse_watch.add(bytes.fromhex("51" * 32))  # refused: not counted
            for sh in ("51", "52", "53", "54"):
                assert await client.request("blockchain.scripthash.subscribe", sh * 32) is None
            assert h.backend.watch_requests == [bytes.fromhex(x * 32) for x in ("51", "52", "53")]
            assert h.manager.stats()["adhoc_refused"] == 1
            # Another connection has its own allowance.
            other = await h.connect()
            assert await other.request("blockchain.scripthash.subscribe", "55" * 32) is None
            assert h.backend.watch_requests[-1] == bytes.fromhex("55" * 32)
    run(main())


def test_ElectrumSession_change_during_subscribe_is_folded_into_the_answer() -> None:
    async def main() -> None:
        backend = FakeBackend()
        async with serving(backend) as h:
            client = await h.connect()
            fired = False

            async def change_meanwhile(scripthash: bytes) -> None:
                nonlocal fired
                if not fired:
                    fired = True  # the subscribe's own computation saw the old history
                    backend.histories[EXAMPLE_SCRIPTHASH].append(NEW_TX)
                    await backend.announce(EXAMPLE_SCRIPTHASH)
                    await asyncio.sleep(0.05)  # let the notifier compute the new status

            backend.history_hook = change_meanwhile
            status = await client.request("blockchain.scripthash.subscribe", SH)
            assert status == expected_status(EXAMPLE_HISTORY + [NEW_TX])
            assert await client.no_message()  # nothing stale or duplicate follows
            assert h.manager.sessions[0].subscribed_status(EXAMPLE_SCRIPTHASH) == status
    run(main())


def test_ElectrumSession_subscription_limit() -> None:
    async def main() -> None:
        async with serving(limits=SessionLimits(max_subscriptions=2)) as h:
            client = await h.connect()
            await client.request("blockchain.scripthash.subscribe", SH)
            await client.request("blockchain.scripthash.subscribe", OTHER_SH)
            await client.request("blockchain.scripthash.subscribe", SH)  # not a new one
            msg = await client.call("blockchain.scripthash.subscribe", "55" * 32)
            assert msg["error"] == {"code": BAD_REQUEST,
                                    "message": "subscription limit of 2 reached"}
            await client.request("blockchain.scripthash.unsubscribe", OTHER_SH)
            assert await client.request("blockchain.scripthash.subscribe", "55" * 32) is None
            assert h.manager.subscribed_scripthashes == 2
    run(main())


# --- limits ---------------------------------------------------------------------------------


def test_ElectrumSession_in_flight_limit_pushes_back() -> None:
    async def main() -> None:
        backend = FakeBackend()
        gate = asyncio.Event()

        async def hold(scripthash: bytes) -> None:
            await gate.wait()

        async with serving(backend, limits=SessionLimits(max_in_flight=2)) as h:
            client = await h.connect()
            backend.history_hook = hold
            for i in (1, 2, 3):
                await client.send(req(i, "blockchain.scripthash.get_history", SH))
            await client.send(req(4, "server.ping"))
            # Two requests hold both slots; the third waits, so the ping is not even read.
            assert await client.no_message(0.2)
            gate.set()
            ids = {(await client.recv())["id"] for _ in range(4)}
            assert ids == {1, 2, 3, 4}
    run(main())


def test_ElectrumSession_flooding_client_is_slowed_then_disconnected() -> None:
    async def main() -> None:
        limits = SessionLimits(cost_soft_limit=5, cost_hard_limit=25, cost_decay_per_sec=0,
                               throttle_max_delay=0.3)
        async with serving(limits=limits) as h:
            client = await h.connect()
            delays: list[float] = []
            for _ in range(60):
                started = time.monotonic()
                await client.send(req(9, "blockchain.scripthash.get_history", SH))
                msg = await client.recv()
                if msg["id"] is None:
                    assert msg["error"] == {"code": EXCESSIVE_RESOURCE_USAGE,
                                            "message": "excessive resource usage"}
                    break
                delays.append(time.monotonic() - started)
            else:
                raise AssertionError("a flooding client was never disconnected")
            assert await client.closed_by_server()
            # Cheap while under the soft limit, then slower and slower.
            assert max(delays[:3]) < 0.05 and max(delays) > 0.15
            assert delays[-1] > delays[len(delays) // 2]
    run(main())


def test_ElectrumSession_excessive_usage_error_is_sent_before_closing() -> None:
    async def main() -> None:
        limits = SessionLimits(cost_soft_limit=1, cost_hard_limit=2, cost_decay_per_sec=0,
                               throttle_max_delay=0.01)
        async with serving(limits=limits) as h:
            client = await h.connect()
            await client.send([req(i, "blockchain.scripthash.get_history", SH)
                               for i in range(10)])
            answers = await client.recv()
            assert 0 < len(answers) < 10  # the batch stopped at the hard limit
            assert await client.recv() == {"jsonrpc": "2.0", "id": None, "error": {
                "code": EXCESSIVE_RESOURCE_USAGE, "message": "excessive resource usage"}}
            assert await client.closed_by_server()
    run(main())


def test_ElectrumSession_a_flood_of_blank_lines_also_costs() -> None:
    async def main() -> None:
        limits = SessionLimits(cost_soft_limit=5, cost_hard_limit=10, cost_decay_per_sec=0,
                               throttle_max_delay=0.001)
        async with serving(limits=limits) as h:
            client = await h.connect()
            await client.send_raw(b"\n" * 1000)
            assert (await client.recv())["error"]["code"] == EXCESSIVE_RESOURCE_USAGE
            assert await client.closed_by_server()
    run(main())


def test_ElectrumSession_idle_client_is_closed() -> None:
    async def main() -> None:
        async with serving(limits=SessionLimits(idle_timeout=0.2)) as h:
            client = await h.connect()
            assert await client.closed_by_server(2.0)
            assert h.manager.session_count == 0
    run(main())


# --- fuzz ------------------------------------------------------------------------------------


class MemoryTransport:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.closed = False

    def send_line(self, line: bytes) -> None:
        assert b"\n" not in line
        self.lines.append(line)

    def close(self) -> None:
        self.closed = True

    async def drain(self) -> None:
        return None


methods = st.sampled_from(["server.version", "server.ping", "server.features",
                           "blockchain.scripthash.subscribe", "blockchain.block.headers",
                           "blockchain.transaction.get", "blockchain.estimatefee", "x"])
params = st.lists(st.none() | st.booleans() | st.integers(-3, 3000) | st.text(max_size=70)
                  | st.just(SH) | st.just(["1.4", "1.6"]), max_size=4)
requests = st.builds(lambda i, m, p: json.dumps(req(i, m, *p)).encode(),
                     st.integers(0, 5) | st.none() | st.text(max_size=3), methods, params)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests | st.binary(max_size=60), max_size=8))
def test_ElectrumSession_never_raises_and_always_answers_json(lines: list[bytes]) -> None:
    async def main() -> None:
        manager = SessionManager(FakeBackend())
        transport = MemoryTransport()
        session = manager.open_session(transport, name="fuzz")
        assert isinstance(session, ElectrumSession)
        for line in [json.dumps(VERSION).encode(), *lines]:
            await session.handle_message(line)
        await asyncio.sleep(0)
        session.close()
        await session.wait_closed()
        await manager.close()
        for out in transport.lines:
            json.loads(out)
        assert transport.closed

    asyncio.run(main())
