"""The keeper's error tree: one root, a few domain branches.

Every error carries enough context (vault, block, tx hash, setting) to be logged on one line.
The tick's failure boundary catches `KeeperError`; anything else is a bug and stops the process.
Every message is masked on the way in (:func:`keeper.masking.mask_text`): an RPC URL's API key
pasted into one never reaches a log line or the journal.
"""

from __future__ import annotations

from keeper.masking import mask_text


class KeeperError(Exception):
    """Root of every error the keeper raises on purpose."""

    #: True when the same operation may succeed if tried again later (an RPC hiccup, a stuck
    #: transaction). Each branch sets its default; an instance may say otherwise
    #: (``ChainReadError(..., retryable=False)`` for an RPC that refuses the API key). Read by
    #: the sender, which keeps waiting through retryable read errors and stops on the others.
    retryable: bool = False

    def __init__(self, *args: object, retryable: bool | None = None) -> None:
        super().__init__(*(mask_text(a) if isinstance(a, str) else a for a in args))
        if retryable is not None:
            self.retryable = retryable


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
