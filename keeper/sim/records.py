"""What one simulated path records: plain, frozen values that the pure metrics and the report
read. The runner fills them from the chain; nothing here touches web3.

Units: USD floats (converted once from integer token units by the runner), health and leverage as
plain ratios (the contract's "infinite" health is `math.inf`), base fees in gwei, times in
seconds since the epoch of the simulated chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Phases of a step at which a vault is observed: right after the oracle update, before anyone
#: moves (the breach is seen here), and after every actor of the step has moved.
PHASE_ORACLE = "oracle"
PHASE_END = "end"


@dataclass(frozen=True, slots=True)
class Bands:
    """The mandate a vault is judged against (read from the chain at the start of a path)."""

    min_health: float
    max_leverage: float
    hedge_target: float  # net delta / NAV
    hedge_band: float  # allowed |net delta / NAV − hedge_target|
    #: The mandate's CPPI rule (floor as a fraction of the high-water mark, multiplier): the
    #: defaults (no floor, no limit) cap nothing.
    cppi_floor: float = 0.0
    cppi_multiplier: float = math.inf


@dataclass(frozen=True, slots=True)
class Observation:
    """One vault read at one block."""

    step: int
    phase: str  # PHASE_ORACLE or PHASE_END
    block: int
    timestamp: int
    nav_usd: float
    health: float  # min(lending, perp), math.inf when neither binds
    lending_health: float
    perp_health: float
    leverage: float  # Σ collateral value / NAV
    net_delta_usd: float  # Σ over underlyings of net delta × spot (spot, perps, option deltas)
    debt_usd: float
    idle_usd: float
    nav_high_water_usd: float = 0.0  # the vault's high-water mark × supply (CPPI's reference)


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One vault call a policy sent (or tried to): the outcome of the transaction layer."""

    step: int
    block: int  # block it mined in, or the block of the attempt
    function: str  # rebalance | hedge | deleverage
    status: str  # mined | reverted | simulation_reverted | deferred | timeout | failed | dry_run
    gas_used: int = 0
    gas_price_wei: int = 0  # the receipt's effective gas price
    gas_usd: float = 0.0  # gas_used × gas price × ETH/USD at the step
    #: Execution cost: NAV before − NAV after as the vault's KeeperAction event measured it
    #: (swap fee, price impact, perp fee), never negative.
    slippage_usd: float = 0.0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class LiquidationRecord:
    """One liquidation call against a vault's position by the liquidator bot."""

    step: int
    block: int
    venue: str  # lending | perp
    repaid_usd: float  # debt repaid (lending) or notional closed (perp)
    #: What the vault lost to the liquidator: seized collateral value − debt repaid (lending,
    #: the bonus), or the liquidation reward paid out of margin (perp).
    loss_usd: float


@dataclass(frozen=True, slots=True)
class MarketStep:
    """The market at one step, as pushed to the chain."""

    step: int
    timestamp: int
    spot: dict[str, float]  # underlying → USD, as the oracle shows it
    iv: dict[str, float]  # underlying → annualised implied vol
    base_fee_gwei: float


@dataclass
class VaultRun:
    """One vault's whole path under one policy."""

    name: str
    address: str
    bands: Bands
    observations: list[Observation] = field(default_factory=list)
    actions: list[ActionRecord] = field(default_factory=list)
    liquidations: list[LiquidationRecord] = field(default_factory=list)
    #: Step → the target leverage the policy's decision aimed at in that step's move (the
    #: keeper: its first decision of the tick, from the reading after the oracle update). A
    #: step that is missing had none: a policy without a leverage target (hold, threshold),
    #: or a tick that failed before it decided.
    targets: dict[int, float] = field(default_factory=dict)


@dataclass
class PathRun:
    """One path of one scenario under one policy and one move order."""

    scenario: str
    path: int
    seed: int
    policy: str
    order: str
    step_s: int
    blocks_per_step: float  # mean blocks mined per step (time_to_safe is judged against it)
    market: list[MarketStep] = field(default_factory=list)
    vaults: list[VaultRun] = field(default_factory=list)
    #: Wall-clock seconds spent per part (chain, read, decide, send, other): benchmarks only,
    #: never part of the metrics.
    timings: dict[str, float] = field(default_factory=dict)
    #: The first step of the scenario's move (None: no single move to recover from).
    shock_step: int | None = None
    #: The first step of the final flat tail: the move is over (recovery counts from here on).
    move_end: int | None = None


__all__ = [
    "PHASE_END",
    "PHASE_ORACLE",
    "ActionRecord",
    "Bands",
    "LiquidationRecord",
    "MarketStep",
    "Observation",
    "PathRun",
    "VaultRun",
]
