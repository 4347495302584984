"""A price maker for local chains: pushes spot, implied-vol and option-mark rounds as the admin
(the feeds' owner). Used by the demo and the tests; the simulator drives feeds through
`keeper.sim.driver`, which prices marks the same way."""

from __future__ import annotations

import math
import random

from web3 import Web3

from keeper.chain.abi import load_artifact
from keeper.devnet.deploy import (
    OPTION_TENOR_S,
    SECONDS_PER_YEAR,
    SERIES,
    UNDERLYINGS,
    Deployment,
    feed_answer,
    option_mark,
    series_name,
)
from keeper.devnet.local import LocalChain

#: Hourly vols of the warm-up random walk (annual 60 % ETH, 50 % BTC).
WARMUP_HOURLY_VOL = {"ETH": 0.60 / math.sqrt(24 * 365), "BTC": 0.50 / math.sqrt(24 * 365)}


class Market:
    """The demo's price maker: pushes spot, implied-vol and option-mark rounds as the admin."""

    def __init__(self, w3: Web3, chain: LocalChain, dep: Deployment) -> None:
        self.w3, self.chain, self.dep = w3, chain, dep
        feed_abi = load_artifact("PriceFeed").abi
        self.feeds = {
            name: w3.eth.contract(address=addr, abi=feed_abi)
            for name, addr in dep.contracts.items()
            if name.endswith(("_USD", "_IV", "_MARK"))
        }
        self.spot = {u: float(spec[2]) for u, spec in UNDERLYINGS.items()}
        self.iv = {u: spec[3] for u, spec in UNDERLYINGS.items()}
        self.start = int(w3.eth.get_block("latest")["timestamp"])
        self.admin = dep.accounts["admin"]

    def push(self) -> None:
        for u in UNDERLYINGS:
            self._update(f"{u}_USD", self.spot[u])
            self._update(f"{u}_IV", self.iv[u])
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        t_left = max(self.start + OPTION_TENOR_S - now, 0) / SECONDS_PER_YEAR
        for u, is_call, strike in SERIES:
            mark = option_mark(self.spot[u], strike, t_left, self.iv[u], is_call)
            self._update(f"{series_name(u, is_call, strike)}_MARK", mark)

    def _update(self, feed: str, value: float) -> None:
        tx = (
            self.feeds[feed]
            .functions.updateAnswer(feed_answer(value))
            .transact({"from": self.admin})
        )
        self.w3.eth.wait_for_transaction_receipt(tx)

    def advance(self, hours: float) -> None:
        self.chain.increase_time(int(hours * 3600))

    def warm_up(self, rounds: int, rng: random.Random) -> None:
        for _ in range(rounds):
            self.advance(1)
            for u in UNDERLYINGS:
                self.spot[u] *= math.exp(rng.gauss(0.0, WARMUP_HOURLY_VOL[u]))
            for u in UNDERLYINGS:
                self._update(f"{u}_USD", self.spot[u])
        self.push()


__all__ = ["WARMUP_HOURLY_VOL", "Market"]
