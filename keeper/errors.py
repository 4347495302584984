"""The keeper's error tree: one root, a few domain branches.

Every error carries enough context (vault, block, tx hash, setting) to be logged on one line.
The tick's failure boundary catches `KeeperError`; anything else is a bug and stops the process.
"""

from __future__ import annotations


class KeeperError(Exception):
    """Root of every error the keeper raises on purpose."""

    #: True when the same operation may succeed if tried again later (RPC hiccup, stuck tx).
    retryable: bool = False


class ConfigError(KeeperError):
    """A setting is missing, malformed or inconsistent; names the setting."""


class ChainReadError(KeeperError):
    """Reading chain state failed (RPC unreachable, wrong chain, not a vault)."""

    retryable = True


class StaleDataError(KeeperError):
    """A price feed is older than allowed; nothing is decided on stale data."""


class RiskInputError(KeeperError, ValueError):
    """An input to the risk core is invalid (negative price, NaN, shape mismatch, too short)."""


class TransactionError(KeeperError):
    """Building, simulating, sending or confirming a transaction failed."""


class TransactionReverted(TransactionError):
    """The call reverted (in simulation or on chain); carries the decoded custom error."""


class TransactionTimeout(TransactionError):
    """No receipt within the deadline, even after replacement."""

    retryable = True


class NotRetryable(TransactionError):
    """The transaction cannot succeed as built (bad nonce, insufficient funds, over the cap)."""


class DeploymentError(KeeperError):
    """Deploying or seeding the bundled market failed; names the step and the contract."""
