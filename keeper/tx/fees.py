"""EIP-1559 fees as a pipeline: fetch inputs (I/O) → suggest (pure) → bump schedule (pure).

Only :func:`fetch_fee_inputs` talks to the node; everything else is integer arithmetic on frozen
values, so it is unit- and property-tested without a chain (web3.py's ``fee_utils`` keeps the
same split: a pure estimator wrapped by the function that does the RPC call).

The first offer, for urgency ``u`` (all amounts integer wei)::

    tip₀ = median of the non-zero reward samples      (zero rewards come from empty blocks)
           else the node's eth_maxPriorityFeePerGas   (eth-tester: no rewards, fixed 1 gwei)
           else priority_fee_min
    tip  = clamp(⌈clamp(tip₀, min, max) × TIP_FACTOR[u]⌉, min, max)
    max  = min(base_fee × BASE_FEE_HEADROOM[u] + tip, cap[u])
    tip  = min(tip, max)

``base_fee`` is the *next* block's base fee. The max fee is only a ceiling: the chain charges
``base_fee + tip`` at inclusion, so headroom costs nothing while it keeps the transaction
includable if blocks fill up before it lands. A replacement (:func:`bump_fees`) raises *both*
fields by at least ``bump_percent`` of the previous offer, rounded up, and never passes the cap.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Any

from web3 import Web3
from web3.types import Wei

from keeper.chain.batch import Answer, hex_int
from keeper.chain.rpc_errors import RpcErrorKind, classify, read_failure
from keeper.errors import ChainReadError, ConfigError, NotRetryable, TransactionError
from keeper.risk.actions import Urgency

logger = logging.getLogger(__name__)

#: Geth refuses a replacement unless both fee fields rise by >= 10 %, some clients by 12.5 %;
#: the stricter rule is the one that works everywhere.
MIN_BUMP_PERCENT = 12.5
#: Max fee = base fee × headroom + tip. The base fee can rise at most 12.5 % per full block, so
#: 2× covers ~6 full blocks (1.125⁶ ≈ 2.03), 3× ~9 and 4× ~11 — urgent actions keep more room.
BASE_FEE_HEADROOM: Mapping[Urgency, int] = MappingProxyType(
    {Urgency.LOW: 2, Urgency.NORMAL: 2, Urgency.HIGH: 3, Urgency.CRITICAL: 4}
)
#: Urgent actions outbid the typical tip so they land in the next block, not the one after.
TIP_FACTOR: Mapping[Urgency, Fraction] = MappingProxyType(
    {
        Urgency.LOW: Fraction(1),
        Urgency.NORMAL: Fraction(1),
        Urgency.HIGH: Fraction(3, 2),
        Urgency.CRITICAL: Fraction(2),
    }
)
#: Blocks of fee history read per estimate: recent enough to follow the market, enough samples
#: that one odd block does not move the median.
DEFAULT_HISTORY_BLOCKS = 5
#: The JSON-RPC limit on eth_feeHistory's block count.
MAX_HISTORY_BLOCKS = 1024
#: EIP-1559: the block's gas target is its limit divided by this.
ELASTICITY_MULTIPLIER = 2
#: EIP-1559: the base fee moves by at most 1/8 (12.5 %) per block.
BASE_FEE_MAX_CHANGE_DENOMINATOR = 8
#: Wei per gwei, for log lines only.
WEI_PER_GWEI = 10**9


class FeeInputError(TransactionError, ValueError):
    """A fee input or offer is malformed (negative, a tip above the max fee, a bad percentile)."""


class FeeCapTooLow(NotRetryable):
    """Even the urgency's cap cannot pay the next base fee plus the minimum tip.

    Raised by :func:`suggest_fees` (and :func:`check_fee_cap`): a transaction priced under the
    cap would never be included now, so sending it only occupies the nonce. Not retryable as
    built; a later tick, with a lower base fee, prices a new attempt.
    """

    def __init__(self, urgency: Urgency, base_fee: int, cap: int, min_tip: int) -> None:
        self.urgency = urgency
        self.base_fee = base_fee
        self.cap = cap
        self.min_tip = min_tip
        super().__init__(
            f"{urgency.name} fee cap {gwei(cap)} is below the next base fee {gwei(base_fee)} "
            f"+ minimum tip {gwei(min_tip)}"
        )


def gwei(wei: int) -> str:
    """`wei` as an exact decimal amount of gwei, for log lines (``1500000000`` → ``1.5 gwei``)."""
    text = f"{Decimal(wei).scaleb(-9):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} gwei"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class FeePolicy:
    """The operator's fee limits, all integer wei. Validated on construction (ConfigError)."""

    #: Highest maxFeePerGas per urgency name ('LOW', 'NORMAL', 'HIGH', 'CRITICAL'); rising.
    max_fee_cap: Mapping[str, int]
    #: LOW and NORMAL actions wait while the next base fee is above this.
    acceptable_base_fee: int
    priority_fee_min: int
    #: Ceiling of the first offer's tip; replacements may exceed it (they must outbid).
    priority_fee_max: int
    #: Each replacement raises both fields by at least this percentage (>= 12.5).
    bump_percent: float
    #: Replacements of one stuck transaction, at most (enforced by the sender).
    max_replacements: int

    def __post_init__(self) -> None:
        caps: dict[str, int] = {}
        for key, cap in self.max_fee_cap.items():
            name = key.name if isinstance(key, Urgency) else str(key).upper()
            caps[name] = cap
        missing = [u.name for u in Urgency if u.name not in caps]
        if missing:
            raise ConfigError(f"max_fee_cap: no cap for {', '.join(missing)}")
        previous: tuple[str, int] | None = None
        for urgency in Urgency:
            cap = caps[urgency.name]
            if not _is_int(cap) or cap <= 0:
                raise ConfigError(
                    f"max_fee_cap[{urgency.name}]: must be a positive int, got {cap!r}"
                )
            if previous is not None and cap < previous[1]:
                raise ConfigError(
                    f"max_fee_cap[{urgency.name}] ({cap}) must be >= "
                    f"max_fee_cap[{previous[0]}] ({previous[1]}): caps rise with urgency"
                )
            previous = (urgency.name, cap)
        object.__setattr__(self, "max_fee_cap", MappingProxyType(caps))
        for name in (
            "acceptable_base_fee",
            "priority_fee_min",
            "priority_fee_max",
            "max_replacements",
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ConfigError(f"{name}: must be a non-negative int, got {value!r}")
        if self.priority_fee_min > self.priority_fee_max:
            raise ConfigError(
                f"priority_fee_min ({self.priority_fee_min}) must be <= "
                f"priority_fee_max ({self.priority_fee_max})"
            )
        bump = self.bump_percent
        if (
            isinstance(bump, bool)
            or not isinstance(bump, int | float)
            or not math.isfinite(bump)
            or bump < MIN_BUMP_PERCENT
        ):
            raise ConfigError(
                f"bump_percent: must be a finite number >= {MIN_BUMP_PERCENT}, got {bump!r}"
            )

    def cap_for(self, urgency: Urgency) -> int:
        """The maxFeePerGas ceiling for `urgency`."""
        return self.max_fee_cap[urgency.name]


@dataclass(frozen=True, slots=True)
class FeeInputs:
    """What the node told us, at block `block`: the next base fee and recent tips."""

    #: Base fee of the next (pending) block, wei.
    base_fee: int
    #: One reward percentile per recent block (eth_feeHistory), wei; empty on eth-tester.
    priority_samples: tuple[int, ...]
    #: eth_maxPriorityFeePerGas, wei; None when the node lacks it.
    fallback_priority: int | None
    #: The latest block the inputs were read at.
    block: int

    def __post_init__(self) -> None:
        if not _is_int(self.base_fee) or self.base_fee < 0:
            raise FeeInputError(f"base_fee: must be a non-negative int, got {self.base_fee!r}")
        samples = tuple(self.priority_samples)
        if any(not _is_int(s) or s < 0 for s in samples):
            raise FeeInputError(f"priority_samples: must be non-negative ints, got {samples!r}")
        object.__setattr__(self, "priority_samples", samples)
        fallback = self.fallback_priority
        if fallback is not None and (not _is_int(fallback) or fallback < 0):
            raise FeeInputError(f"fallback_priority: must be a non-negative int, got {fallback!r}")
        if not _is_int(self.block) or self.block < 0:
            raise FeeInputError(f"block: must be a non-negative int, got {self.block!r}")


@dataclass(frozen=True, slots=True)
class Fees:
    """One EIP-1559 offer: the max fee per gas and the tip (max priority fee per gas), wei."""

    max_fee_per_gas: Wei
    max_priority_fee_per_gas: Wei

    def __post_init__(self) -> None:
        for name in ("max_fee_per_gas", "max_priority_fee_per_gas"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise FeeInputError(f"{name}: must be a non-negative int, got {value!r}")
        if self.max_priority_fee_per_gas > self.max_fee_per_gas:
            raise FeeInputError(
                f"tip {self.max_priority_fee_per_gas} is above the max fee {self.max_fee_per_gas}"
            )

    def as_tx_params(self) -> dict[str, Wei]:
        """A new dict with the two EIP-1559 fields, to merge into a transaction dict."""
        return {
            "maxFeePerGas": Wei(self.max_fee_per_gas),
            "maxPriorityFeePerGas": Wei(self.max_priority_fee_per_gas),
        }

    def describe(self) -> str:
        """One log-friendly line: ``max 2.5 gwei, tip 1 gwei``."""
        return f"max {gwei(self.max_fee_per_gas)}, tip {gwei(self.max_priority_fee_per_gas)}"


# --- pure core ---------------------------------------------------------------------------------


def _ceil_mul(value: int, factor: Fraction) -> int:
    return math.ceil(value * factor)


def _median_ceil(values: list[int]) -> int:
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return -(-(ordered[mid - 1] + ordered[mid]) // 2)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def next_base_fee(base_fee: int, gas_used: int, gas_limit: int) -> int:
    """The base fee of the block after one with these values, by the EIP-1559 rule (L1 params).

    Integer arithmetic exactly as the spec: above the target (half the limit) the fee rises by
    at least 1 wei, below it falls, each by at most 1/8 per block.
    """
    target = gas_limit // ELASTICITY_MULTIPLIER
    if target <= 0 or gas_used == target:
        return base_fee
    if gas_used > target:
        delta = base_fee * (gas_used - target) // target // BASE_FEE_MAX_CHANGE_DENOMINATOR
        return base_fee + max(delta, 1)
    delta = base_fee * (target - gas_used) // target // BASE_FEE_MAX_CHANGE_DENOMINATOR
    return base_fee - delta


def should_wait(inputs: FeeInputs, urgency: Urgency, policy: FeePolicy) -> bool:
    """True when a non-urgent (LOW, NORMAL) action should wait: the next base fee is above
    ``policy.acceptable_base_fee``. HIGH and CRITICAL never wait (deleverage is not skipped for
    cost). Not waiting does not mean affordable: :func:`suggest_fees` may still raise
    :class:`FeeCapTooLow` when the urgency's cap is below base fee + minimum tip."""
    if urgency >= Urgency.HIGH:
        return False
    return inputs.base_fee > policy.acceptable_base_fee


def check_fee_cap(inputs: FeeInputs, urgency: Urgency, policy: FeePolicy) -> None:
    """Raise :class:`FeeCapTooLow` if the cap cannot pay next base fee + minimum tip."""
    cap = policy.cap_for(urgency)
    if cap < inputs.base_fee + policy.priority_fee_min:
        raise FeeCapTooLow(urgency, inputs.base_fee, cap, policy.priority_fee_min)


def expected_tip(inputs: FeeInputs, urgency: Urgency, policy: FeePolicy) -> int:
    """The priority fee the first offer for `urgency` carries (wei per gas): the one tip
    estimate, used by the sender and by the cost model alike."""
    lo, hi = policy.priority_fee_min, policy.priority_fee_max
    paid = [s for s in inputs.priority_samples if s > 0]
    if paid:
        raw = _median_ceil(paid)
    elif inputs.fallback_priority is not None:
        raw = inputs.fallback_priority
    else:
        raw = lo
    return _clamp(_ceil_mul(_clamp(raw, lo, hi), TIP_FACTOR[urgency]), lo, hi)


def _suggest(inputs: FeeInputs, urgency: Urgency, policy: FeePolicy) -> Fees:
    tip = expected_tip(inputs, urgency, policy)
    max_fee = min(inputs.base_fee * BASE_FEE_HEADROOM[urgency] + tip, policy.cap_for(urgency))
    return Fees(Wei(max_fee), Wei(min(tip, max_fee)))


def suggest_fees(inputs: FeeInputs, urgency: Urgency, policy: FeePolicy) -> Fees:
    """The first offer for `urgency` (formula in the module docstring).

    Invariants: ``priority_fee_min <= tip <= max fee <= cap[urgency]``; the tip never falls as
    urgency rises. Raises :class:`FeeCapTooLow` when the cap cannot cover base fee + min tip.
    """
    check_fee_cap(inputs, urgency, policy)
    return _suggest(inputs, urgency, policy)


def bump_fees(
    previous: Fees, inputs: FeeInputs, urgency: Urgency, policy: FeePolicy
) -> Fees | None:
    """The replacement for a stuck `previous` offer at the same nonce, or None if none is
    possible under the cap (the caller keeps waiting on what is out there, then reports).

    Both fields become at least ``⌈previous × (1 + bump_percent/100)⌉`` — rounding up keeps the
    bump at or above the nodes' threshold — and at least today's :func:`suggest_fees` offer, so
    a replacement after a base-fee jump catches up in one step. The tip may pass
    ``priority_fee_max``: a replacement that does not raise the tip is refused by the node.
    Repeated, this is a geometric schedule (pymaker's ``GeometricGasPrice``) capped per urgency.
    """
    factor = 1 + Fraction(policy.bump_percent) / 100
    cap = policy.cap_for(urgency)
    now = _suggest(inputs, urgency, policy)
    tip = max(_ceil_mul(previous.max_priority_fee_per_gas, factor), now.max_priority_fee_per_gas)
    # tip <= max_fee follows: each term of the tip is at most the matching term here
    max_fee = max(_ceil_mul(previous.max_fee_per_gas, factor), now.max_fee_per_gas)
    if max_fee > cap:
        logger.info(
            "cannot replace (%s): a %s%% bump needs max fee %s, above the %s cap %s",
            previous.describe(),
            policy.bump_percent,
            gwei(max_fee),
            urgency.name,
            gwei(cap),
        )
        return None
    return Fees(Wei(max_fee), Wei(tip))


def bump_schedule(
    first: Fees, inputs: FeeInputs, urgency: Urgency, policy: FeePolicy
) -> tuple[Fees, ...]:
    """`first` and its successive replacements while the market stays at `inputs`: at most
    ``max_replacements`` bumps, stopping at the cap. For dry runs and logs."""
    offers = [first]
    for _ in range(policy.max_replacements):
        bumped = bump_fees(offers[-1], inputs, urgency, policy)
        if bumped is None:
            break
        offers.append(bumped)
    return tuple(offers)


# --- I/O shell ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeeAnswers:
    """What a JSON-RPC batch (:mod:`keeper.chain.batch`) answered to :func:`fee_requests`: the
    raw ``eth_feeHistory`` and ``eth_maxPriorityFeePerGas`` results, each None where the batch
    did not answer it (then :func:`fetch_fee_inputs` asks for it the ordinary way)."""

    history: Answer | None
    max_priority: Answer | None


def fee_requests(
    reward_percentile: float = 50.0, blocks: int = DEFAULT_HISTORY_BLOCKS
) -> list[tuple[str, list[Any]]]:
    """The JSON-RPC requests :func:`fetch_fee_inputs` sends, with web3's own params, to ride in
    a batch; their answers go back in as :class:`FeeAnswers`."""
    _check_history_args(reward_percentile, blocks)
    return [
        ("eth_feeHistory", [hex(blocks), "latest", [float(reward_percentile)]]),
        ("eth_maxPriorityFeePerGas", []),
    ]


def _check_history_args(reward_percentile: float, blocks: int) -> None:
    if (
        isinstance(reward_percentile, bool)
        or not isinstance(reward_percentile, int | float)
        or not 0 <= reward_percentile <= 100
    ):
        raise FeeInputError(f"reward_percentile: must be in [0, 100], got {reward_percentile!r}")
    if not _is_int(blocks) or not 1 <= blocks <= MAX_HISTORY_BLOCKS:
        raise FeeInputError(f"blocks: must be an int in [1, {MAX_HISTORY_BLOCKS}], got {blocks!r}")


def _quantity(value: Any) -> int:
    """A JSON-RPC quantity as web3 formats it: an int stays, a hex string ("0x3b9aca00") is
    parsed. Raw batch answers are hex; web3's formatted ones ints: both give the same int."""
    if isinstance(value, str):
        return int(value, 16)
    return int(value)


def fetch_fee_inputs(
    w3: Web3,
    reward_percentile: float = 50.0,
    blocks: int = DEFAULT_HISTORY_BLOCKS,
    answers: FeeAnswers | None = None,
) -> FeeInputs:
    """Read :class:`FeeInputs` from the node: one ``eth_feeHistory`` and one
    ``eth_maxPriorityFeePerGas`` (two more reads only where fee history is non-standard).
    `answers` are those two as a batch already answered them (:func:`fee_requests`); what
    it lacks is read here, the ordinary way.

    The next base fee is the last of the ``blocks + 1`` base fees fee history returns. eth-tester
    answers with ``blocks`` base fees, newest first and without the next block's: when the shape
    is not the standard one, the next base fee is computed from the latest block's header by the
    EIP-1559 rule. Transport and node errors become a masked :class:`ChainReadError`, retryable
    when the classifier says so (:func:`keeper.chain.rpc_errors.read_failure`).
    """
    _check_history_args(reward_percentile, blocks)
    answered = answers.history if answers is not None else None
    if answered is not None and isinstance(answered.result, Mapping):
        history = answered.result
    else:
        try:
            history = w3.eth.fee_history(blocks, "latest", [float(reward_percentile)])
        except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
            raise read_failure(exc, "fee history") from None
    try:
        base_fees = [_quantity(fee) for fee in history["baseFeePerGas"]]
        ratios = list(history["gasUsedRatio"])
        samples = tuple(_quantity(reward[0]) for reward in history.get("reward") or () if reward)
    except (KeyError, TypeError, ValueError) as exc:
        raise ChainReadError(
            f"fee history: malformed answer ({type(exc).__name__}: {exc})", retryable=False
        ) from None
    if ratios and len(base_fees) == len(ratios) + 1:
        base_fee = base_fees[-1]
        block = _quantity(history["oldestBlock"]) + len(ratios) - 1
    else:
        try:
            latest = w3.eth.get_block("latest")
        except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
            raise read_failure(exc, "latest block") from None
        if "baseFeePerGas" not in latest:
            raise ChainReadError(
                "latest block has no base fee: the chain is not EIP-1559", retryable=False
            )
        base_fee = next_base_fee(
            int(latest["baseFeePerGas"]), int(latest["gasUsed"]), int(latest["gasLimit"])
        )
        block = int(latest["number"])
        logger.debug("non-standard eth_feeHistory shape; next base fee from block %d", block)
    priority = hex_int(answers.max_priority) if answers is not None else None
    if priority is None:
        priority = _fetch_fallback_priority(w3)
    inputs = FeeInputs(base_fee, samples, priority, block)
    logger.debug(
        "fee inputs at block %d: next base fee %s, %d tip samples, fallback tip %s",
        inputs.block,
        gwei(inputs.base_fee),
        len(samples),
        "none" if inputs.fallback_priority is None else gwei(inputs.fallback_priority),
    )
    return inputs


def _fetch_fallback_priority(w3: Web3) -> int | None:
    # web3 itself falls back to a fee-history estimate (with a warning) when the node lacks the
    # method; None only when that fails too.
    try:
        return int(w3.eth.max_priority_fee)
    except Exception as exc:  # any RPC failure means "no fallback"; a bug is re-raised
        fault = classify(exc)
        if fault.kind is RpcErrorKind.NOT_RPC:
            raise
        logger.debug("no eth_maxPriorityFeePerGas: %s", fault.reason)
        return None


__all__ = [
    "BASE_FEE_HEADROOM",
    "MIN_BUMP_PERCENT",
    "TIP_FACTOR",
    "FeeAnswers",
    "FeeCapTooLow",
    "FeeInputError",
    "FeeInputs",
    "FeePolicy",
    "Fees",
    "Wei",
    "bump_fees",
    "bump_schedule",
    "check_fee_cap",
    "expected_tip",
    "fee_requests",
    "fetch_fee_inputs",
    "gwei",
    "next_base_fee",
    "should_wait",
    "suggest_fees",
]
