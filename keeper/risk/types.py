"""Domain values the risk core reads: a vault's state, its mandate, the market view, costs.

All amounts are floats already converted from on-chain integers by the chain reader: USD for
values, whole token units for amounts (ETH, BTC), unix seconds for times, plain fractions for
ratios (0.80, not 8000 bps) except where a field name says ``_bps``. Every value validates itself
on construction and raises `RiskInputError` naming the field.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from keeper.errors import RiskInputError
from keeper.risk.validation import AnyFloatArray, as_float_array, at_least, finite, in_range

logger = logging.getLogger(__name__)

#: Seconds in a (365-day) year: feeds are crypto, which trade every day.
SECONDS_PER_YEAR: float = 365.0 * 86_400.0


def _frozen_map(name: str, value: Mapping[str, float]) -> Mapping[str, float]:
    out = {}
    for key, v in value.items():
        out[str(key)] = finite(f"{name}[{key!r}]", v)
    return MappingProxyType(out)


@dataclass(frozen=True, slots=True)
class AssetState:
    """One risky asset of the vault (an underlying such as ETH) and its feeds."""

    symbol: str
    #: Collateral supplied to the lending pool, in token units.
    collateral: float
    #: Tokens held idle by the vault itself, in token units.
    idle: float
    price_usd: float
    #: Unix seconds of the price feed's latest round.
    price_updated_at: int
    #: Fraction of collateral value counted by the lending health factor (e.g. 0.80).
    liquidation_threshold: float
    #: Fraction of collateral value that may be borrowed against (e.g. 0.75).
    ltv: float
    #: Annualised implied volatility from the underlying's IV feed.
    implied_vol: float
    implied_vol_updated_at: int

    def __post_init__(self) -> None:
        at_least(f"{self.symbol}.collateral", self.collateral, 0.0)
        at_least(f"{self.symbol}.idle", self.idle, 0.0)
        if finite(f"{self.symbol}.price_usd", self.price_usd) <= 0.0:
            raise RiskInputError(f"{self.symbol}.price_usd: must be > 0, got {self.price_usd}")
        in_range(f"{self.symbol}.liquidation_threshold", self.liquidation_threshold, 0.0, 1.0)
        in_range(f"{self.symbol}.ltv", self.ltv, 0.0, self.liquidation_threshold)
        at_least(f"{self.symbol}.implied_vol", self.implied_vol, 0.0)


@dataclass(frozen=True, slots=True)
class PerpPosition:
    """The vault's linear perpetual position on one underlying."""

    underlying: str
    #: Signed size in underlying units; negative is short.
    size: float
    entry_price: float
    unrealized_pnl_usd: float
    #: Maintenance margin as a fraction of notional (e.g. 0.05).
    maintenance_fraction: float

    def __post_init__(self) -> None:
        finite(f"perp[{self.underlying}].size", self.size)
        at_least(f"perp[{self.underlying}].entry_price", self.entry_price, 0.0)
        finite(f"perp[{self.underlying}].unrealized_pnl_usd", self.unrealized_pnl_usd)
        in_range(
            f"perp[{self.underlying}].maintenance_fraction", self.maintenance_fraction, 0.0, 1.0
        )


@dataclass(frozen=True, slots=True)
class OptionPosition:
    """A European cash-settled option series held (or written) by the vault."""

    underlying: str
    is_call: bool
    strike: float
    #: Unix seconds.
    expiry: int
    #: Signed size in underlying units; negative is short (written).
    size: float
    #: Mark price per unit of underlying, USD.
    mark_usd: float
    #: Annualised implied volatility from the IV feed of the underlying.
    implied_vol: float
    #: Collateral locked against a written series: a call locks underlying tokens (whole units;
    #: each is still the vault's, valued at spot in NAV, so it carries delta one), a put locks
    #: USDC. Both 0 for a long position.
    locked_underlying: float = 0.0
    locked_usdc: float = 0.0

    def __post_init__(self) -> None:
        name = f"option[{self.underlying} {self.strike} {self.expiry}]"
        if finite(f"{name}.strike", self.strike) <= 0.0:
            raise RiskInputError(f"{name}.strike: must be > 0, got {self.strike}")
        finite(f"{name}.size", self.size)
        at_least(f"{name}.mark_usd", self.mark_usd, 0.0)
        at_least(f"{name}.implied_vol", self.implied_vol, 0.0)
        at_least(f"{name}.locked_underlying", self.locked_underlying, 0.0)
        at_least(f"{name}.locked_usdc", self.locked_usdc, 0.0)


