"""Integration fixtures: one in-process chain and one deployment per session, every test
wrapped in a snapshot/revert (titanoboa's `anchor`), fixtures named after roles.

Also the helpers the tests share: `expect_revert`, `send`, feed refreshing and time travel,
token-balance bookkeeping, and independent Python models (integers only) of the venues'
documented formulas, used to compute expected values without asking the contracts.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD
from web3.types import TxReceipt

from keeper.chain.abi import load_artifact
from keeper.chain.errors import MANDATE_FIELDS, DecodedError, decode_revert
from keeper.chain.multicall import MULTICALL3_ABI, MULTICALL3_ADDRESS
from keeper.devnet.deploy import (
    FEED_DECIMALS,
    Deployment,
    deploy_everything,
)
from keeper.devnet.local import LocalChain, local_chain
from keeper.devnet.tester import in_process_web3

WAD = 10**18
BPS = 10_000
USDC_TO_WAD = 10**12
#: Deadline slack for keeper actions, seconds.
DEADLINE_S = 600
TOKENS = ("USDC", "WETH", "WBTC")
SPOT_FEEDS = ("ETH_USD", "BTC_USD")
MARK_FEEDS = ("ETH-P-2700_MARK", "ETH-C-3300_MARK", "BTC-P-54000_MARK")


# ====================================================================== pure integer helpers
def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def trunc_div(a: int, b: int) -> int:
    """Solidity's signed division: rounds toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def floor_signed_usdc(wad: int) -> int:
    """PerpMarket._usdcFloorSigned: WAD → USDC units, toward minus infinity."""
    return wad // USDC_TO_WAD


def feed_to_wad(answer: int) -> int:
    return answer * 10 ** (18 - FEED_DECIMALS)


# ====================================================================== chain helpers
class Chain:
    """`keeper.devnet.local`'s helper plus the clock reads these tests need."""

    def __init__(self, w3: Web3, inner: LocalChain) -> None:
        self.w3 = w3
        self.inner = inner

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def increase_time(self, seconds: int) -> None:
        self.inner.increase_time(seconds)

    def mine(self, blocks: int = 1) -> None:
        self.inner.mine(blocks)

    def snapshot(self) -> object:
        return self.inner.snapshot()

    def revert(self, snapshot_id: object) -> None:
        self.inner.revert(snapshot_id)

    def deadline(self, slack: int = DEADLINE_S) -> int:
        return self.now() + slack


@dataclass
class Reverted:
    """What `expect_revert` caught: the decoded error, filled in when the block exits."""

    error: DecodedError | None = None

    @property
    def args(self) -> tuple[Any, ...]:
        assert self.error is not None
        return self.error.args


def _norm(value: Any) -> Any:
    """Make decoded revert arguments comparable: addresses case-folded, bytes as bytes."""
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return value.lower()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, (tuple, list)):
        return tuple(_norm(v) for v in value)
    return value


def revert_data(exc: ContractLogicError) -> bytes | None:
    """The revert bytes of `exc`: its `data`, or (from a provider that only puts the bytes' repr
    in the message, as eth-tester's eth_call does underneath) recovered from the message."""
    data = exc.data
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            pass
    if isinstance(data, bytes):
        return data
    match = re.match(r"execution reverted: (b(['\"]).*\2)$", str(exc.message or ""), re.S)
    if match:
        value = ast.literal_eval(match.group(1))
        if isinstance(value, bytes):
            return value
    return None


@contextmanager
def expect_revert(name: str, *args: Any) -> Iterator[Reverted]:
    """Assert the call or transaction in the block reverts with custom error `name` (and `args`,
    when given, compared exactly after decoding by the project's ABIs)."""
    caught = Reverted()
    try:
        yield caught
    except ContractLogicError as exc:
        decoded = decode_revert(revert_data(exc))
        assert decoded is not None, f"expected {name}, got undecodable revert {exc!r}"
        assert decoded.name == name, f"expected {name}{args or ''}, got {decoded}"
        if args:
            assert _norm(decoded.args) == _norm(args), f"expected {name}{args}, got {decoded}"
        caught.error = decoded
        return
    pytest.fail(f"expected revert {name}, but nothing reverted")


def send(fn: Any, sender: str, **tx: Any) -> TxReceipt:
    """Transact `fn` from `sender`, wait for the receipt, assert success."""
    tx_hash = fn.transact({"from": sender, **tx})
    receipt = fn.w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    return receipt


