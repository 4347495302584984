"""Snapshot integers → risk-core floats, the one place where chain units become floats.

Conversions are exact divisions by the unit (WAD, 10**decimals, USDC's 10**6); the only
judgement here is clamping: a negative perp margin (bad debt) reads as 0 margin, and the
"infinite" health the contract reports stays out of the state (the risk core recomputes it).
"""

from __future__ import annotations

from collections.abc import Mapping

from eth_typing import ChecksumAddress

from keeper.chain.snapshot import AssetSnapshot, VaultSnapshot
from keeper.risk.types import AssetState, Mandate, OptionPosition, PerpPosition, VaultState

WAD = 10**18
USDC_UNIT = 10**6


def asset_symbol(asset: AssetSnapshot, symbols: Mapping[ChecksumAddress, str]) -> str:
    return symbols.get(asset.token, asset.token)


def to_mandate(snap: VaultSnapshot) -> Mandate:
    m = snap.mandate
    return Mandate(
        target_vol=m.target_vol / WAD,
        max_leverage=m.max_leverage / WAD,
        min_health=m.min_health / WAD,
        hedge_target=m.hedge_target / WAD,
        hedge_band=m.hedge_band / WAD,
        cppi_floor=m.cppi_floor / WAD,
        cppi_multiplier=m.cppi_multiplier / WAD,
        kelly_fraction=m.kelly_fraction / WAD,
        max_slippage_bps=int(m.max_slippage_bps),
    )


def to_vault_state(snap: VaultSnapshot, symbols: Mapping[ChecksumAddress, str]) -> VaultState:
    """The risk core's view of one snapshot. Assets are named by their token symbol."""
    assets = []
    perps = []
    for a in snap.assets:
        sym = asset_symbol(a, symbols)
        unit = 10**a.decimals
        assets.append(
            AssetState(
                symbol=sym,
                collateral=a.collateral / unit,
                idle=a.idle / unit,
                price_usd=a.price / WAD,
                price_updated_at=a.price_updated_at,
                liquidation_threshold=a.liquidation_threshold / WAD,
                ltv=a.ltv / WAD,
                implied_vol=a.implied_vol / WAD,
                implied_vol_updated_at=a.vol_updated_at,
            )
        )
        if a.perp_size != 0:
            perps.append(
                PerpPosition(
                    underlying=sym,
                    size=a.perp_size / WAD,
                    entry_price=a.perp_entry_price / WAD,
                    unrealized_pnl_usd=a.perp_pnl / USDC_UNIT,
                    maintenance_fraction=a.perp_maintenance_margin / WAD,
                )
            )
    by_token = {a.token: a for a in snap.assets}
    options = []
    for o in snap.options:
        underlying = by_token.get(o.underlying)
        if underlying is None or o.size == 0:
            continue
        options.append(
            OptionPosition(
                underlying=asset_symbol(underlying, symbols),
                is_call=o.is_call,
                strike=o.strike / WAD,
                expiry=o.expiry,
                size=o.size / WAD,
                mark_usd=o.mark / WAD,
                implied_vol=underlying.implied_vol / WAD,
                # A call's collateral is underlying tokens, a put's is USDC.
                locked_underlying=o.collateral / 10**underlying.decimals if o.is_call else 0.0,
                locked_usdc=0.0 if o.is_call else o.collateral / USDC_UNIT,
            )
        )
    return VaultState(
        address=snap.vault,
        block=snap.block_number,
        timestamp=snap.timestamp,
        nav_usd=snap.total_assets / USDC_UNIT,
        idle_usdc=snap.idle_usdc / USDC_UNIT,
        debt_usdc=snap.debt / USDC_UNIT,
        perp_margin_usd=max(snap.perp_margin, 0) / USDC_UNIT,
        assets=tuple(assets),
        perps=tuple(perps),
        options=tuple(options),
        paused=snap.paused,
        last_action_at=snap.last_action_at,
    )


def nav_high_water_usd(snap: VaultSnapshot) -> float:
    """The NAV the share-price high-water mark implies now (USD): HWM × shares."""
    return snap.high_water_mark / WAD * snap.total_supply / USDC_UNIT