@dataclass(frozen=True, slots=True)
class VaultState:
    """One vault at one block, as ``RiskVault.snapshot()`` reports it (floats)."""

    #: Opaque identifier (the vault's address).
    address: str
    block: int
    #: Block timestamp, unix seconds.
    timestamp: int
    nav_usd: float
    idle_usdc: float
    #: Lending debt in USDC including accrued interest.
    debt_usdc: float
    #: The vault's single margin account in the perp market (cross-margin over underlyings).
    perp_margin_usd: float
    assets: tuple[AssetState, ...]
    perps: tuple[PerpPosition, ...] = ()
    options: tuple[OptionPosition, ...] = ()
    paused: bool = False
    last_action_at: int = 0

    def __post_init__(self) -> None:
        at_least("nav_usd", self.nav_usd, 0.0)
        at_least("idle_usdc", self.idle_usdc, 0.0)
        at_least("debt_usdc", self.debt_usdc, 0.0)
        at_least("perp_margin_usd", self.perp_margin_usd, 0.0)
        symbols = [a.symbol for a in self.assets]
        if len(set(symbols)) != len(symbols):
            raise RiskInputError(f"assets: duplicate symbols {symbols}")
        perp_names = [p.underlying for p in self.perps]
        if len(set(perp_names)) != len(perp_names):
            raise RiskInputError(f"perps: more than one position per underlying {perp_names}")
        known = set(symbols)
        for name in perp_names + [o.underlying for o in self.options]:
            if name not in known:
                raise RiskInputError(f"perps/options: underlying {name!r} is not in assets")

    def asset(self, symbol: str) -> AssetState:
        """The asset with this symbol; `RiskInputError` if the vault holds none."""
        for a in self.assets:
            if a.symbol == symbol:
                return a
        raise RiskInputError(f"symbol: vault {self.address} has no asset {symbol!r}")


@dataclass(frozen=True, slots=True)
class Mandate:
    """The vault's on-chain risk mandate, set by the strategist (fractions, not bps)."""

    #: Annualised volatility the spot book is levered to.
    target_vol: float
    #: Ceiling on balance-sheet leverage (spot collateral value / NAV).
    max_leverage: float
    #: Deleverage when the binding health factor is below this.
    min_health: float
    #: Target net delta as a signed fraction of NAV in USD (0 = delta-neutral).
    hedge_target: float
    #: Minimum half-width of the no-trade band around the hedge target, fraction of NAV.
    hedge_band: float
    #: CPPI floor as a fraction of the NAV high-water mark.
    cppi_floor: float
    cppi_multiplier: float
    #: Fraction of the full Kelly leverage allowed (0.5 = half-Kelly).
    kelly_fraction: float
    max_slippage_bps: int

    def __post_init__(self) -> None:
        at_least("target_vol", self.target_vol, 0.0)
        at_least("max_leverage", self.max_leverage, 0.0)
        at_least("min_health", self.min_health, 1.0)
        in_range("hedge_target", self.hedge_target, -10.0, 10.0)
        in_range("hedge_band", self.hedge_band, 0.0, 10.0)
        in_range("cppi_floor", self.cppi_floor, 0.0, 1.0)
        at_least("cppi_multiplier", self.cppi_multiplier, 0.0)
        in_range("kelly_fraction", self.kelly_fraction, 0.0, 1.0)
        # The vault's own bound (RiskVault.MAX_SLIPPAGE_BPS): a mandate outside it is no
        # mandate the chain could hold.
        in_range("max_slippage_bps", self.max_slippage_bps, 1, MAX_SLIPPAGE_BPS)


#: The highest slippage bound a mandate may set, bps (RiskVault.MAX_SLIPPAGE_BPS).
MAX_SLIPPAGE_BPS = 100


