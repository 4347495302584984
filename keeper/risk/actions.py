"""What the decision policy emits: actions with urgency, expected benefit and their reasons."""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

logger = logging.getLogger(__name__)


class ActionKind(enum.Enum):
    """The things a keeper may do to a vault."""

    #: Sell collateral to repay debt and/or cut perp size; restores health; never cost-gated.
    DELEVERAGE = "deleverage"
    #: Move balance-sheet leverage (spot collateral / NAV) back to its target.
    REBALANCE = "rebalance"
    #: Trade perps so that net delta per underlying returns to the mandate's target.
    HEDGE = "hedge"
    #: Repay debt from idle cash and surplus perp margin (no sale); restores lending health.
    REPAY = "repay"
    #: Settle an expired option series the vault still holds (at the expiry price).
    SETTLE = "settle"


class Urgency(enum.IntEnum):
    """How hard the transaction layer should push (fee tier); ordered."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


InputValue = float | str


@dataclass(frozen=True, slots=True)
class Action:
    """One intended vault call, with the numbers that justified it.

    ``spot_legs``: per asset, signed change of lending collateral in token units (negative =
    sell collateral and repay debt with the proceeds; positive = borrow USDC, buy and deposit).
    ``perp_legs``: per underlying, signed change of perp size in underlying units.
    ``margin_usd``: USDC moved from idle cash into perp margin (negative: surplus margin
    withdrawn into the vault); ``repay_usd``: debt repaid from idle cash (REPAY);
    ``series_id``: the option series a SETTLE settles.
    The transaction layer converts magnitudes with :func:`keeper.risk.units.to_units`, flooring
    what is sold or sent.
    """

    kind: ActionKind
    vault: str
    urgency: Urgency
    #: Expected benefit over the policy horizon in USD (see `keeper.policy` for the model).
    expected_benefit_usd: float
    #: Expected cost in USD (gas + fees + slippage) the benefit was compared with.
    expected_cost_usd: float
    reason: str
    inputs: Mapping[str, InputValue] = field(default_factory=dict)
    spot_legs: Mapping[str, float] = field(default_factory=dict)
    perp_legs: Mapping[str, float] = field(default_factory=dict)
    margin_usd: float = 0.0
    repay_usd: float = 0.0
    series_id: int | None = None

    def __post_init__(self) -> None:
        for name in ("inputs", "spot_legs", "perp_legs"):
            value = getattr(self, name)
            if not isinstance(value, MappingProxyType):  # a proxy is already read-only
                object.__setattr__(self, name, MappingProxyType(dict(value)))
