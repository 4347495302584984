"""The transaction layer (cycle step 5): fees, nonces, build, simulate, sign, send, confirm.

Modules, by concept: `fees` (EIP-1559 pipeline: fetch inputs → suggest → bump, pure but for
the fetch), `nonce` (the one nonce owner), `builder` (action → vault call) and `sender`
(simulate, journal, broadcast, wait, replace). Import from the modules themselves; this package
re-exports nothing, so importing one part never drags in the others.
"""

from __future__ import annotations
