"""Typed view of `RiskVault.snapshot()`: integers in the units the contract documents."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

from eth_typing import ChecksumAddress
from web3 import Web3

from keeper.errors import ChainReadError

#: Health and leverage the contract reports as "infinite" (no debt, no perps, zero NAV).
UINT256_MAX = 2**256 - 1


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


def _build(cls: type[_T], values: Any) -> _T:
    """`cls` from positional ABI values; address fields are checksummed. Raises ValueError on
    a length mismatch (an ABI that is not the one this keeper knows)."""
    kwargs = {
        f.name: _addr(v) if f.type == "ChecksumAddress" else v
        for f, v in zip(fields(cls), values, strict=True)  # type: ignore[arg-type]
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


def wad_to_float(value: int) -> float:
    """WAD fixed point to float; the contract's 'infinite' (uint256 max) reads as inf."""
    return float("inf") if value >= UINT256_MAX else value / 10**18
