"""Block and header parsing against real mainnet blocks, merkle checks, truncation fuzz."""

from __future__ import annotations

import struct

import pytest

from appliance.chain.block import (
    HEADER_SIZE,
    Block,
    iter_block_txs,
    parse_block,
    parse_header,
    read_header,
)
from appliance.chain.encoding import (
    ByteReader,
    ChainParseError,
    double_sha256,
    hash_to_hex_str,
    write_varint,
)
from appliance.chain.merkle import merkle_branch, merkle_root, verify_merkle_branch
from appliance.chain.script import ScriptType, classify_script
from appliance.chain.tx import TxIn, TxOut, serialize_tx

# The mainnet genesis block, and mainnet block 542213 (4 txs, one spending P2SH-P2WPKH),
# as in bitcoinjs-lib's test/fixtures/block.json. Each header hash meets its proof of
# work, so a matching merkle root independently confirms every txid we compute.
GENESIS_BLOCK = bytes.fromhex(
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac7"
    "2c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c010100000001000000000000"
    "0000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d0104455468652054696d"
    "65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66207365636f6e642062"
    "61696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe5548271967f1a67130"
    "b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b"
    "6bf11d5fac00000000"
)

BLOCK_542213 = bytes.fromhex(
    "000000208980ebb11236bacc66c447d5ad961bc546c0f9cc385a08000000000000000000135e9b653aee9a70028a"
    "ff2db53d4f43f4484ad52558c3ae300410b79cb6a864df50a35ba11928171396e301040100000000010100000000"
    "00000000000000000000000000000000000000000000000000000000ffffffff5003054608174d696e6564206279"
    "20416e74506f6f6c393b205ba350dffabe6d6d3a3e92d9efff857664de632e89fa3182f1e793d00be2e71a117b27"
    "3145945a810400000000000000db250000acba0500ffffffff028a8f814a000000001976a914edf10a7fac6b32e2"
    "4daa5305c723f3de58db1bc888ac0000000000000000266a24aa21a9ed4a657fcaa2149342376247e2e283a55a6b"
    "92dcc35d4d89e4ac7b74488cb63be201200000000000000000000000000000000000000000000000000000000000"
    "000000000000000100000001b898273f98d49399ecb5194ffdb1ed15c2fb37cf6d7696b4389bc7d1b76b63db0100"
    "00006b483045022100e2e9bc1f6bae2deed086e935bb49fd6ac1e13dc3a44c36cd8b9a6f4257efb70d022076537c"
    "7021f12d761e1202796029f13798503bc22ab8c2ee8cb98207cbfeb414012102071c2c88e4560b47a03c033c7361"
    "49a2ddd6071aea54ab85c5169cee156712f8ffffffff02b0710b00000000001976a914849a95fc65eeaa2ac47b6b"
    "6fc1f1883edb2c6c9788ace6b62501000000001976a9142964198f7ae9f7b920a2ab7c0b96b90e4ec9b14d88ac00"
    "0000000100000000010152405e2660055b3540f63424a1b0b3b7bb9bbef10ceec970cd18f6f86f84a78800000000"
    "17160014dde2f1a9a4bfda011ba9ec4062990c7e1a531585ffffffff0266d418000000000017a914adc5ec550548"
    "f087371e645047170864d5fbdc03877e0400000000000016001441f6746110cc0fec102e83053d4c0ae56fab1bdd"
    "02483045022100f93bd5d3529418f60dddd477f169c32ea5ab340c99573438ee7c40d705db9ba20220323f1b4d88"
    "40098b1271c95365cdc7e8f81d0bf1fcc568c68fc7de8b871b4bee012103211d047d92547bca4aa116bc51ec4b09"
    "188e5991f69f0432fe1b5dfd8947859700000000010000000ac1a19854e5b92792ae96d08eb9f7fc016fb57c51a9"
    "047161c342e6b8de8ce721000000006b483045022100fa00a6651015ac807b03d8d54559831db40d80329f46a886"
    "b93ca6b3996daf9b02201d0fafccc88c4654a9c3d205ef0828e32376ecb42f79587615203f23fc8f2d42012102a2"
    "cda42f6954605e40cbc5601f65673621c057f8c12f16149fbbf632e8be8ed8ffffffffda16ff4a7324f78f16d5e5"
    "d4a740168de9df426cf53df569c9a33d1b94e2c25f000000006a4730440220167b4777a23db304f50ac75febfae5"
    "db0b1578c90d85769bc76e0f5458484319022023f763e95ea7771c15ea0df91c17519014b2223cd726a3b0a8b1a6"
    "f67f99b2bf012103b9492a823f03b70a1750e0fac44f58f5c81e09f4c18d0b28755b44c911ffab5ffffffffff153"
    "3f2ea34b859d2be05bbb6859d6105ad4389c911545487187437acae21b70000000006b483045022100be0b8dc174"
    "f4136e3fb4f3ccf1a2be67a44d2086179c5726c61a1af010d5232f02205c0fb4cdd7c9cb8698ceed05e688e10a0c"
    "bdd0ee5db1a0a2ef92f322e1a60e9f0121020b9f404317cc6ab5a699f607a9bb0acd0bf5588777672f8f7f4c1a13"
    "304e9f76ffffffff1395191837aa5b1cfa4cc2a79d6d6bda7d198e8a795a0f7a85f556c446119572000000006b48"
    "3045022100ef3c61b5ba155b94fd02a96bf788e9a9be2de0ee53e3fe1fa6c24dd9d9aaee12022044c07be54a9c59"
    "fed96dfb778da0079f6753ab634d1920bf0fac25ebf7ac49d0012103f93e29be8b393773228f704151964662a91d"
    "f4c1a3e15364e4cfb38a8cacbda9ffffffff55120f684d5fbb845fd0198cd734e46fc29f40dc8f906bf36743d7f7"
    "40f5fd7c000000006a4730440220421aef290bbd39a18d1281ecfbb420b43daf2cc1c315b6bb44c895f88cb3cfcc"
    "022007a512c65b7768b1505f789b6d78479063d04ffb243072f2061eeb66fb1ade81012102712eea19c72fd644b2"
    "698c5480ebe77ce6face0bed64238a34a32085567f2f8efffffffff3553d19ce3156464e9cfa06a5260f9d9d01b1"
    "6ccad6e2ebaab233ba10472ba6000000006b483045022100a29aea775d2c46028f40dceb1707b23e720bb314cef4"
    "55854313569200c83162022009d0cdcef2e1f0a9217794991fa838fe6ce2bdc6e3c04ad490343c7e4a0ee7d30121"
    "02ed59ec6d98f9c2a4dd1324d46d74c56ff7e15935925f69799e547969a523ea98ffffffff530ab6d95f0d83669b"
    "fb12cbe983febe6ca638255139ce2ba0e35887f2fe3db6000000006b483045022100fad9f10989ab4ab019da4f6e"
    "430f9fe9ebe76941a9200d7346447358e93b1dce0220756c864b029a64ed9d6eedc13cf8b7d602572fcd7a3d3cb5"
    "28350bb032d7e3ec012102e3e0c78d034627b1616cf196aa69bfaf20009ba9ebf09cf069453cc0423239e2ffffff"
    "ff4b8e70824941d965df99703cacadfabcf79bc040029e528ff931e9ba4a7ee4d8000000006b48304502210095f3"
    "7fb2700c9f96d5e5c02d4b043a7cd804f79dd071d8b221b7ae781f0f5b4e02200ae3135b8bebf813449956ae19e7"
    "c02db5eff2472da023afa8b8d4e9baba0cdd01210226cc53dfc0a41cc0cf7117dfd406db2b87161e89e2bab9908a"
    "2382173fc6dbe1ffffffff5262129e9881722b217f7e4882ed2b83ee53d9e23b9bc647494c9487ae9fabdf000000"
    "006a473044022032361f724fe006079cf37b3df61cb6c51cb0c5fd77f29b61a318134ca4948d0e02202fbe6d484a"
    "78730899230244f3662fd5578b87e9eaaccdf9bf8f05d23917de8301210254e84223b3d7f7cfd14315be8fa0c7d7"
    "eb1a1a34a672f08e2b8ec134472a66d4ffffffff067040e03288282ebe5db7b705130849c9984458b13ea7ca3c75"
    "5f07b9d1b9f4000000006b483045022100b78b9c24f5f3e950aba637b827d5b11615c17ae2f43105941d172cc4a8"
    "b73c80022064998c17becd06abbcfde47c91b9d87da5ac67873ed9a412010b08b954e0b5cd01210329a0acc2b0d6"
    "0dd243eef46073a672ed0caf467c92f63ef7293f2036a3851a1effffffff02027f0000000000001976a914c6a396"
    "ae979670eeaa6929df3dd1c2d8fba31c3d88ac85a19b020000000017a914409dbd0e9a1ab27853186367130e6aab"
    "2509e47f8700000000"
)

