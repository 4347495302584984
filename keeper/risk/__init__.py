"""The risk core: pure numerics over plain typed values (numpy/scipy, never a chain library).

Modules, by concept:

- :mod:`keeper.risk.types` — the vault's state, its mandate, the market view and costs;
- :mod:`keeper.risk.actions` — what the decision policy emits;
- :mod:`keeper.risk.units` — the one way from float amounts back to integer token units;
- :mod:`keeper.risk.health` — valuation, lending/perp health, leverage, net delta;
- :mod:`keeper.risk.greeks` — Black–Scholes price and greeks, vectorised;
- :mod:`keeper.risk.volatility` — EWMA, GARCH(1,1), realised vol, covariance;
- :mod:`keeper.risk.tail` — Student-t and historical VaR/CVaR, stress health;
- :mod:`keeper.risk.allocation` — target leverage from the mandate, risk-parity weights;
- :mod:`keeper.risk.hedging` — hedge sizes and the Whalley–Wilmott no-trade band;
- :mod:`keeper.risk.forecast` — per-market forecasts shared by every vault of a tick;
- :mod:`keeper.risk.book` / :mod:`keeper.risk.assess` — the vectorised many-vault assessment;
- :mod:`keeper.risk.params` — the policy's own tuning (horizon, buffers, bands);
- :mod:`keeper.risk.validation` — input checks raising `RiskInputError`.

The decision policy that uses all this is :mod:`keeper.policy`.

Nothing here imports web3, eth_* or :mod:`keeper.chain`; ``tests/unit/test_risk_purity.py``
asserts it.
"""

from __future__ import annotations
