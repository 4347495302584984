"""Fee pipeline: hand-computed offers, bump properties, the fetch on the in-process chain."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from web3.exceptions import Web3RPCError

from keeper.devnet.tester import in_process_web3
from keeper.errors import ChainReadError, ConfigError, NotRetryable
from keeper.risk.actions import Urgency
from keeper.tx.fees import (
    FeeCapTooLow,
    FeeInputError,
    FeeInputs,
    FeePolicy,
    Fees,
    Wei,
    bump_fees,
    bump_schedule,
    fetch_fee_inputs,
    gwei,
    next_base_fee,
    should_wait,
    suggest_fees,
)

GWEI = 10**9


def policy(**kw: Any) -> FeePolicy:
    """Caps 30/60/150/500 gwei, waits above 25 gwei, tips in [0.5, 5] gwei, 12.5 % bumps."""
    base: dict[str, Any] = dict(
        max_fee_cap={"LOW": 30 * GWEI, "NORMAL": 60 * GWEI, "HIGH": 150 * GWEI,
                     "CRITICAL": 500 * GWEI},
        acceptable_base_fee=25 * GWEI,
        priority_fee_min=GWEI // 2,
        priority_fee_max=5 * GWEI,
        bump_percent=12.5,
        max_replacements=5,
    )
    base.update(kw)
    return FeePolicy(**base)


def inputs(base_fee: int = 10 * GWEI, samples: tuple[int, ...] = (), fallback: int | None = None,
           block: int = 100) -> FeeInputs:
    return FeeInputs(base_fee, samples, fallback, block)


def fees(max_fee: int, tip: int) -> Fees:
    return Fees(Wei(max_fee), Wei(tip))


# --- suggest_fees: hand-computed ----------------------------------------------------------------


def test_median_of_paid_samples_ignores_empty_blocks() -> None:
    # zeros (empty blocks) dropped → median of 2, 3, 4 gwei = 3; max = 2 × 10 + 3
    out = suggest_fees(inputs(samples=(2 * GWEI, 0, 4 * GWEI, 3 * GWEI, 0)), Urgency.NORMAL,
                       policy())
    assert out == fees(23 * GWEI, 3 * GWEI)


def test_even_sample_count_takes_the_upper_half_wei() -> None:
    out = suggest_fees(inputs(samples=(GWEI, 2 * GWEI + 1)), Urgency.LOW, policy())
    assert out.max_priority_fee_per_gas == 1_500_000_001  # ⌈(1e9 + 2e9 + 1) / 2⌉


def test_urgency_raises_tip_and_headroom() -> None:
    market = inputs(samples=(3 * GWEI,))
    assert suggest_fees(market, Urgency.LOW, policy()) == fees(23 * GWEI, 3 * GWEI)
    # HIGH: tip × 1.5 = 4.5 gwei, max = 3 × 10 + 4.5
    assert suggest_fees(market, Urgency.HIGH, policy()) == fees(34_500_000_000, 4_500_000_000)
    # CRITICAL: tip × 2 = 6 → clamped to 5 gwei, max = 4 × 10 + 5
    assert suggest_fees(market, Urgency.CRITICAL, policy()) == fees(45 * GWEI, 5 * GWEI)


def test_fallback_when_fee_history_has_no_rewards() -> None:
    # eth-tester: no rewards, eth_maxPriorityFeePerGas = 1 gwei
    out = suggest_fees(inputs(fallback=GWEI), Urgency.NORMAL, policy())
    assert out == fees(21 * GWEI, GWEI)
    assert suggest_fees(inputs(samples=(0, 0), fallback=GWEI), Urgency.NORMAL, policy()) == out


def test_no_samples_no_fallback_offers_the_minimum_tip() -> None:
    assert suggest_fees(inputs(), Urgency.NORMAL, policy()) == fees(20_500_000_000, GWEI // 2)


def test_tip_is_clamped_before_and_after_the_urgency_factor() -> None:
    # 1 wei → min 0.5 gwei → HIGH × 1.5 = 0.75 gwei (urgent still outbids)
    out = suggest_fees(inputs(fallback=1), Urgency.HIGH, policy())
    assert out.max_priority_fee_per_gas == 750_000_000
    out = suggest_fees(inputs(samples=(80 * GWEI,)), Urgency.NORMAL, policy())
    assert out.max_priority_fee_per_gas == 5 * GWEI


def test_cap_binds_the_max_fee() -> None:
    # LOW: 2 × 20 + 3 = 43 gwei > cap 30 → 30; tip untouched
    out = suggest_fees(inputs(base_fee=20 * GWEI, samples=(3 * GWEI,)), Urgency.LOW, policy())
    assert out == fees(30 * GWEI, 3 * GWEI)


def test_cap_below_base_fee_plus_min_tip_raises_not_retryable() -> None:
    market = inputs(base_fee=29_600_000_000)  # + 0.5 gwei min tip = 30.1 > LOW cap 30
    with pytest.raises(FeeCapTooLow) as info:
        suggest_fees(market, Urgency.LOW, policy())
    assert isinstance(info.value, NotRetryable)
    assert not info.value.retryable
    assert (info.value.base_fee, info.value.cap) == (29_600_000_000, 30 * GWEI)
    assert "29.6 gwei" in str(info.value)
    # exactly base + min tip fits
    assert suggest_fees(inputs(base_fee=29_500_000_000), Urgency.LOW, policy()) == fees(
        30 * GWEI, GWEI // 2
    )


def test_should_wait_only_for_non_urgent_above_acceptable() -> None:
    high = inputs(base_fee=25 * GWEI + 1)
    at = inputs(base_fee=25 * GWEI)
    assert should_wait(high, Urgency.LOW, policy())
    assert should_wait(high, Urgency.NORMAL, policy())
    assert not should_wait(at, Urgency.NORMAL, policy())
    very_high = inputs(base_fee=1_000 * GWEI)
    assert not should_wait(very_high, Urgency.HIGH, policy())
    assert not should_wait(very_high, Urgency.CRITICAL, policy())


# --- values and validation ----------------------------------------------------------------------


def test_as_tx_params_is_a_new_dict_each_time() -> None:
    offer = fees(30 * GWEI, 2 * GWEI)
    params = offer.as_tx_params()
    assert params == {"maxFeePerGas": 30 * GWEI, "maxPriorityFeePerGas": 2 * GWEI}
    params["maxFeePerGas"] = Wei(1)
    assert offer.as_tx_params()["maxFeePerGas"] == 30 * GWEI
    assert offer.as_tx_params() is not offer.as_tx_params()
    assert offer.describe() == "max 30 gwei, tip 2 gwei"


def test_fees_reject_tip_above_max_and_negatives() -> None:
    with pytest.raises(FeeInputError):
        fees(1, 2)
    with pytest.raises(FeeInputError):
        fees(-1, 0)
    with pytest.raises(FeeInputError):
        FeeInputs(-1, (), None, 0)
    with pytest.raises(FeeInputError):
        FeeInputs(1, (-5,), None, 0)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(bump_percent=12.4), "bump_percent"),
        (dict(bump_percent=math.nan), "bump_percent"),
        (dict(max_fee_cap={"LOW": 1, "NORMAL": 2, "HIGH": 3}), "CRITICAL"),
        (dict(max_fee_cap={"LOW": 5, "NORMAL": 4, "HIGH": 6, "CRITICAL": 7}), "rise"),
        (dict(max_fee_cap={"LOW": 0, "NORMAL": 4, "HIGH": 6, "CRITICAL": 7}), "LOW"),
        (dict(priority_fee_min=6 * GWEI), "priority_fee_min"),
        (dict(max_replacements=-1), "max_replacements"),
    ],
)
def test_policy_validation(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policy(**change)


def test_policy_accepts_urgency_or_lower_case_keys_and_freezes_caps() -> None:
    p = policy(max_fee_cap={Urgency.LOW: 1, "normal": 2, "HIGH": 3, "Critical": 4})
    assert [p.cap_for(u) for u in Urgency] == [1, 2, 3, 4]
    with pytest.raises(TypeError):
        p.max_fee_cap["LOW"] = 10  # type: ignore[index]


def test_gwei_formatting_is_exact() -> None:
    assert gwei(1_500_000_000) == "1.5 gwei"
    assert gwei(1) == "0.000000001 gwei"
    assert gwei(0) == "0 gwei"


def test_next_base_fee_by_eip1559() -> None:
    assert next_base_fee(GWEI, 0, 60_000_000) == 875_000_000  # empty: −12.5 %
    assert next_base_fee(GWEI, 60_000_000, 60_000_000) == 1_125_000_000  # full: +12.5 %
    assert next_base_fee(GWEI, 30_000_000, 60_000_000) == GWEI  # at target
    assert next_base_fee(7, 30_000_001, 60_000_000) == 8  # above target: at least +1 wei


# --- bump_fees ----------------------------------------------------------------------------------


def test_bump_is_twelve_and_a_half_percent_on_both_fields() -> None:
    out = bump_fees(fees(20 * GWEI, 2 * GWEI), inputs(base_fee=5 * GWEI), Urgency.NORMAL,
                    policy())
    assert out == fees(22_500_000_000, 2_250_000_000)


def test_bump_rounds_up() -> None:
    tiny = policy(priority_fee_min=0, priority_fee_max=0)
    out = bump_fees(fees(9, 1), inputs(base_fee=0), Urgency.NORMAL, tiny)
    assert out == fees(11, 2)  # ⌈10.125⌉, ⌈1.125⌉ — flooring would give a refused 11.1 % bump


def test_bump_catches_up_with_a_base_fee_jump() -> None:
    # HIGH now suggests 3 × 45 + 0.75 = 135.75 gwei, far above 1.125 × 20
    out = bump_fees(fees(20 * GWEI, 2 * GWEI), inputs(base_fee=45 * GWEI), Urgency.HIGH,
                    policy())
    assert out == fees(135_750_000_000, 2_250_000_000)


def test_bump_capped_or_none() -> None:
    # suggestion above the cap is capped; the 12.5 % bump still fits
    out = bump_fees(fees(26 * GWEI, GWEI), inputs(base_fee=20 * GWEI), Urgency.LOW, policy())
    assert out == fees(30 * GWEI, 1_125_000_000)
    # 1.125 × 27 gwei = 30.375 > 30: no replacement is possible
    assert bump_fees(fees(27 * GWEI, GWEI), inputs(), Urgency.LOW, policy()) is None


def test_bump_schedule_is_geometric_and_stops_at_the_cap() -> None:
    first = suggest_fees(inputs(base_fee=5 * GWEI), Urgency.LOW, policy())
    assert first == fees(10_500_000_000, 500_000_000)
    offers = bump_schedule(first, inputs(base_fee=5 * GWEI), Urgency.LOW, policy())
    assert [o.max_fee_per_gas for o in offers] == [
        10_500_000_000, 11_812_500_000, 13_289_062_500, 14_950_195_313, 16_818_969_728,
        18_921_340_944,
    ]  # five bumps (max_replacements), each ⌈× 1.125⌉
    short = bump_schedule(first, inputs(base_fee=5 * GWEI), Urgency.LOW,
                          policy(max_replacements=50))
    assert short[-1].max_fee_per_gas <= 30 * GWEI < math.ceil(short[-1].max_fee_per_gas * 1.125)
    assert len(short) == 9  # 10.5 × 1.125⁸ ≈ 26.9 ≤ 30 < 10.5 × 1.125⁹ ≈ 30.3 gwei


@st.composite
def scenario(draw: st.DrawFn) -> tuple[FeePolicy, FeeInputs, Urgency]:
    caps = sorted(draw(st.lists(st.integers(1, 10**13), min_size=4, max_size=4)))
    tip_min = draw(st.integers(0, 10**10))
    tip_max = draw(st.integers(tip_min, 2 * 10**10))
    p = FeePolicy(
        max_fee_cap={u.name: c for u, c in zip(Urgency, caps, strict=True)},
        acceptable_base_fee=draw(st.integers(0, 10**12)),
        priority_fee_min=tip_min,
        priority_fee_max=tip_max,
        bump_percent=draw(st.sampled_from([12.5, 12.6, 15.0, 20.0, 33.3, 100.0])),
        max_replacements=draw(st.integers(0, 60)),
    )
    market = FeeInputs(
        base_fee=draw(st.integers(0, 10**13)),
        priority_samples=tuple(draw(st.lists(st.integers(0, 10**11), max_size=6))),
        fallback_priority=draw(st.none() | st.integers(0, 10**11)),
        block=1,
    )
    return p, market, draw(st.sampled_from(list(Urgency)))


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_property_suggestion_respects_bounds(case: tuple[FeePolicy, FeeInputs, Urgency]) -> None:
    p, market, urgency = case
    cap = p.cap_for(urgency)
    if cap < market.base_fee + p.priority_fee_min:
        with pytest.raises(FeeCapTooLow):
            suggest_fees(market, urgency, p)
        return
    out = suggest_fees(market, urgency, p)
    assert p.priority_fee_min <= out.max_priority_fee_per_gas <= out.max_fee_per_gas <= cap
    assert out.max_priority_fee_per_gas <= p.priority_fee_max
    if urgency < Urgency.CRITICAL:  # more urgency never offers a lower tip or max fee
        more = Urgency(urgency + 1)
        if p.cap_for(more) >= market.base_fee + p.priority_fee_min:
            higher = suggest_fees(market, more, p)
            assert higher.max_priority_fee_per_gas >= out.max_priority_fee_per_gas
            assert higher.max_fee_per_gas >= out.max_fee_per_gas


@settings(max_examples=300, deadline=None)
@given(scenario(), st.integers(0, 10**13))
def test_property_successive_bumps(case: tuple[FeePolicy, FeeInputs, Urgency],
                                   later_base_fee: int) -> None:
    p, market, urgency = case
    cap = p.cap_for(urgency)
    factor = 1 + Fraction(p.bump_percent) / 100
    offer = bump_fees(fees(0, 0), market, urgency, p)  # the suggestion, even above base + tip
    assert offer is not None
    later = FeeInputs(later_base_fee, market.priority_samples, market.fallback_priority, 2)
    for step in range(200):
        bumped = bump_fees(offer, later if step % 2 else market, urgency, p)
        if bumped is None:  # only when the bump itself would pass the cap
            assert math.ceil(offer.max_fee_per_gas * factor) > cap or math.ceil(
                offer.max_priority_fee_per_gas * factor) > cap
            break
        assert bumped.max_fee_per_gas >= offer.max_fee_per_gas * factor
        assert bumped.max_priority_fee_per_gas >= offer.max_priority_fee_per_gas * factor
        assert bumped.max_priority_fee_per_gas <= bumped.max_fee_per_gas <= cap
        offer = bumped
    else:  # a geometric schedule reaches any cap; only a zero offer stays put
        assert offer.max_fee_per_gas == 0


# --- fetch_fee_inputs ---------------------------------------------------------------------------


class FakeEth:
    def __init__(self, history: dict[str, Any], tip: int | Exception) -> None:
        self.history = history
        self.tip = tip
        self.calls: list[tuple[Any, ...]] = []

    def fee_history(self, blocks: int, newest: str, percentiles: list[float]) -> dict[str, Any]:
        self.calls.append((blocks, newest, percentiles))
        return self.history

    @property
    def max_priority_fee(self) -> int:
        if isinstance(self.tip, Exception):
            raise self.tip
        return self.tip


class FakeWeb3:
    def __init__(self, eth: FakeEth) -> None:
        self.eth = eth


def test_fetch_reads_the_standard_shape() -> None:
    history = {
        "oldestBlock": 100,
        "baseFeePerGas": [10, 11, 12, 13],  # blocks 100..102, then the next block's
        "gasUsedRatio": [0.6, 0.6, 0.6],
        "reward": [[2 * GWEI], [0], [4 * GWEI]],
    }
    eth = FakeEth(history, Web3RPCError("method not found"))
    got = fetch_fee_inputs(FakeWeb3(eth), reward_percentile=40.0, blocks=3)  # type: ignore[arg-type]
    assert got == FeeInputs(13, (2 * GWEI, 0, 4 * GWEI), None, 102)
    assert eth.calls == [(3, "latest", [40.0])]


def test_fetch_errors_become_chain_read_errors() -> None:
    class Down(FakeEth):
        def fee_history(self, blocks: int, newest: str, percentiles: list[float]) -> Any:
            raise ConnectionError("refused")

    with pytest.raises(ChainReadError, match="refused"):
        fetch_fee_inputs(FakeWeb3(Down({}, 0)))  # type: ignore[arg-type]
    with pytest.raises(FeeInputError):
        fetch_fee_inputs(FakeWeb3(FakeEth({}, 0)), reward_percentile=101)  # type: ignore[arg-type]


def _independent_next_base_fee(block: Any) -> int:
    """EIP-1559, written out again from the spec for the cross-check."""
    parent_fee, used, target = block["baseFeePerGas"], block["gasUsed"], block["gasLimit"] // 2
    if used == target:
        return int(parent_fee)
    if used > target:
        return int(parent_fee + max(parent_fee * (used - target) // target // 8, 1))
    return int(parent_fee - parent_fee * (target - used) // target // 8)


def test_fetch_on_the_in_process_chain() -> None:
    w3 = in_process_web3()
    for round_ in range(3):
        got = fetch_fee_inputs(w3)
        latest = w3.eth.get_block("latest")
        assert got.priority_samples == ()  # eth-tester never fills rewards
        assert got.fallback_priority == GWEI  # its fixed eth_maxPriorityFeePerGas
        assert got.block == latest["number"]
        expected = _independent_next_base_fee(latest)
        assert got.base_fee == expected == w3.eth.get_block("pending")["baseFeePerGas"]
        if round_ == 0:
            assert got.base_fee == 875_000_000  # genesis 1 gwei, empty block: −12.5 %
        offer = suggest_fees(got, Urgency.NORMAL, policy())
        assert offer == fees(2 * expected + GWEI, GWEI)
        sender, receiver = w3.eth.accounts[:2]
        w3.eth.send_transaction(
            {"from": sender, "to": receiver, "value": 1, **offer.as_tx_params()}
        )