GENESIS_HASH = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
GENESIS_MERKLE = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
BLOCK_542213_HASH = "000000000000000000143a2c56c0214236dadfd30df41d4a0345492ad6d861ec"


def test_genesis_block() -> None:
    block = parse_block(GENESIS_BLOCK)
    header = block.header
    assert hash_to_hex_str(block.hash) == GENESIS_HASH
    assert header.raw == GENESIS_BLOCK[:HEADER_SIZE]
    assert header.version == 1
    assert header.prev_hash == bytes(32)
    assert hash_to_hex_str(header.merkle_root) == GENESIS_MERKLE
    assert header.timestamp == 1231006505
    assert header.bits == 0x1D00FFFF
    assert header.nonce == 2083236893
    (coinbase,) = block.txs
    assert coinbase.is_coinbase
    assert not coinbase.is_segwit
    assert hash_to_hex_str(coinbase.txid) == GENESIS_MERKLE
    assert b"The Times 03/Jan/2009 Chancellor" in coinbase.inputs[0].script_sig
    (out,) = coinbase.outputs
    assert out.value == 50 * 100_000_000
    assert classify_script(out.script_pubkey) is ScriptType.P2PK
    assert (block.size, block.stripped_size, block.weight) == (285, 285, 1140)


def test_segwit_block_542213() -> None:
    block = parse_block(BLOCK_542213)
    assert hash_to_hex_str(block.hash) == BLOCK_542213_HASH
    assert hash_to_hex_str(block.header.prev_hash) == (
        "000000000000000000085a38ccf9c046c51b96add547c466ccba3612b1eb8089"
    )
    assert block.header.version == 0x20000000
    assert block.header.timestamp == 1537429727
    assert block.header.bits == 388503969
    assert block.header.nonce == 31692307
    assert len(block.txs) == 4
    assert [tx.is_segwit for tx in block.txs] == [True, False, True, False]
    # Sizes as bitcoind's getblock reports them.
    assert (block.size, block.stripped_size, block.weight) == (2355, 2209, 8982)


