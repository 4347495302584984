"""The pure inputs of a decision, built from one tick's snapshots: the market view (price
histories, the risk-free rate, high-water marks) and the cost model (gas at the fee a NORMAL
action would pay, the CRITICAL cap, venue fees). No I/O: the service reads, this shapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from eth_typing import ChecksumAddress

from keeper.chain.convert import nav_high_water_usd
from keeper.chain.snapshot import VaultSnapshot
from keeper.risk.actions import Urgency
from keeper.risk.types import Costs, MarketView, histories_from
from keeper.tx.fees import FeeInputs, FeePolicy, expected_tip

#: Annualised risk-free rate for option greeks: the lending pool's USDC rate is the fair proxy.
RISK_FREE_RATE = 0.05
#: Expected swap price impact assumed by the cost model, bps (the venue's fee comes from chain).
SWAP_IMPACT_BPS = 5.0
#: Symbols whose price is the chain's native token price (gas is paid in it).
NATIVE_SYMBOLS = ("WETH", "ETH")
#: Wei per native token, for the USD price of gas (floats: this feeds the risk core only).
WEI_PER_NATIVE = 1e18

Series = tuple[list[float], list[float]]


def market_view(
    snaps: Sequence[VaultSnapshot],
    symbols: Mapping[ChecksumAddress, str],
    series_of: Mapping[ChecksumAddress, Series],
    now: int,
    max_staleness_s: int,
) -> MarketView:
    """The market every vault is decided against: one price history per symbol (from its
    feed's rounds in `series_of`; a symbol with fewer than two points has none)."""
    series: dict[str, Series] = {}
    for s in snaps:
        for a in s.assets:
            sym = symbols.get(a.token, a.token)
            if sym not in series and a.price_feed in series_of:
                series[sym] = series_of[a.price_feed]
    return MarketView(
        now=now,
        risk_free_rate=RISK_FREE_RATE,
        histories=histories_from({k: v for k, v in series.items() if len(v[0]) >= 2}),
        max_staleness_s=max_staleness_s,
        nav_high_water_usd={s.vault: nav_high_water_usd(s) for s in snaps},
    )


def costs(
    snaps: Sequence[VaultSnapshot],
    symbols: Mapping[ChecksumAddress, str],
    fees: FeeInputs,
    policy: FeePolicy,
) -> Costs:
    """Gas priced at this block's base fee plus the tip a NORMAL action would offer
    (`expected_tip`, the sender's own estimate) and at the CRITICAL cap, in USD through the
    native token's feed price; venue fees from the first snapshot (one venue per chain)."""
    native = next(
        (
            a.price / 1e18
            for s in snaps
            for a in s.assets
            if symbols.get(a.token) in NATIVE_SYMBOLS
        ),
        0.0,
    )
    tip = expected_tip(fees, Urgency.NORMAL, policy)
    first = snaps[0]
    return Costs(
        gas_price_usd_per_gas=(fees.base_fee + tip) / WEI_PER_NATIVE * native,
        critical_gas_price_usd_per_gas=policy.cap_for(Urgency.CRITICAL) / WEI_PER_NATIVE * native,
        swap_fee_bps=float(first.swap_fee_bps),
        swap_slippage_bps=SWAP_IMPACT_BPS,
        perp_fee_bps=float(first.perp_fee_bps),
    )


__all__ = ["NATIVE_SYMBOLS", "RISK_FREE_RATE", "SWAP_IMPACT_BPS", "costs", "market_view"]