@dataclass(frozen=True, slots=True)
class PriceHistory:
    """Feed rounds of one underlying: irregular timestamps (unix s) and USD prices.

    Arrays are copied and made read-only; timestamps must be strictly increasing.
    """

    underlying: str
    #: Any float dtype is accepted; stored as float64.
    timestamps: AnyFloatArray
    prices: AnyFloatArray

    def __post_init__(self) -> None:
        ts = as_float_array(f"{self.underlying}.timestamps", self.timestamps).copy()
        px = as_float_array(f"{self.underlying}.prices", self.prices).copy()
        if ts.ndim != 1 or px.ndim != 1 or ts.shape != px.shape:
            raise RiskInputError(
                f"{self.underlying}: timestamps {ts.shape} and prices {px.shape} must be "
                "1-D of one length"
            )
        if np.any(px <= 0.0):
            raise RiskInputError(f"{self.underlying}.prices: must be > 0")
        if np.any(np.diff(ts) <= 0.0):
            raise RiskInputError(f"{self.underlying}.timestamps: must be strictly increasing")
        ts.flags.writeable = False
        px.flags.writeable = False
        object.__setattr__(self, "timestamps", ts)
        object.__setattr__(self, "prices", px)


@dataclass(frozen=True, slots=True)
class MarketView:
    """What the keeper knows about the market at one tick (shared by every vault of a chain).

    ``max_staleness_s`` is the operator's setting (not the mandate's): a vault whose price or IV
    feed is older than ``now - max_staleness_s`` gets no action at all.
    """

    #: Unix seconds.
    now: int
    #: Annualised continuously-compounded risk-free rate (USDC lending rate is a fair proxy).
    risk_free_rate: float
    histories: tuple[PriceHistory, ...]
    max_staleness_s: int
    #: Annualised drift estimate per underlying; absent means "no view" (no Kelly cap).
    expected_returns: Mapping[str, float] = field(default_factory=dict)
    #: NAV high-water mark per vault address, USD; absent means the current NAV.
    nav_high_water_usd: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        finite("risk_free_rate", self.risk_free_rate)
        at_least("max_staleness_s", self.max_staleness_s, 0.0)
        names = [h.underlying for h in self.histories]
        if len(set(names)) != len(names):
            raise RiskInputError(f"histories: duplicate underlyings {names}")
        object.__setattr__(
            self, "expected_returns", _frozen_map("expected_returns", self.expected_returns)
        )
        object.__setattr__(
            self, "nav_high_water_usd", _frozen_map("nav_high_water_usd", self.nav_high_water_usd)
        )

    def history(self, underlying: str) -> PriceHistory | None:
        """The price history of one underlying, or None when the view has none."""
        for h in self.histories:
            if h.underlying == underlying:
                return h
        return None


@dataclass(frozen=True, slots=True)
class Costs:
    """Execution costs on this chain now: gas and venue fees.

    Gas in USD for an action = ``gas_price_usd_per_gas × gas_units_<kind>`` (the caller folds the
    base fee, the tip and the native token's USD price into ``gas_price_usd_per_gas``).
    """

    gas_price_usd_per_gas: float
    #: Swap venue fee, bps of notional.
    swap_fee_bps: float
    #: Expected price impact on the swap venue, bps of notional.
    swap_slippage_bps: float
    #: Perp market taker fee, bps of notional.
    perp_fee_bps: float
    gas_units_deleverage: int = 700_000
    gas_units_rebalance: int = 700_000
    gas_units_hedge: int = 300_000
    #: The most a CRITICAL action may pay per gas (the operator's CRITICAL fee cap), USD; None
    #: when unknown (then today's price stands in).
    critical_gas_price_usd_per_gas: float | None = None

    def __post_init__(self) -> None:
        at_least("gas_price_usd_per_gas", self.gas_price_usd_per_gas, 0.0)
        if self.critical_gas_price_usd_per_gas is not None:
            at_least("critical_gas_price_usd_per_gas", self.critical_gas_price_usd_per_gas, 0.0)
        at_least("swap_fee_bps", self.swap_fee_bps, 0.0)
        at_least("swap_slippage_bps", self.swap_slippage_bps, 0.0)
        at_least("perp_fee_bps", self.perp_fee_bps, 0.0)
        for name in ("gas_units_deleverage", "gas_units_rebalance", "gas_units_hedge"):
            at_least(name, getattr(self, name), 0.0)


def histories_from(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
) -> tuple[PriceHistory, ...]:
    """Build price histories from ``{underlying: (timestamps, prices)}``."""
    return tuple(
        PriceHistory(name, np.asarray(ts, dtype=np.float64), np.asarray(px, dtype=np.float64))
        for name, (ts, px) in series.items()
    )