def events(contract: Contract, name: str, receipt: TxReceipt) -> list[Any]:
    """`name` events emitted by `contract` in `receipt` (other contracts' logs are skipped)."""
    logs = [log for log in receipt["logs"] if log["address"] == contract.address]
    return list(
        getattr(contract.events, name)().process_receipt({**receipt, "logs": logs}, errors=DISCARD)
    )


def one_event(contract: Contract, name: str, receipt: TxReceipt) -> Any:
    found = events(contract, name, receipt)
    assert len(found) == 1, f"expected one {name}, got {len(found)}"
    return found[0]["args"]


# ====================================================================== session fixtures
@pytest.fixture(scope="session")
def w3() -> Web3:
    return in_process_web3()


#: eth-tester stamps a new block max(parent + 1, wall clock): keep the chain this far ahead of the
#: wall clock, so block times (and what the next block's time will be) stay deterministic.
CLOCK_LEAD_S = 2 * 3600


@pytest.fixture(scope="session")
def deployment(w3: Web3) -> Deployment:
    """The seeded market, then the clock moved CLOCK_LEAD_S ahead with every feed refreshed."""
    d = deploy_everything(w3)
    chain = local_chain(w3)
    chain.increase_time(CLOCK_LEAD_S)
    for name, address in d.contracts.items():
        if name.endswith(("_USD", "_IV", "_MARK")):
            feed = _contract(w3, address, "PriceFeed")
            send(
                feed.functions.updateAnswer(feed.functions.latestAnswer().call()),
                d.accounts["admin"],
            )
    return d


@pytest.fixture(scope="session")
def chain(w3: Web3) -> Chain:
    return Chain(w3, local_chain(w3))


@pytest.fixture(autouse=True)
def _anchor(chain: Chain, deployment: Deployment) -> Iterator[None]:
    """Every test starts from the seeded deployment and leaves no trace."""
    snapshot_id = chain.snapshot()
    yield
    chain.revert(snapshot_id)


#: Deployment name → artifact; every other deployed name (feeds, marks) is a PriceFeed.
ARTIFACT_OF = {
    "USDC": "TestToken",
    "WETH": "TestToken",
    "WBTC": "TestToken",
    "LendingPool": "LendingPool",
    "SwapVenue": "SwapVenue",
    "PerpMarket": "PerpMarket",
    "OptionMarket": "OptionMarket",
}


def artifact_of(name: str) -> str:
    return ARTIFACT_OF.get(name, "PriceFeed")


def _contract(w3: Web3, address: str, artifact: str) -> Contract:
    return w3.eth.contract(address=address, abi=load_artifact(artifact).abi, decode_tuples=True)


@pytest.fixture(scope="session")
def contracts(w3: Web3, deployment: Deployment) -> dict[str, Contract]:
    """Every deployed contract by its deployment name, plus `vault0`, `vault1`."""
    out: dict[str, Contract] = {}
    for name, address in deployment.contracts.items():
        if name == "Multicall3":
            continue
        out[name] = _contract(w3, address, artifact_of(name))
    for i, address in enumerate(deployment.vaults):
        out[f"vault{i}"] = _contract(w3, address, "RiskVault")
    return out


# roles ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def admin(deployment: Deployment) -> str:
    return deployment.accounts["admin"]


@pytest.fixture(scope="session")
def strategist(deployment: Deployment) -> str:
    return deployment.accounts["strategist"]


@pytest.fixture(scope="session")
def keeper(deployment: Deployment) -> str:
    return deployment.accounts["keeper"]


@pytest.fixture(scope="session")
def guardian(deployment: Deployment) -> str:
    return deployment.accounts["guardian"]


@pytest.fixture(scope="session")
def depositor(deployment: Deployment) -> str:
    return deployment.accounts["depositor"]


@pytest.fixture(scope="session")
def liquidator(deployment: Deployment) -> str:
    return deployment.accounts["liquidator"]


@pytest.fixture(scope="session")
def trader(w3: Web3, deployment: Deployment) -> str:
    """An unlocked account with no role anywhere: a plain market participant."""
    used = set(deployment.accounts.values())
    return next(Web3.to_checksum_address(a) for a in w3.eth.accounts if a not in used)


@pytest.fixture(scope="session")
def trader2(w3: Web3, deployment: Deployment, trader: str) -> str:
    used = set(deployment.accounts.values()) | {trader}
    return next(Web3.to_checksum_address(a) for a in w3.eth.accounts if a not in used)


