"""The backfill's choice between matching filters and reading blocks directly."""

from __future__ import annotations

from appliance.indexer.backfill import _Costs

__all__: list[str] = []


def test_filters_are_used_until_both_costs_are_known() -> None:
    costs = _Costs()
    assert not costs.filters_cost_more()
    costs.filtered(20, 0.040)
    assert not costs.filters_cost_more()  # no block applied yet


def busy(filter_s: float) -> _Costs:
    """A first batch of 20 filters, every block a hit."""
    costs = _Costs()
    costs.filtered(20, 20 * filter_s)
    for _ in range(20):
        costs.applied(0.003, touched=True)
    return costs


def test_every_block_a_hit_makes_filters_pure_cost() -> None:
    assert busy(0.002).filters_cost_more()


def test_sparse_hits_keep_the_filters() -> None:
    costs = _Costs()
    costs.filtered(200, 200 * 0.002)
    for i in range(200):
        if i % 20 == 0:
            costs.applied(0.050, touched=True)
        else:
            costs.ruled_out()
    assert not costs.filters_cost_more()


def test_a_quiet_stretch_brings_the_filters_back() -> None:
    costs = busy(0.001)
    assert costs.filters_cost_more()
    for _ in range(40):  # read directly, none of them ours
        costs.applied(0.003, touched=False)
    assert not costs.filters_cost_more()


def big_wallet() -> _Costs:
    """Matching a filter costs 1 ms (thousands of scripts); a one-element block 0.1 ms."""
    costs = _Costs()
    costs.filtered(1, 0.001)
    costs.applied(0.003, touched=False, elements=1, small=True)  # a new connection's read
    costs.applied(0.0001, touched=False, elements=1, small=True)
    return costs


def test_small_blocks_are_read_instead_of_matched_for_a_big_wallet() -> None:
    costs = big_wallet()
    assert costs.read_instead(0) and costs.read_instead(3)
    assert not costs.read_instead(40)  # 20x the cheapest block: 2 ms, more than a match
    # Read for their size, they stay out of the average that switches filters off.
    assert costs.block_s is None and not costs.filters_cost_more()


def test_a_small_wallet_matches_even_small_blocks() -> None:
    costs = _Costs()
    costs.filtered(1, 0.00003)  # 100 scripts: 30 us a filter
    costs.applied(0.0001, touched=False, elements=1, small=True)
    assert not costs.read_instead(0)
    assert costs.probing()  # no read was cheaper than a match: keep sampling a few


def test_nothing_is_read_for_its_size_before_a_read_was_timed() -> None:
    costs = _Costs()
    costs.filtered(1, 0.001)
    assert not costs.read_instead(0) and costs.probing()
    assert not big_wallet().probing()
