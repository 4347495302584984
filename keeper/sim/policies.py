"""The policies compared on the same paths, each acting through the keeper's own parts.

- `hold`: no keeper at all.
- `threshold`: `keeper.sim.threshold`'s fixed bands, built into calls by the keeper's builder and
  sent by its transaction layer (simulate, fees by urgency under the caps, journal, confirm).
- `keeper`: `KeeperService.tick()` — the code `keeper run` runs, composed by the same root.
  The target leverage its decision used is watched (`keeper.policy.observing_decisions`),
  never recomputed: `targets` after each move.

Every outcome becomes an `ActionRecord`: gas from the receipt at its effective gas price (the
path's base fee plus the tip), the execution cost from the vault's own `KeeperAction` event.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Protocol

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.logs import DISCARD

from keeper.chain.abi import load_artifact
from keeper.chain.convert import to_mandate, to_vault_state
from keeper.errors import ConfigError
from keeper.policy import Gates, observing_decisions
from keeper.risk.assess import Assessment
from keeper.service import KeeperService
from keeper.sim.records import ActionRecord
from keeper.sim.threshold import DEFAULT_BANDS, ThresholdBands, threshold_actions
from keeper.tx.builder import build_call
from keeper.tx.sender import Outcome, Submitted

logger = logging.getLogger(__name__)

POLICY_NAMES = ("hold", "threshold", "keeper")
USDC_UNIT = 10**6


class Policy(Protocol):
    name: str

    def act(self, step: int, eth_usd: float) -> dict[ChecksumAddress, list[ActionRecord]]:
        """Move once; what was sent, per vault."""

    def targets(self) -> Mapping[ChecksumAddress, float]:
        """The target leverage per vault the last `act` aimed at (empty: it has none)."""


class OutcomeRecorder:
    """Outcome → ActionRecord, reading the receipt of whatever reached the chain."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        self._vault = w3.eth.contract(abi=load_artifact("RiskVault").abi)

    def record(self, step: int, outcome: Outcome, eth_usd: float) -> ActionRecord:
        if outcome.tx_hash is None or outcome.status not in ("mined", "reverted"):
            return ActionRecord(step, int(self.w3.eth.block_number), outcome.function,
                                outcome.status, error=outcome.error)
        receipt = self.w3.eth.get_transaction_receipt(outcome.tx_hash)  # type: ignore[arg-type]
        gas, price = int(receipt["gasUsed"]), int(receipt["effectiveGasPrice"])
        slippage = 0.0
        for event in self._vault.events.KeeperAction().process_receipt(receipt, errors=DISCARD):
            before, after = int(event["args"]["navBefore"]), int(event["args"]["navAfter"])
            slippage += max(0, before - after) / USDC_UNIT
        return ActionRecord(step, int(receipt["blockNumber"]), outcome.function, outcome.status,
                            gas, price, gas * price / 1e18 * eth_usd, slippage, outcome.error)


class NoTargets:
    """A policy that aims at no leverage (its bands are in health, or it does nothing)."""

    def targets(self) -> Mapping[ChecksumAddress, float]:
        return {}


class HoldPolicy(NoTargets):
    name = "hold"

    def act(self, step: int, eth_usd: float) -> dict[ChecksumAddress, list[ActionRecord]]:
        return {}


class KeeperPolicy:
    """The production tick, unchanged."""

    name = "keeper"

    def __init__(self, service: KeeperService, recorder: OutcomeRecorder) -> None:
        self.service, self.recorder = service, recorder
        self._targets: dict[ChecksumAddress, float] = {}

    def targets(self) -> Mapping[ChecksumAddress, float]:
        return self._targets

    def _seen(self, a: Assessment, g: Gates) -> None:
        # The tick's first decision per vault is the step's: a later one (a wave deciding
        # again on the read after an action mined) is left out.
        for address, target in zip(a.book.addresses, a.target_leverage.tolist(), strict=True):
            if math.isfinite(target):
                self._targets.setdefault(Web3.to_checksum_address(address), float(target))

    def act(self, step: int, eth_usd: float) -> dict[ChecksumAddress, list[ActionRecord]]:
        self._targets = {}
        with observing_decisions(self._seen):
            report = self.service.tick()
        if report.error is not None:
            logger.warning("step %d: keeper tick failed: %s", step, report.error)
        out: dict[ChecksumAddress, list[ActionRecord]] = {}
        for o in report.outcomes:
            vault = Web3.to_checksum_address(o.vault)
            out.setdefault(vault, []).append(self.recorder.record(step, o, eth_usd))
        return out


class ThresholdPolicy(NoTargets):
    """Fixed bands through the keeper's builder and sender (one action per vault per step)."""

    name = "threshold"

    def __init__(self, service: KeeperService, recorder: OutcomeRecorder,
                 bands: ThresholdBands = DEFAULT_BANDS) -> None:
        self.service, self.recorder, self.bands = service, recorder, bands

    def act(self, step: int, eth_usd: float) -> dict[ChecksumAddress, list[ActionRecord]]:
        svc = self.service
        block = int(svc.w3.eth.block_number)
        snaps = svc.reader.read(svc.vaults, block)
        pending: list[tuple[ChecksumAddress, Submitted]] = []
        out: dict[ChecksumAddress, list[ActionRecord]] = {}
        for vault, snap in snaps.items():
            state = to_vault_state(snap, svc.symbols)
            for action in threshold_actions(state, to_mandate(snap), float(snap.swap_fee_bps),
                                            self.bands):
                plan = build_call(action, snap, svc.symbols)
                if plan is None:
                    continue
                logger.info("vault %s block %d: threshold %s — %s", vault, block,
                            action.kind.value, action.reason)
                sent = svc.sender.submit(plan, action.urgency)
                if isinstance(sent, Submitted):
                    pending.append((vault, sent))
                else:
                    out.setdefault(vault, []).append(self.recorder.record(step, sent, eth_usd))
        for vault, sub in pending:
            outcome = svc.sender.confirm(sub)
            out.setdefault(vault, []).append(self.recorder.record(step, outcome, eth_usd))
        return out


def make_policy(name: str, service: KeeperService) -> Policy:
    recorder = OutcomeRecorder(service.w3)
    if name == "hold":
        return HoldPolicy()
    if name == "threshold":
        return ThresholdPolicy(service, recorder)
    if name == "keeper":
        return KeeperPolicy(service, recorder)
    raise ValueError(f"unknown policy {name!r}")


def check_policies(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown or not names:
        raise ConfigError(
            f"--policies: unknown policy {', '.join(unknown) or '(none given)'} "
            f"(known: {', '.join(POLICY_NAMES)})"
        )
    return list(dict.fromkeys(names))


__all__ = ["POLICY_NAMES", "HoldPolicy", "KeeperPolicy", "NoTargets", "OutcomeRecorder",
           "Policy", "ThresholdPolicy", "check_policies", "make_policy"]