# contracts --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def vault(contracts: dict[str, Contract]) -> Contract:
    """The first seeded vault (rvBAL: leveraged ETH+BTC, short ETH perp, long puts, short calls)."""
    return contracts["vault0"]


@pytest.fixture(scope="session")
def vault2(contracts: dict[str, Contract]) -> Contract:
    """The second seeded vault (rvDNC: ETH collateral hedged by a large short ETH perp)."""
    return contracts["vault1"]


@pytest.fixture(scope="session")
def usdc(contracts: dict[str, Contract]) -> Contract:
    return contracts["USDC"]


@pytest.fixture(scope="session")
def weth(contracts: dict[str, Contract]) -> Contract:
    return contracts["WETH"]


@pytest.fixture(scope="session")
def wbtc(contracts: dict[str, Contract]) -> Contract:
    return contracts["WBTC"]


@pytest.fixture(scope="session")
def pool(contracts: dict[str, Contract]) -> Contract:
    return contracts["LendingPool"]


@pytest.fixture(scope="session")
def swap(contracts: dict[str, Contract]) -> Contract:
    return contracts["SwapVenue"]


@pytest.fixture(scope="session")
def perps(contracts: dict[str, Contract]) -> Contract:
    return contracts["PerpMarket"]


@pytest.fixture(scope="session")
def options(contracts: dict[str, Contract]) -> Contract:
    return contracts["OptionMarket"]


@pytest.fixture(scope="session")
def eth_feed(contracts: dict[str, Contract]) -> Contract:
    return contracts["ETH_USD"]


@pytest.fixture(scope="session")
def btc_feed(contracts: dict[str, Contract]) -> Contract:
    return contracts["BTC_USD"]


@pytest.fixture(scope="session")
def eth_iv(contracts: dict[str, Contract]) -> Contract:
    return contracts["ETH_IV"]


@pytest.fixture(scope="session")
def btc_iv(contracts: dict[str, Contract]) -> Contract:
    return contracts["BTC_IV"]


@pytest.fixture(scope="session")
def marks(contracts: dict[str, Contract]) -> dict[str, Contract]:
    """Option mark feeds by series name."""
    return {name.removesuffix("_MARK"): contracts[name] for name in MARK_FEEDS}


@pytest.fixture(scope="session")
def series(deployment: Deployment) -> dict[str, int]:
    return dict(deployment.series)


