"""Input checks shared by the risk core: every failure names the argument and says why."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from keeper.errors import RiskInputError

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
AnyFloatArray = npt.NDArray[np.floating[Any]]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

ArrayLike = float | Sequence[float] | FloatArray


def as_float_array(name: str, value: object) -> FloatArray:
    """Convert to a float64 array, raising `RiskInputError` if impossible or not finite."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise RiskInputError(f"{name}: not numeric ({exc})") from exc
    if not np.all(np.isfinite(arr)):
        raise RiskInputError(f"{name}: contains NaN or infinity")
    return arr


def non_negative(name: str, value: object) -> FloatArray:
    """A finite array with no negative entry."""
    arr = as_float_array(name, value)
    if np.any(arr < 0.0):
        raise RiskInputError(f"{name}: must be >= 0, got min {float(arr.min())!r}")
    return arr


def positive(name: str, value: object) -> FloatArray:
    """A finite array with every entry strictly positive."""
    arr = as_float_array(name, value)
    if np.any(arr <= 0.0):
        raise RiskInputError(f"{name}: must be > 0, got min {float(arr.min())!r}")
    return arr


def finite(name: str, value: float) -> float:
    """A finite scalar float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RiskInputError(f"{name}: expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise RiskInputError(f"{name}: must be finite, got {value!r}")
    return float(value)


def in_range(name: str, value: float, low: float, high: float) -> float:
    """A finite scalar in the closed interval [low, high]."""
    v = finite(name, value)
    if not low <= v <= high:
        raise RiskInputError(f"{name}: must be in [{low}, {high}], got {v!r}")
    return v


def at_least(name: str, value: float, low: float) -> float:
    """A finite scalar >= low."""
    v = finite(name, value)
    if v < low:
        raise RiskInputError(f"{name}: must be >= {low}, got {v!r}")
    return v


def same_shape(**arrays: FloatArray) -> None:
    """All arrays share one shape (no broadcasting where it would hide a mismatch)."""
    shapes = {name: arr.shape for name, arr in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise RiskInputError(f"shape mismatch: {shapes}")