def test_witness_commitment_confirms_wtxids() -> None:
    # BIP141: the coinbase commits to the merkle root of wtxids (coinbase's counted as
    # zero) hashed with its witness reserved value; this pins down every wtxid.
    block = parse_block(BLOCK_542213)
    coinbase = block.txs[0]
    wtxids = [bytes(32)] + [tx.wtxid for tx in block.txs[1:]]
    reserved = coinbase.inputs[0].witness[0]
    commitment = double_sha256(merkle_root(wtxids) + reserved)
    marker = bytes.fromhex("6a24aa21a9ed")
    (script,) = [o.script_pubkey for o in coinbase.outputs if o.script_pubkey[:6] == marker]
    assert script[6:] == commitment
    assert commitment.hex() == "4a657fcaa2149342376247e2e283a55a6b92dcc35d4d89e4ac7b74488cb63be2"
    assert block.txs[2].wtxid != block.txs[2].txid


def test_electrum_branches_for_a_real_block() -> None:
    block = parse_block(BLOCK_542213)
    txids = [tx.txid for tx in block.txs]
    for index, txid in enumerate(txids):
        branch = merkle_branch(txids, index)
        assert len(branch) == 2
        assert verify_merkle_branch(txid, branch, index, block.header.merkle_root)


@pytest.mark.parametrize("raw", [GENESIS_BLOCK, BLOCK_542213], ids=["genesis", "542213"])
def test_iter_block_txs_matches_parse_block(raw: bytes) -> None:
    block = parse_block(raw)
    lazy = iter_block_txs(memoryview(raw))
    assert [tx.txid for tx in lazy] == [tx.txid for tx in block.txs]