# ====================================================================== market helpers
class Market:
    """Shared actions on the deployed market: prices, time, minting."""

    def __init__(self, w3: Web3, chain: Chain, c: dict[str, Contract], admin: str) -> None:
        self.w3, self.chain, self.c, self.admin = w3, chain, c, admin

    # prices -----------------------------------------------------------------------------
    def answer(self, feed: str) -> int:
        return int(self.c[feed].functions.latestAnswer().call())

    def price_wad(self, feed: str) -> int:
        return feed_to_wad(self.answer(feed))

    def set_answer(self, feed: str, answer: int) -> TxReceipt:
        return send(self.c[feed].functions.updateAnswer(answer), self.admin)

    def set_price(self, feed: str, usd: int | float) -> None:
        self.set_answer(feed, round(usd * 10**FEED_DECIMALS))

    def scale_prices(self, factor_num: int, factor_den: int, with_marks: bool = True) -> None:
        """Multiply both spot feeds (and, crudely, the option marks) by factor_num/factor_den."""
        for feed in SPOT_FEEDS:
            self.set_answer(feed, self.answer(feed) * factor_num // factor_den)
        if with_marks:
            for feed in MARK_FEEDS:
                self.set_answer(feed, self.answer(feed) * factor_num // factor_den)

    def refresh(self, with_marks: bool = True) -> None:
        """Push the latest answer again, so every feed is fresh after time travel."""
        for feed in SPOT_FEEDS + ((*MARK_FEEDS, "ETH_IV", "BTC_IV") if with_marks else ()):
            self.set_answer(feed, self.answer(feed))

    def travel(self, seconds: int, refresh: bool = True) -> None:
        self.chain.increase_time(seconds)
        if refresh:
            self.refresh()

    # tokens -----------------------------------------------------------------------------
    def mint(self, symbol: str, to: str, amount: int) -> None:
        send(self.c[symbol].functions.mint(to, amount), self.admin)

    def fund(self, symbol: str, holder: str, amount: int, spender: str) -> None:
        """Mint `amount` to `holder` and approve `spender` for it."""
        self.mint(symbol, holder, amount)
        send(self.c[symbol].functions.approve(spender, amount), holder)

    def approve(self, symbol: str, holder: str, spender: str, amount: int = 2**256 - 1) -> None:
        send(self.c[symbol].functions.approve(spender, amount), holder)

    def balance(self, symbol: str, holder: str) -> int:
        return int(self.c[symbol].functions.balanceOf(holder).call())


@pytest.fixture(scope="session")
def market(w3: Web3, chain: Chain, contracts: dict[str, Contract], admin: str) -> Market:
    return Market(w3, chain, contracts, admin)


# ====================================================================== balance bookkeeping
class Balances:
    """USDC/WETH/WBTC balances of every known holder: all node accounts, both vaults, venues."""

    def __init__(self, w3: Web3, c: dict[str, Contract], deployment: Deployment) -> None:
        self.c = c
        self.multicall = w3.eth.contract(address=MULTICALL3_ADDRESS, abi=MULTICALL3_ABI)
        self.eoas = [Web3.to_checksum_address(a) for a in w3.eth.accounts]
        self.vaults = list(deployment.vaults)
        self.venues = [
            c[n].address for n in ("LendingPool", "SwapVenue", "PerpMarket", "OptionMarket")
        ]

    def holders(self) -> list[str]:
        return self.eoas + self.vaults + self.venues

    def read(self) -> dict[tuple[str, str], int]:
        """Every balance and total supply, read at one block in one Multicall3 call."""
        keys = [(sym, h) for sym in TOKENS for h in [*self.holders(), "totalSupply"]]
        calls = [
            (
                self.c[sym].address,
                False,
                self.c[sym].encode_abi("totalSupply", [])
                if h == "totalSupply"
                else self.c[sym].encode_abi("balanceOf", [h]),
            )
            for sym, h in keys
        ]
        results = self.multicall.functions.aggregate3(calls).call()
        return {k: int.from_bytes(r[1], "big") for k, r in zip(keys, results, strict=True)}

    def assert_confined(
        self, before: dict[tuple[str, str], int], after: dict[tuple[str, str], int], vault: str
    ) -> dict[tuple[str, str], int]:
        """Only `vault` and the venues changed; no EOA or other vault did; nothing was minted,
        burnt, or sent to an address outside this set. Returns the non-zero changes."""
        allowed = {vault, *self.venues}
        changes = {k: after[k] - before[k] for k in before if after[k] != before[k]}
        for (sym, holder), delta in changes.items():
            assert holder in allowed, (
                f"{sym} balance of {holder} changed by {delta} during a keeper action"
            )
        for sym in TOKENS:
            assert sum(d for (s, h), d in changes.items() if s == sym) == 0, (
                f"{sym} left the known set"
            )
        return changes


@pytest.fixture(scope="session")
def balances(w3: Web3, contracts: dict[str, Contract], deployment: Deployment) -> Balances:
    return Balances(w3, contracts, deployment)


# ====================================================================== independent models
def pool_index_at(pool: Contract, timestamp: int, block: Any = "latest") -> int:
    """LendingPool's borrow index at `timestamp`: index × (1 + rate × dt), rounded up."""
    index = int(pool.functions.borrowIndex().call(block_identifier=block))
    last = int(pool.functions.lastAccrual().call(block_identifier=block))
    rate = int(pool.functions.borrowRatePerSecond().call(block_identifier=block))
    dt = timestamp - last
    if dt == 0 or rate == 0:
        return index
    return ceil_div(index * (WAD + rate * dt), WAD)


def pool_debt_at(pool: Contract, account: str, timestamp: int, block: Any = "latest") -> int:
    scaled = int(pool.functions.scaledDebt(account).call(block_identifier=block))
    return ceil_div(scaled * pool_index_at(pool, timestamp, block), WAD)


def pool_capacities(
    pool: Contract, account: str, prices: dict[str, int], block: Any = "latest"
) -> tuple[int, int]:
    """(Σ value × LTV, Σ value × threshold) in USD WAD, from raw collateral and `prices`
    (token → WAD)."""
    borrow = liq = 0
    for token, price in prices.items():
        amount = int(pool.functions.collateralOf(account, token).call(block_identifier=block))
        if amount == 0:
            continue
        cfg = pool.functions.collateralConfig(token).call(block_identifier=block)
        value = amount * price // 10 ** cfg[2]
        borrow += value * cfg[3] // WAD
        liq += value * cfg[4] // WAD
    return borrow, liq


def swap_quote(
    swap: Contract,
    token_in: str,
    token_out: str,
    amount_in: int,
    usdc: str,
    price_wad: int,
    token_decimals: int,
) -> tuple[int, int]:
    """SwapVenue's documented price: oracle value less fee and impact = value ÷ depth (ceil bps,
    capped at 50 %); output floored."""
    fee = int(swap.functions.feeBps().call())
    buy = token_in == usdc
    asset = token_out if buy else token_in
    depth = int(swap.functions.listings(asset).call()[3])
    value = amount_in * USDC_TO_WAD if buy else amount_in * price_wad // 10**token_decimals
    impact = min(ceil_div(value * BPS, depth), 5_000)
    net = value * (BPS - fee - impact) // BPS
    out = net * 10**token_decimals // price_wad if buy else net // USDC_TO_WAD
    return out, impact


def perp_cumulative_now(
    perps: Contract, underlying: str, price: int, timestamp: int, block: Any = "latest"
) -> int:
    m = perps.functions.markets(underlying).call(block_identifier=block)
    rate, cumulative, last = int(m[4]), int(m[5]), int(m[6])
    return cumulative + trunc_div(rate * (timestamp - last) * price, WAD)


#: (account, underlying) → block of the account's last funding settlement there at deployment.
_SEED_SETTLE_BLOCK: dict[tuple[str, str], int] = {}


def _last_settlement_block(
    perps: Contract, account: str, underlying: str, from_block: int, to_block: int | str
) -> int:
    """Block of the last event after which `account`'s funding checkpoint on `underlying` equals the
    market's cumulative: a trade or liquidation there (PositionChanged) or a margin withdrawal
    (MarginWithdrawn settles every position's funding)."""
    trades = perps.events.PositionChanged().get_logs(
        from_block=from_block,
        to_block=to_block,
        argument_filters={"account": account, "underlying": underlying},
    )
    withdrawals = perps.events.MarginWithdrawn().get_logs(
        from_block=from_block, to_block=to_block, argument_filters={"account": account}
    )
    return max([log["blockNumber"] for log in trades + withdrawals], default=0)


def perp_last_cumulative(perps: Contract, account: str, underlying: str, deployed_at: int) -> int:
    """The position's funding checkpoint: the market's cumulative funding right after `account`
    last settled funding on `underlying`, read at that block. Events up to deployment are scanned
    once per session (eth-tester's log scan is slow); later ones from there on."""
    key = (account, underlying)
    if key not in _SEED_SETTLE_BLOCK:
        _SEED_SETTLE_BLOCK[key] = _last_settlement_block(perps, account, underlying, 0, deployed_at)
    block = max(
        _SEED_SETTLE_BLOCK[key],
        _last_settlement_block(perps, account, underlying, deployed_at + 1, "latest"),
    )
    assert block > 0, "no position history"
    return int(perps.functions.markets(underlying).call(block_identifier=block)[5])


def perp_unrealized(size: int, entry: int, price: int, cum_now: int, cum_last: int) -> int:
    """PnL net of funding owed, USDC units: trunc(size×Δp) − trunc(size×Δcum), floored."""
    pnl = trunc_div(size * (price - entry), WAD)
    funding = trunc_div(size * (cum_now - cum_last), WAD)
    return floor_signed_usdc(pnl - funding)


@pytest.fixture(scope="session")
def valuer(w3: Web3, contracts: dict[str, Contract], deployment: Deployment, chain: Chain) -> Any:
    """`valuer(vault)` → NavBreakdown at the latest block (eth_call runs at its timestamp)."""

    def value(vault: Contract) -> NavBreakdown:
        return python_nav(w3, contracts, vault, chain.now(), deployment.block)

    return value


@dataclass(frozen=True)
class NavBreakdown:
    nav: int
    collateral_usd: int
    total_wad: int


def python_nav(
    w3: Web3, c: dict[str, Contract], vault: Contract, timestamp: int, deployed_at: int
) -> NavBreakdown:
    """The vault's NAV from raw balances, positions and feeds, per RiskVault's documented formula:
    idle USDC + idle tokens + collateral × price − debt + perp account value + long options ×
    mark + short options (locked collateral value − |size| × mark), floored to USDC units."""
    pool, perps, options = c["LendingPool"], c["PerpMarket"], c["OptionMarket"]
    v = vault.address
    assets = {c["WETH"].address: ("ETH_USD", 18), c["WBTC"].address: ("BTC_USD", 8)}
    prices = {
        tok: feed_to_wad(int(c[feed].functions.latestAnswer().call()))
        for tok, (feed, _d) in assets.items()
    }
    total = int(c["USDC"].functions.balanceOf(v).call()) * USDC_TO_WAD
    collateral_usd = 0
    for tok, (_feed, dec) in assets.items():
        coll = int(pool.functions.collateralOf(v, tok).call()) * prices[tok] // 10**dec
        idle = (
            int(w3.eth.contract(address=tok, abi=c["WETH"].abi).functions.balanceOf(v).call())
            * prices[tok]
            // 10**dec
        )
        collateral_usd += coll
        total += coll + idle
    total -= pool_debt_at(pool, v, timestamp) * USDC_TO_WAD
    perp_value = int(perps.functions.marginOf(v).call())
    for tok in assets:
        size, entry, _pnl = perps.functions.positionOf(v, tok).call()
        if size == 0:
            continue
        cum_now = perp_cumulative_now(perps, tok, prices[tok], timestamp)
        cum_last = perp_last_cumulative(perps, v, tok, deployed_at)
        perp_value += perp_unrealized(size, entry, prices[tok], cum_now, cum_last)
    total += perp_value * USDC_TO_WAD
    for sid in range(1, int(options.functions.seriesCount().call()) + 1):
        size, locked = options.functions.positionOf(v, sid).call()
        if size == 0:
            continue
        s = options.functions.getSeries(sid).call()
        spot = prices[s.underlying]
        if timestamp >= s.expiry:  # past expiry the mark is the intrinsic value
            settle = s.settlementPrice or spot
            mark = max(settle - s.strike, 0) if s.isCall else max(s.strike - settle, 0)
        else:
            mark = feed_to_wad(
                int(
                    w3.eth.contract(address=s.markFeed, abi=c["ETH_USD"].abi)
                    .functions.latestAnswer()
                    .call()
                )
            )
        mark_value = abs(size) * mark // WAD
        if size > 0:
            total += mark_value
        else:
            locked_usd = (
                locked * spot // 10**s.underlyingDecimals if s.isCall else locked * USDC_TO_WAD
            )
            total += locked_usd - mark_value
    nav = total // USDC_TO_WAD if total > 0 else 0
    return NavBreakdown(nav=nav, collateral_usd=collateral_usd, total_wad=total)


def vault_raw_state(c: dict[str, Contract], vault: Contract) -> dict[str, Any]:
    """Every stored quantity a keeper action could change (not time-dependent views)."""
    v = vault.address
    pool, perps, options = c["LendingPool"], c["PerpMarket"], c["OptionMarket"]
    out: dict[str, Any] = {}
    for sym in TOKENS:
        out[f"bal:{sym}"] = int(c[sym].functions.balanceOf(v).call())
    for sym in ("WETH", "WBTC"):
        tok = c[sym].address
        out[f"coll:{sym}"] = int(pool.functions.collateralOf(v, tok).call())
        out[f"perp:{sym}"] = tuple(perps.functions.positionOf(v, tok).call()[:2])
    out["scaledDebt"] = int(pool.functions.scaledDebt(v).call())
    out["margin"] = int(perps.functions.marginOf(v).call())
    for sid in (1, 2, 3):
        out[f"opt:{sid}"] = tuple(options.functions.positionOf(v, sid).call())
    out["mandate"] = tuple(vault.functions.mandate().call())
    out["lastActionAt"] = int(vault.functions.lastActionAt().call())
    out["highWaterMark"] = int(vault.functions.highWaterMark().call())
    out["totalSupply"] = int(vault.functions.totalSupply().call())
    out["paused"] = bool(vault.functions.paused().call())
    return out


# ====================================================================== keeper-action helpers


def mandate_with(vault: Contract, **changes: int) -> tuple[int, ...]:
    """The vault's current mandate with some fields replaced (by Mandate member name)."""
    values = list(vault.functions.mandate().call())
    for name, value in changes.items():
        values[MANDATE_FIELDS.index(name)] = value
    return tuple(values)


@pytest.fixture
def act(balances: Balances, keeper: str) -> Any:
    """`act(vault, fn)`: send a keeper action, assert every token moved stays between the vault and
    the venues, and return (receipt, KeeperAction args, balance changes)."""

    def run(vault: Contract, fn: Any) -> tuple[TxReceipt, Any, dict[tuple[str, str], int]]:
        before = balances.read()
        receipt = send(fn, keeper)
        changes = balances.assert_confined(before, balances.read(), vault.address)
        return receipt, one_event(vault, "KeeperAction", receipt), changes

    return run
