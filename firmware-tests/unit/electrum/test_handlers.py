"""appliance.electrum.handlers: the version table, negotiation, status, and every method's
result shape, checked over real TCP connections against the fake backend."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest

from appliance.chain.encoding import hash_to_hex_str
from appliance.chain.script import script_to_scripthash
from appliance.electrum.backend import HistoryItem
from appliance.electrum.errors import (
    BAD_REQUEST,
    DAEMON_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    RPCError,
)
from appliance.electrum.handlers import (
    MAX_HEADERS,
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    Method,
    ServerInfo,
    canonical_history,
    handlers_for,
    negotiate_version,
    parse_version,
    status_of,
    version_string,
)

from .fakes import (
    EXAMPLE_HISTORY,
    EXAMPLE_RAW_TX,
    EXAMPLE_SCRIPTHASH,
    EXAMPLE_STATUS,
    MAINNET_HEADERS,
    FakeBackend,
    sha256d,
)
from .util import Client, Harness, RemoteError, run, serving

SH = EXAMPLE_SCRIPTHASH.hex()
UNKNOWN_SH = "11" * 31 + "22"  # not a palindrome: pins the byte order
GENESIS_HEX = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"

# protocol-methods.rst, blockchain.block.header with height 5 and cp_height 8.
CP8_BRANCH = [
    "000000004ebadb55ee9096c9a2f8880e09da59c0d68b1c228da88e48844a1485",
    "96cbbc84783888e4cc971ae8acf86dd3c1a419370336bb3c634c97695a8c5ac9",
    "965ac94082cebbcffe458075651e9cc33ce703ab0115c72d9e8b1a9906b2b636",
    "89e5daa6950b895190716dd26054432b564ccdc2868188ba1da76de8e1dc7591",
]
CP8_ROOT = "e347b1c43fd9b5415bf0d92708db8284b78daf4d0e24f9c3405f45feb85e25db"


async def connect(h: Harness, protocol: Any = ("1.4", "1.6")) -> Client:
    client = await h.connect(negotiate=False)
    await client.version(protocol)
    return client


async def error_of(client: Client, method: str, *params: Any) -> tuple[int, str]:
    with pytest.raises(RemoteError) as info:
        await client.request(method, *params)
    return info.value.code, info.value.message


# --- pure parts ---------------------------------------------------------------------------


def test_status_of_matches_the_spec_example() -> None:
    text = "".join(f"{hash_to_hex_str(i.txid)}:{i.height}:" for i in EXAMPLE_HISTORY)
    assert hashlib.sha256(text.encode()).hexdigest() == EXAMPLE_STATUS
    assert status_of(EXAMPLE_HISTORY) == EXAMPLE_STATUS
    assert status_of([]) is None


def test_canonical_history_sorts_mempool_by_height_then_display_txid() -> None:
    shuffled = list(EXAMPLE_HISTORY[3:])
    random.Random(1).shuffle(shuffled)
    assert canonical_history(EXAMPLE_HISTORY[:3] + shuffled) == EXAMPLE_HISTORY
    assert status_of(EXAMPLE_HISTORY[:3] + shuffled[::-1]) == EXAMPLE_STATUS


def test_canonical_history_keeps_confirmed_block_order() -> None:
    # Same height: position in block decides, which only the backend knows.
    a, b = HistoryItem(b"\xff" * 32, 5), HistoryItem(b"\x00" * 32, 5)
    assert canonical_history([a, b]) == [a, b]


@pytest.mark.parametrize(("text", "expected"), [
    ("1.4", (1, 4)), ("1.4.2", (1, 4, 2)), ("1.4.0", (1, 4)), ("1.6.0", (1, 6)),
    ("2.0", (2, 0)), ("10.20.30", (10, 20, 30)),
])
def test_parse_version_reads_dotted_numbers(text: str, expected: tuple[int, ...]) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize("text", ["1", "", "1.", "a.b", "1.4 ", "1..4", 1.4, None, "1.4.2.1.0"])
def test_parse_version_rejects_garbage(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_version(text)


@pytest.mark.parametrize(("requested", "expected"), [
    (None, (1, 4)),  # the spec's default protocol_version="1.4"
    ("1.4", (1, 4)),
    ("1.6", (1, 6)),
    (["1.4", "1.6"], (1, 6)),
    (["1.1", "2.0"], (1, 6)),
    (["1.4", "1.4.2"], (1, 4, 2)),
    (["1.4", "1.5"], (1, 4, 2)),  # 1.5 was skipped: highest real version below it
    (["1.4", "1.4.3"], (1, 4, 2)),  # 1.4.3 only adds a Namecoin method
    (["1.4.1", "1.4.1"], (1, 4, 1)),
    (["1.6", "1.7"], (1, 6)),
])
def test_negotiate_version_picks_highest_common(requested: Any,
                                                expected: tuple[int, ...]) -> None:
    assert negotiate_version(requested) == expected


@pytest.mark.parametrize("requested", ["1.3", ["1.0", "1.3"], "1.7", ["1.7", "2.0"], "1.5",
                                       ["1.6", "1.4"]])
def test_negotiate_version_refuses_and_disconnects_without_overlap(requested: Any) -> None:
    with pytest.raises(RPCError) as info:
        negotiate_version(requested)
    assert info.value.code == BAD_REQUEST and info.value.disconnect
    assert "unsupported protocol version" in info.value.message


@pytest.mark.parametrize("requested", [5, "one", ["1.4"], ["1.4", "1.6", "1.7"], [1.4, 1.6],
                                       {"min": "1.4"}])
def test_negotiate_version_malformed_is_invalid_params(requested: Any) -> None:
    with pytest.raises(RPCError) as info:
        negotiate_version(requested)
    assert info.value.code == INVALID_PARAMS and info.value.disconnect


def test_handlers_for_gates_methods_by_version() -> None:
    v14, v142, v16 = handlers_for((1, 4)), handlers_for((1, 4, 2)), handlers_for((1, 6))
    assert "blockchain.relayfee" in v14 and "blockchain.relayfee" in v142
    assert "blockchain.relayfee" not in v16  # removed in 1.6
    assert "mempool.get_info" in v16 and "mempool.get_info" not in v142
    assert "blockchain.transaction.broadcast_package" in v16
    assert "blockchain.transaction.broadcast_package" not in v142
    assert "blockchain.scripthash.unsubscribe" not in v14
    assert "blockchain.scripthash.unsubscribe" in v142 and "blockchain.scripthash.unsubscribe" in v16
    assert v14["blockchain.estimatefee"].names == ("number",)
    assert v16["blockchain.estimatefee"].names == ("number", "mode")
    with pytest.raises(ValueError):
        handlers_for((1, 3))
    with pytest.raises(ValueError):
        handlers_for((1, 7))


def test_handlers_for_names_mirror_wire_names() -> None:
    for name, method in handlers_for(PROTOCOL_MAX).items():
        assert method.func.__name__ == name.replace(".", "_")


def test_Method_bind_checks_arity_and_names() -> None:
    method = handlers_for(PROTOCOL_MAX)["blockchain.block.headers"]
    assert method.bind([1, 2]) == ([1, 2], {})
    assert method.bind({"start_height": 1, "count": 2}) == ([], {"start_height": 1, "count": 2})
    for bad in ([1], [1, 2, 3, 4], {"start_height": 1}, {"start_height": 1, "count": 2, "x": 3}):
        with pytest.raises(RPCError) as info:
            method.bind(bad)
        assert info.value.code == INVALID_PARAMS


def test_Method_bind_server_version_tolerates_extras() -> None:
    method = handlers_for(PROTOCOL_MIN)["server.version"]
    assert method.bind(["a", "1.4", "junk", 9999.9, {"dd": {}}])[0][:2] == ["a", "1.4"]
    assert method.bind({"client_name": "a", "future_thing": 1}) == ([], {"client_name": "a"})
    assert isinstance(method, Method)


def test_version_string_round_trips() -> None:
    assert version_string((1, 4, 2)) == "1.4.2"
    assert version_string(PROTOCOL_MAX) == "1.6"


# --- server.* -----------------------------------------------------------------------------


def test_server_version_result_and_negotiated_version() -> None:
    async def main() -> None:
        async with serving() as h:
            for protocol, expected in ((("1.4", "1.6"), "1.6"), ("1.4", "1.4"),
                                       (("1.4", "1.4.2"), "1.4.2"), (None, "1.4")):
                client = await h.connect(negotiate=False)
                assert await client.request("server.version", "Electrum 4.5.8",
                                            protocol if not isinstance(protocol, tuple)
                                            else list(protocol)) == ["Hearth 0.1.0", expected]
            assert h.manager.sessions[0].client_name in ("Electrum 4.5.8",)
    run(main())


def test_server_version_ignores_extra_arguments() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await h.connect(negotiate=False)
            # protocol-methods.rst's own example of trailing garbage.
            result = await client.request("server.version", "electrum/4.6.2", ["1.4", "1.6"],
                                          "trailing_garbage1", 9999.9, {"dd": {}})
            assert result == ["Hearth 0.1.0", "1.6"]
            named = await h.connect(negotiate=False)
            await named.send({"jsonrpc": "2.0", "id": 1, "method": "server.version",
                              "params": {"client_name": "x", "protocol_version": "1.4",
                                         "ext": 1}})
            assert (await named.response(1))["result"] == ["Hearth 0.1.0", "1.4"]
    run(main())


def test_server_features_shape() -> None:
    async def main() -> None:
        info = ServerInfo(hosts={"hearth.local": {"tcp_port": 50001, "ssl_port": 50002}})
        async with serving(info=info) as h:
            client = await connect(h)
            assert await client.request("server.features") == {
                "hosts": {"hearth.local": {"tcp_port": 50001, "ssl_port": 50002}},
                "genesis_hash": GENESIS_HEX,
                "hash_function": "sha256",
                "server_version": "Hearth 0.1.0",
                "protocol_min": "1.4",
                "protocol_max": "1.6",
                "pruning": None,
            }
    run(main())


def test_server_small_methods() -> None:
    async def main() -> None:
        async with serving(info=ServerInfo(banner="hi")) as h:
            client = await connect(h)
            assert await client.request("server.banner") == "hi"
            assert await client.request("server.donation_address") == ""
            assert await client.request("server.peers.subscribe") == []
            assert await client.request("server.ping") is None
            assert await client.request("server.add_peer", {"hosts": {}}) is False
            assert await client.no_message()  # peers.subscribe sends no notifications
    run(main())


# --- headers and fees ---------------------------------------------------------------------


def test_blockchain_headers_subscribe_result() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            assert await client.request("blockchain.headers.subscribe") == {
                "height": 8, "hex": MAINNET_HEADERS[8].hex()}
    run(main())


def test_blockchain_block_header_plain_and_with_checkpoint_proof() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            header5 = MAINNET_HEADERS[5].hex()
            assert await client.request("blockchain.block.header", 5) == header5
            assert await client.request("blockchain.block.header", 5, 0) == header5
            # The spec's example, byte for byte.
            assert await client.request("blockchain.block.header", 5, 8) == {
                "branch": CP8_BRANCH, "header": header5, "root": CP8_ROOT}
    run(main())


@pytest.mark.parametrize(("params", "code"), [
    ((9,), BAD_REQUEST),  # past the tip
    ((5, 4), BAD_REQUEST),  # cp_height below height
    ((5, 9), BAD_REQUEST),  # cp_height past the tip
    ((-1,), INVALID_PARAMS),
    (("5",), INVALID_PARAMS),
    ((True,), INVALID_PARAMS),
    ((5.0,), INVALID_PARAMS),
    ((5, -8), INVALID_PARAMS),
    ((), INVALID_PARAMS),
    ((1, 2, 3), INVALID_PARAMS),
])
def test_blockchain_block_header_errors(params: tuple[Any, ...], code: int) -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            assert (await error_of(client, "blockchain.block.header", *params))[0] == code
    run(main())


def test_blockchain_block_headers_1_6_lists_headers() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h, "1.6")
            # protocol-methods.rst's example response, exactly.
            assert await client.request("blockchain.block.headers", 0, 2) == {
                "count": 2, "max": 2016,
                "headers": [MAINNET_HEADERS[0].hex(), MAINNET_HEADERS[1].hex()]}
            assert await client.request("blockchain.block.headers", 7, 10) == {
                "count": 2, "max": 2016,
                "headers": [MAINNET_HEADERS[7].hex(), MAINNET_HEADERS[8].hex()]}
            assert await client.request("blockchain.block.headers", 100, 10) == {
                "count": 0, "max": 2016, "headers": []}
    run(main())


def test_blockchain_block_headers_1_4_concatenates_hex() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h, ["1.4", "1.4.2"])
            assert await client.request("blockchain.block.headers", 0, 3) == {
                "count": 3, "max": 2016, "hex": b"".join(MAINNET_HEADERS[:3]).hex()}
    run(main())


def test_blockchain_block_headers_checkpoint_proves_the_last_header() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            result = await client.request("blockchain.block.headers", 3, 3, 8)
            assert result["count"] == 3 and len(result["headers"]) == 3
            assert result["branch"] == CP8_BRANCH and result["root"] == CP8_ROOT
            # No headers, no proof.
            empty = await client.request("blockchain.block.headers", 3, 0, 8)
            assert empty == {"count": 0, "max": 2016, "headers": []}
            assert (await error_of(client, "blockchain.block.headers", 3, 3, 4))[0] == BAD_REQUEST
    run(main())


def test_blockchain_block_headers_caps_count_at_max() -> None:
    async def main() -> None:
        backend = FakeBackend()
        backend.chain += [bytes([i % 256]) * 80 for i in range(2100)]
        async with serving(backend) as h:
            client = await connect(h)
            result = await client.request("blockchain.block.headers", 0, 5000)
            assert result["count"] == MAX_HEADERS == len(result["headers"])
    run(main())


def test_blockchain_estimatefee_number_and_1_6_mode() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            assert await client.request("blockchain.estimatefee", 6) == 0.00101079
            assert await client.request("blockchain.estimatefee", 6, "economical") == 0.00101079
            assert h.backend.fee_estimates == [(6, None), (6, "ECONOMICAL")]
            # No estimate is the integer -1, not -1.0.
            assert (await client.call("blockchain.estimatefee", 1))["result"] == -1
            assert (await error_of(client, "blockchain.estimatefee", 6, "fast"))[0] == INVALID_PARAMS
            assert (await error_of(client, "blockchain.estimatefee", "6"))[0] == INVALID_PARAMS
            old = await connect(h, "1.4")
            assert await old.request("blockchain.estimatefee", 6) == 0.00101079
            # mode arrived with 1.6.
            code, _ = await error_of(old, "blockchain.estimatefee", 6, "ECONOMICAL")
            assert code == INVALID_PARAMS
    run(main())


def test_blockchain_estimatefee_minus_one_is_an_integer_on_the_wire() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            await client.send({"jsonrpc": "2.0", "id": 9, "method": "blockchain.estimatefee",
                               "params": [1]})
            line = await client.reader.readline()
            assert b'"result":-1,' in line
    run(main())


def test_blockchain_relayfee_only_before_1_6() -> None:
    async def main() -> None:
        async with serving() as h:
            old = await connect(h, ["1.4", "1.4.2"])
            assert await old.request("blockchain.relayfee") == 0.00001
            new = await connect(h, "1.6")
            assert (await error_of(new, "blockchain.relayfee"))[0] == METHOD_NOT_FOUND
    run(main())


def test_mempool_get_info_only_from_1_6() -> None:
    async def main() -> None:
        async with serving() as h:
            new = await connect(h)
            assert await new.request("mempool.get_info") == {
                "mempoolminfee": 0.00001, "minrelaytxfee": 0.00001,
                "incrementalrelayfee": 0.00001}
            old = await connect(h, "1.4")
            assert (await error_of(old, "mempool.get_info"))[0] == METHOD_NOT_FOUND
    run(main())


def test_mempool_get_fee_histogram_pairs() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            assert await client.request("mempool.get_fee_histogram") == [
                [12.0, 128812], [4.0, 92524], [2.0, 6478638], [1.0, 22890421]]
    run(main())


# --- scripthashes -------------------------------------------------------------------------


def test_blockchain_scripthash_get_balance() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            assert await client.request("blockchain.scripthash.get_balance", SH) == {
                "confirmed": 103873966, "unconfirmed": -5000}
    run(main())


def test_blockchain_scripthash_get_history_matches_spec_example() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            assert await client.request("blockchain.scripthash.get_history", SH) == [
                {"tx_hash": "a6c9c361bd0bc536d6a22648efbf8f9b200e425ef6c3a7a9669dc444c532a347",
                 "height": 2472},
                {"tx_hash": "9c42f84b2fcdaff676ba25d9d4941741cc0d1a01cce0c23fdc4c0b2afa38431c",
                 "height": 2473},
                {"tx_hash": "770f2d4371b3fabb902dd9a103e2dd005fcd3971181078fca4a2a1d6ff127b30",
                 "height": 2473},
                {"tx_hash": "80b19848aed792565ab7c5a79b7c2a00fbf985741579396ebe0ab6098e607311",
                 "height": 0, "fee": 200},
                {"tx_hash": "e02a1dadfa83b996b24175df807b271ea5d02937ef5b35c195fac1e1bdc3198f",
                 "height": 0, "fee": 300},
                {"tx_hash": "bb4c8ab438c13b89ca80d1d5bee25b0b6b7f55673f4d801998ba97db161d9e85",
                 "height": -1, "fee": 200},
            ]
    run(main())


def test_blockchain_scripthash_get_history_mempool_fee_is_always_an_integer() -> None:
    async def main() -> None:
        backend = FakeBackend()
        backend.histories[EXAMPLE_SCRIPTHASH] = [HistoryItem(b"\x01" * 32, 0, None)]
        async with serving(backend) as h:
            client = await connect(h)
            history = await client.request("blockchain.scripthash.get_history", SH)
            assert history == [{"tx_hash": "01" * 32, "height": 0, "fee": 0}]
    run(main())


def test_blockchain_scripthash_get_mempool_in_status_order() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            mempool = await client.request("blockchain.scripthash.get_mempool", SH)
            assert [(m["tx_hash"][:4], m["height"], m["fee"]) for m in mempool] == [
                ("80b1", 0, 200), ("e02a", 0, 300), ("bb4c", -1, 200)]
    run(main())


def test_blockchain_scripthash_listunspent() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            assert await client.request("blockchain.scripthash.listunspent", SH) == [
                {"tx_hash": "9c42f84b2fcdaff676ba25d9d4941741cc0d1a01cce0c23fdc4c0b2afa38431c",
                 "tx_pos": 0, "height": 2473, "value": 45318048},
                {"tx_hash": "e02a1dadfa83b996b24175df807b271ea5d02937ef5b35c195fac1e1bdc3198f",
                 "tx_pos": 1, "height": 0, "value": 919195},
            ]
    run(main())


def test_blockchain_scripthash_subscribe_returns_spec_status() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            assert await client.request("blockchain.scripthash.subscribe", SH) == EXAMPLE_STATUS
            # Uppercase hex names the same script.
            assert await client.request("blockchain.scripthash.subscribe",
                                        SH.upper()) == EXAMPLE_STATUS
            assert h.manager.sessions[0].subscription_count == 1
    run(main())


def test_blockchain_scripthash_unsubscribe_from_1_4_2() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            await client.request("blockchain.scripthash.subscribe", SH)
            assert await client.request("blockchain.scripthash.unsubscribe", SH) is True
            assert await client.request("blockchain.scripthash.unsubscribe", SH) is False
            assert h.manager.subscribed_scripthashes == 0
            old = await connect(h, "1.4")
            assert (await error_of(old, "blockchain.scripthash.unsubscribe", SH))[0] == \
                METHOD_NOT_FOUND
    run(main())


@pytest.mark.parametrize("method", ["get_balance", "get_history", "get_mempool", "listunspent",
                                    "subscribe", "unsubscribe"])
@pytest.mark.parametrize("bad", [SH[:-1], SH + "0", "zz" * 32, 5, None, [SH], " " + SH[1:],
                                 SH[:62] + "\n0"])
def test_blockchain_scripthash_bad_hex_is_invalid_params(method: str, bad: Any) -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            code, _ = await error_of(client, f"blockchain.scripthash.{method}", bad)
            assert code == INVALID_PARAMS
            assert h.backend.queried == []
    run(main())


def test_blockchain_scripthash_bytes_are_the_chain_packages_scripthash() -> None:
    # protocol-basics.rst: the genesis address's P2PKH script and its wire scripthash.
    script = bytes.fromhex("76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac")
    wire = "8b01df4e368ea28f8dc0423bcf7a4923e3a12d307c875e47a0cfbf90b5c39161"

    async def main() -> None:
        backend = FakeBackend()
        key = script_to_scripthash(script)  # how the indexer keys its tables
        backend.watched.add(key)
        backend.balances[key] = (5000000000, 0)
        async with serving(backend) as h:
            client = await connect(h)
            assert await client.request("blockchain.scripthash.get_balance", wire) == {
                "confirmed": 5000000000, "unconfirmed": 0}
            assert backend.queried == [key]
    run(main())


def test_blockchain_scripthash_unknown_script_gets_empty_answers_and_is_counted() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            assert await client.request("blockchain.scripthash.get_balance", UNKNOWN_SH) == {
                "confirmed": 0, "unconfirmed": 0}
            assert await client.request("blockchain.scripthash.get_history", UNKNOWN_SH) == []
            assert await client.request("blockchain.scripthash.get_mempool", UNKNOWN_SH) == []
            assert await client.request("blockchain.scripthash.listunspent", UNKNOWN_SH) == []
            assert await client.request("blockchain.scripthash.subscribe", UNKNOWN_SH) is None
            assert h.manager.counters.unknown_script_queries == 5
            assert h.manager.stats()["unknown_script_queries"] == 5
            assert h.backend.queried == [bytes.fromhex(UNKNOWN_SH)] * 5
            assert h.manager.counters.errors == 0
            await client.request("blockchain.scripthash.get_history", SH)
            assert h.manager.counters.unknown_script_queries == 5
    run(main())


def test_blockchain_scripthash_query_lets_the_gap_limit_grow_first() -> None:
    async def main() -> None:
        backend = FakeBackend()
        beyond_gap = bytes.fromhex("22" * 32)
        backend.gap.add(beyond_gap)
        backend.histories[beyond_gap] = [HistoryItem(b"\x05" * 32, 3)]
        async with serving(backend) as h:
            client = await connect(h)
            history = await client.request("blockchain.scripthash.get_history", "22" * 32)
            assert history == [{"tx_hash": "05" * 32, "height": 3}]
            assert h.manager.counters.unknown_script_queries == 0
    run(main())


# --- transactions -----------------------------------------------------------------------


TX_A6 = "a6c9c361bd0bc536d6a22648efbf8f9b200e425ef6c3a7a9669dc444c532a347"


def test_blockchain_transaction_get_raw_and_verbose() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            assert await client.request("blockchain.transaction.get", TX_A6) == \
                EXAMPLE_RAW_TX.hex()
            assert await client.request("blockchain.transaction.get", TX_A6, False) == \
                EXAMPLE_RAW_TX.hex()
            verbose = await client.request("blockchain.transaction.get", TX_A6, True)
            assert verbose == {"txid": TX_A6, "hex": EXAMPLE_RAW_TX.hex(), "confirmations": 3}
    run(main())


def test_blockchain_transaction_get_errors() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            code, message = await error_of(client, "blockchain.transaction.get", "00" * 32)
            assert (code, message) == (DAEMON_ERROR,
                                       "No such mempool or blockchain transaction")
            for params in ((TX_A6[:-2],), (TX_A6, "yes"), (TX_A6, 2), (7,)):
                code, _ = await error_of(client, "blockchain.transaction.get", *params)
                assert code == INVALID_PARAMS
    run(main())


def test_blockchain_transaction_get_merkle_matches_spec_example() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            result = await client.request(
                "blockchain.transaction.get_merkle",
                "770f2d4371b3fabb902dd9a103e2dd005fcd3971181078fca4a2a1d6ff127b30", 2473)
            assert result == {"block_height": 2473, "pos": 2, "merkle": [
                "770f2d4371b3fabb902dd9a103e2dd005fcd3971181078fca4a2a1d6ff127b30",
                "ee43317b1b79a9a6b101df711a26d12a88b1419f63db15161a9fdb587fabae63"]}
            result = await client.request(
                "blockchain.transaction.get_merkle",
                "9c42f84b2fcdaff676ba25d9d4941741cc0d1a01cce0c23fdc4c0b2afa38431c", 2473)
            assert result == {"block_height": 2473, "pos": 1, "merkle": [
                "9b977e4cc0b2eb44cb5ea2adb30bf6eae892c9a838111031cb49c97d8ad57309",
                "e7a2891bd8f96488681a596f619de4d88a22d3b08a8aee3b44bbdd913e3e3562"]}
            code, _ = await error_of(client, "blockchain.transaction.get_merkle", TX_A6, 2473)
            assert code == BAD_REQUEST
            code, _ = await error_of(client, "blockchain.transaction.get_merkle", TX_A6, -1)
            assert code == INVALID_PARAMS
    run(main())


def test_blockchain_transaction_id_from_pos_with_and_without_merkle() -> None:
    async def main() -> None:
        async with serving() as h:
            client = await connect(h)
            txid = "9c42f84b2fcdaff676ba25d9d4941741cc0d1a01cce0c23fdc4c0b2afa38431c"
            assert await client.request("blockchain.transaction.id_from_pos", 2473, 1) == txid
            assert await client.request("blockchain.transaction.id_from_pos", 2473, 1,
                                        True) == {"tx_hash": txid, "merkle": [
                "9b977e4cc0b2eb44cb5ea2adb30bf6eae892c9a838111031cb49c97d8ad57309",
                "e7a2891bd8f96488681a596f619de4d88a22d3b08a8aee3b44bbdd913e3e3562"]}
            code, _ = await error_of(client, "blockchain.transaction.id_from_pos", 2473, 3)
            assert code == BAD_REQUEST
            code, _ = await error_of(client, "blockchain.transaction.id_from_pos", 2473, "1")
            assert code == INVALID_PARAMS
    run(main())


def test_blockchain_transaction_broadcast_returns_txid_or_bitcoind_reason() -> None:
    async def main() -> None:
        backend = FakeBackend()
        backend.rejections[b"\xde\xad"] = "bad-txns-inputs-missingorspent"
        async with serving(backend) as h:
            client = await connect(h)
            txid = await client.request("blockchain.transaction.broadcast", "beef")
            assert txid == hash_to_hex_str(sha256d(b"\xbe\xef"))
            assert backend.broadcasts == [b"\xbe\xef"]
            assert await error_of(client, "blockchain.transaction.broadcast", "dead") == (
                BAD_REQUEST, "bad-txns-inputs-missingorspent")
            for bad in ("abc", "", "zz", 12):
                code, _ = await error_of(client, "blockchain.transaction.broadcast", bad)
                assert code == INVALID_PARAMS
    run(main())


def test_blockchain_transaction_broadcast_package_1_6() -> None:
    async def main() -> None:
        backend = FakeBackend()
        async with serving(backend) as h:
            client = await connect(h)
            raw = EXAMPLE_RAW_TX.hex()
            assert await client.request("blockchain.transaction.broadcast_package",
                                        [raw]) == {"success": True}
            backend.rejections[EXAMPLE_RAW_TX] = "insufficient fee"
            assert await client.request("blockchain.transaction.broadcast_package",
                                        [raw]) == {"success": False, "errors": [
                                            {"txid": TX_A6, "error": "insufficient fee"}]}
            for bad in ([], ["beef"], raw, [raw] * 26):
                code, _ = await error_of(client, "blockchain.transaction.broadcast_package", bad)
                assert code == INVALID_PARAMS
            verbose = await client.request("blockchain.transaction.broadcast_package", [raw],
                                           True)
            assert verbose["package_msg"] == "transaction failed"
            (entry,) = verbose["tx-results"].values()
            assert entry == {"txid": TX_A6, "error": "insufficient fee"}
            old = await connect(h, "1.4")
            code, _ = await error_of(old, "blockchain.transaction.broadcast_package", [raw])
            assert code == METHOD_NOT_FOUND
    run(main())
