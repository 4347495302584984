"""The one way from float amounts back to on-chain integer token units, and forth.

Rounding rule (like OpenZeppelin's ``Math.Rounding``): **floor what we send or sell, ceil what
we owe or must cover** — so a rounding error can never make the vault send more than intended or
under-repay a debt. Conversions go through :class:`decimal.Decimal` built from the float's
shortest round-trip representation (``repr``), so ``0.1`` USDC is exactly ``100_000`` units and
no binary-float error appears, even at 18 decimals and 1e9-token amounts.
"""

from __future__ import annotations

import enum
import logging
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal

from keeper.errors import RiskInputError

logger = logging.getLogger(__name__)

#: ERC-20 decimals in practice are 0..18; 36 leaves room for oddities but rejects typos.
MAX_DECIMALS: int = 36

#: Enough digits for 1e30 whole tokens at 36 decimals with no rounding inside the multiply.
_EXACT = Context(prec=100)


class Rounding(enum.Enum):
    """Direction of the final rounding to an integer number of token units."""

    #: Toward zero for the non-negative amounts we handle: amounts we send, sell or pay out.
    FLOOR = "floor"
    #: Up: debt, repayments and any amount we must cover in full.
    CEIL = "ceil"


def _check_decimals(decimals: int) -> None:
    if isinstance(decimals, bool) or not isinstance(decimals, int):
        raise RiskInputError(f"decimals: expected int, got {type(decimals).__name__}")
    if not 0 <= decimals <= MAX_DECIMALS:
        raise RiskInputError(f"decimals: must be in [0, {MAX_DECIMALS}], got {decimals}")


def to_units(amount: float, decimals: int, rounding: Rounding) -> int:
    """Convert a non-negative token amount to integer units (``amount × 10**decimals``).

    ``amount`` is in whole tokens (USDC: dollars). It must be finite and >= 0: the sign of a
    trade is carried by the action, never by the amount. The float is read as its shortest
    decimal representation, then scaled exactly and rounded by ``rounding``.
    """
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise RiskInputError(f"amount: expected a number, got {type(amount).__name__}")
    if not math.isfinite(amount):
        raise RiskInputError(f"amount: must be finite, got {amount!r}")
    if amount < 0:
        raise RiskInputError(f"amount: must be >= 0 (pass magnitudes), got {amount!r}")
    _check_decimals(decimals)
    if not isinstance(rounding, Rounding):
        raise RiskInputError(f"rounding: expected Rounding, got {rounding!r}")
    exact = _EXACT.multiply(Decimal(repr(float(amount))), Decimal(10) ** decimals)
    mode = ROUND_FLOOR if rounding is Rounding.FLOOR else ROUND_CEILING
    return int(exact.to_integral_value(rounding=mode))


def from_units(units: int, decimals: int) -> float:
    """Convert integer token units to a float amount in whole tokens (correctly rounded)."""
    if isinstance(units, bool) or not isinstance(units, int):
        raise RiskInputError(f"units: expected int, got {type(units).__name__}")
    _check_decimals(decimals)
    return float(units / 10**decimals)  # int/int true division is correctly rounded
