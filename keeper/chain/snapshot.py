"""Typed view of `RiskVault.snapshot()`: integers in the units the contract documents."""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from typing import Any, TypeVar

from eth_typing import ChecksumAddress
from web3 import Web3

from keeper.errors import ChainReadError

#: Health and leverage the contract reports as "infinite" (no debt, no perps, zero NAV).
UINT256_MAX = 2**256 - 1
BPS = 10_000

#: Marks a field that `snapshot()` does not return: the reader fills it from another call of the
#: same multicall. Left out of ABI decoding and of equality (two reads of the same `snapshot()`
#: compare equal whether or not the venue was quoted alongside).
_NOT_ABI: dict[str, bool] = {"abi": False}


@dataclass(frozen=True, slots=True)
class Mandate:
    target_vol: int  # WAD
    max_leverage: int  # WAD
    min_health: int  # WAD
    hedge_target: int  # WAD, signed
    hedge_band: int  # WAD
    cppi_floor: int  # WAD
    cppi_multiplier: int  # WAD
    kelly_fraction: int  # WAD
    max_slippage_bps: int


@dataclass(frozen=True, slots=True)
class AssetSnapshot:
    token: ChecksumAddress
    decimals: int
    price_feed: ChecksumAddress
    price: int  # USD WAD
    price_updated_at: int
    price_round: int
    vol_feed: ChecksumAddress
    implied_vol: int  # WAD
    vol_updated_at: int
    collateral: int  # token units
    idle: int  # token units
    ltv: int  # WAD
    liquidation_threshold: int  # WAD
    perp_size: int  # 1e18 units, signed
    perp_entry_price: int  # USD WAD
    perp_pnl: int  # USDC units, net of funding
    perp_maintenance_margin: int  # WAD
    #: The swap venue's price of one whole token, USD WAD, its fee and impact backed out
    #: (`venue_mid_wad`); 0 when not read (not quoted yet, or the venue refused to quote).
    venue_price: int = field(default=0, compare=False, metadata=_NOT_ABI)
    #: The feed the venue lists this token against (None when not read).
    venue_feed: ChecksumAddress | None = field(default=None, compare=False, metadata=_NOT_ABI)


@dataclass(frozen=True, slots=True)
class OptionSnapshot:
    series_id: int
    underlying: ChecksumAddress
    is_call: bool
    strike: int  # USD WAD
    expiry: int
    size: int  # 1e18 units, signed
    collateral: int
    mark: int  # USD WAD per unit
    mark_updated_at: int


@dataclass(frozen=True, slots=True)
class VaultSnapshot:
    vault: ChecksumAddress
    block_number: int
    timestamp: int
    total_assets: int  # USDC units (NAV)
    total_supply: int
    high_water_mark: int  # WAD
    idle_usdc: int
    debt: int
    lending_health: int  # WAD
    perp_margin: int
    perp_account_value: int
    perp_health: int  # WAD
    health: int  # WAD
    leverage: int  # WAD
    swap_fee_bps: int
    perp_fee_bps: int
    max_price_age: int
    paused: bool
    last_action_at: int
    mandate: Mandate
    assets: tuple[AssetSnapshot, ...]
    options: tuple[OptionSnapshot, ...]

    def asset(self, token: str) -> AssetSnapshot:
        for a in self.assets:
            if a.token.lower() == token.lower():
                return a
        raise KeyError(token)


def _addr(value: Any) -> ChecksumAddress:
    return Web3.to_checksum_address(value)


_T = TypeVar("_T")


def _abi_fields(cls: type[Any]) -> list[Field[Any]]:
    return [f for f in fields(cls) if f.metadata.get("abi", True)]


def _build(cls: type[_T], values: Any) -> _T:
    """`cls` from positional ABI values; address fields are checksummed. Raises ValueError on
    a length mismatch (an ABI that is not the one this keeper knows)."""
    kwargs = {
        f.name: _addr(v) if f.type == "ChecksumAddress" else v
        for f, v in zip(_abi_fields(cls), values, strict=True)
    }
    return cls(**kwargs)


def decode_snapshot(vault: str, raw: tuple[Any, ...] | list[Any]) -> VaultSnapshot:
    """Build a VaultSnapshot from the ABI-decoded `snapshot()` tuple (struct field order)."""
    try:
        *head, mandate, assets, options = raw
        return _build(
            VaultSnapshot,
            [
                vault,
                *head,
                _build(Mandate, mandate),
                tuple(_build(AssetSnapshot, a) for a in assets),
                tuple(_build(OptionSnapshot, o) for o in options),
            ],
        )
    except (TypeError, ValueError) as exc:
        raise ChainReadError(
            f"vault {vault}: snapshot() returned an unexpected shape ({exc})"
        ) from None


def venue_mid_wad(amount_out: int, usdc_decimals: int, fee_bps: int, impact_bps: int) -> int:
    """The venue's price (USD WAD) for one whole token, from `SwapVenue.quote(token, usdc,
    10**decimals)`: the quote is value × (1 − fee − impact), so the USDC out, scaled to WAD, is
    divided by (BPS − fee − impact) / BPS. Floored; the quote's own flooring of `amount_out`
    makes this low by under one USDC unit (1e-6 USD). 0 when fee + impact leave nothing."""
    net_bps = BPS - fee_bps - impact_bps
    if amount_out <= 0 or net_bps <= 0 or usdc_decimals > 18:
        return 0
    return int(amount_out * 10 ** (18 - usdc_decimals) * BPS // net_bps)


def wad_to_float(value: int) -> float:
    """WAD fixed point to float; the contract's 'infinite' (uint256 max) reads as inf."""
    return float("inf") if value >= UINT256_MAX else value / 10**18
