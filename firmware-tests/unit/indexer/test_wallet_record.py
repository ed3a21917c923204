"""The wallet record on disk: what a restart needs to resume a wallet where it was."""

from __future__ import annotations

from appliance.indexer.wallets import Branch, Wallet

DESC = "wpkh([0c9a3581/84h/1h/0h]tpubD6NzVbkrYhZ4X/0/*)#00000000"


def _wallet() -> Wallet:
    return Wallet(b"\x01" * 8, [Branch(DESC, True, derived=40, used=19)], gap=20,
                  birthday=100, state="backfill", backfill_height=250)


def test_a_pending_utxo_scan_survives_a_restart() -> None:
    wallet = _wallet()
    wallet.utxos_scanned = False  # scantxoutset still running beside the block scan
    again = Wallet.from_record(wallet.wallet_id, wallet.to_record())
    assert again.utxos_scanned is False
    assert again.to_record() == wallet.to_record()
    assert "utxos_scanned" not in again.extra


def test_a_record_from_before_the_field_counts_as_scanned() -> None:
    # Before the scan ran beside the blocks it ran first: such a wallet already has it.
    record = _wallet().to_record()
    del record["utxos_scanned"]
    assert Wallet.from_record(b"\x01" * 8, record).utxos_scanned is True
