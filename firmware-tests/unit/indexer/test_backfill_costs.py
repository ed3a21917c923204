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