def test_headers() -> None:
    header = parse_header(BLOCK_542213[:HEADER_SIZE])
    assert hash_to_hex_str(header.hash) == BLOCK_542213_HASH
    reader = ByteReader(GENESIS_BLOCK[:HEADER_SIZE] + BLOCK_542213[:HEADER_SIZE])
    first, second = read_header(reader), read_header(reader)
    reader.expect_end()
    assert (first.hash, second) == (parse_block(GENESIS_BLOCK).hash, header)
    for size in (0, 79, 81):
        with pytest.raises(ChainParseError):
            parse_header(BLOCK_542213[:size])
    with pytest.raises(ChainParseError):
        read_header(ByteReader(BLOCK_542213[:79]))


@pytest.mark.parametrize("raw", [GENESIS_BLOCK, BLOCK_542213], ids=["genesis", "542213"])
def test_every_prefix_is_rejected(raw: bytes) -> None:
    for cut in range(len(raw)):
        with pytest.raises(ChainParseError):
            parse_block(raw[:cut])
        with pytest.raises(ChainParseError):
            list(iter_block_txs(raw[:cut]))
        with pytest.raises(ChainParseError):
            parse_block(raw[:cut], verify_merkle=False)


def test_trailing_bytes_rejected() -> None:
    with pytest.raises(ChainParseError, match="trailing"):
        parse_block(GENESIS_BLOCK + b"\x00")


def test_no_transactions_rejected() -> None:
    with pytest.raises(ChainParseError, match="no transactions"):
        parse_block(GENESIS_BLOCK[:HEADER_SIZE] + b"\x00")


def test_absurd_tx_count_rejected() -> None:
    raw = GENESIS_BLOCK[:HEADER_SIZE] + b"\xfe\xff\xff\xff\x7f" + GENESIS_BLOCK[HEADER_SIZE + 1 :]
    with pytest.raises(ChainParseError, match="exceeds"):
        parse_block(raw)


def test_merkle_mismatch() -> None:
    raw = bytearray(BLOCK_542213)
    raw[-5] ^= 1  # a byte inside the last transaction's last output script
    with pytest.raises(ChainParseError, match="merkle root"):
        parse_block(bytes(raw))
    lazy = iter_block_txs(bytes(raw))
    txs = [next(lazy) for _ in range(4)]  # all four are yielded before the check...
    with pytest.raises(ChainParseError, match="merkle root"):
        next(lazy)  # ...which runs when the iterator is exhausted
    assert len(txs) == 4
    assert len(parse_block(bytes(raw), verify_merkle=False).txs) == 4
    assert len(list(iter_block_txs(bytes(raw), verify_merkle=False))) == 4


def _tx(tag: int, coinbase: bool = False) -> bytes:
    prev = (bytes(32), 0xFFFFFFFF) if coinbase else (bytes([tag]) * 32, 0)
    txin = TxIn(prev[0], prev[1], bytes([1, tag]), 0xFFFFFFFF)
    return serialize_tx(2, [txin], [TxOut(tag, b"\x51")], 0)


def _block(txs: list[bytes], root: bytes) -> bytes:
    header = struct.pack("<i32s32sIII", 0x20000000, bytes(32), root, 0, 0x207FFFFF, 0)
    return header + write_varint(len(txs)) + b"".join(txs)


def test_mutated_block_rejected() -> None:
    # CVE-2012-2459: [cb, a, b] and [cb, a, b, b] share a merkle root.
    txs = [_tx(0, coinbase=True), _tx(1), _tx(2)]
    root = merkle_root([double_sha256(t) for t in txs])
    block = parse_block(_block(txs, root))
    assert isinstance(block, Block)
    assert block.txs[0].is_coinbase
    mutated = _block([*txs, txs[-1]], root)
    with pytest.raises(ChainParseError, match="mutated"):
        parse_block(mutated)
    assert len(parse_block(mutated, verify_merkle=False).txs) == 4


def test_many_transactions() -> None:
    # 3,000 minimal segwit txs (no outputs): exercises the lazy path and a deep tree.
    def spend(i: int, witness: list[bytes]) -> bytes:
        return serialize_tx(1, [TxIn(i.to_bytes(32, "little"), i, b"", 0, witness)], [], i)

    txs = [_tx(0, coinbase=True)] + [spend(i, [b"w"]) for i in range(1, 3001)]
    txids = [double_sha256(txs[0])] + [double_sha256(spend(i, [])) for i in range(1, 3001)]
    block = parse_block(_block(txs, merkle_root(txids)))
    assert [tx.txid for tx in block.txs] == txids
    assert all(tx.is_segwit and not tx.outputs for tx in block.txs[1:])
