"""Float amounts back to integer token units: exact, with the stated rounding direction."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeper.errors import RiskInputError
from keeper.risk.units import Rounding, from_units, to_units


def test_decimal_fractions_are_exact_not_binary() -> None:
    # 0.1 is 0.1000000000000000055… in binary; read as decimal it is exactly 100 000 µUSDC.
    assert to_units(0.1, 6, Rounding.FLOOR) == 100_000
    assert to_units(0.1, 6, Rounding.CEIL) == 100_000
    assert to_units(0.3, 18, Rounding.CEIL) == 3 * 10**17


def test_floor_and_ceil_differ_only_on_a_remainder() -> None:
    assert to_units(1.23456789, 6, Rounding.FLOOR) == 1_234_567
    assert to_units(1.23456789, 6, Rounding.CEIL) == 1_234_568
    assert to_units(2.0, 8, Rounding.CEIL) == 200_000_000


def test_large_amounts_at_18_decimals_are_exact() -> None:
    assert to_units(1e9, 18, Rounding.FLOOR) == 10**27
    # repr(123456789.12345679) is the float's shortest decimal form; 17 significant digits.
    assert to_units(123456789.12345679, 18, Rounding.FLOOR) == 123_456_789_123_456_790_000_000_000


def test_from_units_is_correctly_rounded() -> None:
    assert from_units(1_500_000, 6) == 1.5
    assert from_units(10**27, 18) == 1e9
    assert from_units(1, 18) == 1e-18


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "1"])
def test_bad_amounts_raise(bad: object) -> None:
    with pytest.raises(RiskInputError, match="amount"):
        to_units(bad, 6, Rounding.FLOOR)  # type: ignore[arg-type]


def test_bad_decimals_and_rounding_raise() -> None:
    with pytest.raises(RiskInputError, match="decimals"):
        to_units(1.0, -1, Rounding.FLOOR)
    with pytest.raises(RiskInputError, match="rounding"):
        to_units(1.0, 6, "floor")  # type: ignore[arg-type]
    with pytest.raises(RiskInputError, match="units"):
        from_units(1.5, 6)  # type: ignore[arg-type]


@given(st.floats(min_value=0.0, max_value=1e12, allow_nan=False), st.integers(0, 18))
def test_floor_never_exceeds_and_ceil_never_falls_short(amount: float, decimals: int) -> None:
    lo = to_units(amount, decimals, Rounding.FLOOR)
    hi = to_units(amount, decimals, Rounding.CEIL)
    assert lo <= hi <= lo + 1
    exact = Decimal(repr(amount)) * 10**decimals
    assert lo <= exact <= hi


@pytest.mark.parametrize(("bps", "ok"), [(0, False), (1, True), (100, True), (101, False)])
def test_a_mandate_slippage_bound_is_the_vaults_1_to_100_bps(bps: int, ok: bool) -> None:
    from tests.unit.conftest import mandate

    if ok:
        assert mandate(max_slippage_bps=bps).max_slippage_bps == bps
    else:
        with pytest.raises(RiskInputError, match="max_slippage_bps"):
            mandate(max_slippage_bps=bps)
