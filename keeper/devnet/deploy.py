"""Deploy the bundled market (tokens, feeds, lending pool, swap venue, perps, options, Multicall3)
and two seeded RiskVaults with different mandates.

All amounts here are integers in token units; the market's parameters are module constants so
tests and the demo can compute expected values independently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract import Contract

from keeper.chain.abi import load_artifact
from keeper.chain.multicall import MULTICALL3_ADDRESS, ensure_multicall3
from keeper.devnet.txsend import Sender
from keeper.errors import DeploymentError
from keeper.legs import leverage_legs
from keeper.risk.greeks import black_scholes

logger = logging.getLogger(__name__)

WAD = 10**18
USDC_DECIMALS = 6
#: Chainlink USD feeds use 8 decimals; the implied-vol and option-mark feeds follow suit.
FEED_DECIMALS = 8
SECONDS_PER_YEAR = 365 * 24 * 3600

#: Underlying → (token symbol, decimals, spot USD, implied vol).
UNDERLYINGS: dict[str, tuple[str, int, int, float]] = {
    "ETH": ("WETH", 18, 3_000, 0.60),
    "BTC": ("WBTC", 8, 60_000, 0.50),
}
#: Lending pool: 5 % APR on debt, per second in WAD; collateral (ltv, threshold, bonus) in WAD.
BORROW_RATE_PER_SECOND = 5 * WAD // 100 // SECONDS_PER_YEAR
COLLATERAL_PARAMS: dict[str, tuple[int, int, int]] = {
    "ETH": (80 * WAD // 100, 85 * WAD // 100, 5 * WAD // 100),
    "BTC": (75 * WAD // 100, 80 * WAD // 100, 6 * WAD // 100),
}
#: Feeds older than this are refused by every venue and by the vaults' keeper actions.
MAX_PRICE_AGE_S = 3_600
SWAP_FEE_BPS = 10
#: A trade of this USD value would move the price 100 %; $1M moves it 2 bps.
SWAP_DEPTH_USD = 5_000_000_000
PERP_FEE_BPS = 5
PERP_MAINTENANCE = 5 * WAD // 100
PERP_INITIAL = 10 * WAD // 100
#: Funding: longs pay shorts 10 % (ETH) and 8 % (BTC) a year of notional.
PERP_FUNDING_PER_SECOND = {
    "ETH": 10 * WAD // 100 // SECONDS_PER_YEAR,
    "BTC": 8 * WAD // 100 // SECONDS_PER_YEAR,
}
OPTION_SPREAD_BPS = 100
OPTION_TENOR_S = 30 * 24 * 3600
RISK_FREE_RATE = 0.05
#: Liquidity minted to the venues at deploy (whole tokens).
POOL_LIQUIDITY_USDC = 50_000_000
VENUE_INVENTORY = {"USDC": 50_000_000, "WETH": 20_000, "WBTC": 1_000}
PERP_LIQUIDITY_USDC = 20_000_000
OPTION_LIQUIDITY_USDC = 10_000_000
OPTION_INVENTORY = {"WETH": 1_000, "WBTC": 50}
#: Option series listed: (underlying, is_call, strike USD).
SERIES: tuple[tuple[str, bool, int], ...] = (
    ("ETH", False, 2_700),
    ("ETH", True, 3_300),
    ("BTC", False, 54_000),
)
ROLE_NAMES = ("admin", "strategist", "keeper", "guardian", "depositor", "liquidator")


@dataclass(frozen=True, slots=True)
class VaultSpec:
    """A seeded vault: mandate (WAD fractions), deposit, opening trades (USDC units / WAD sizes)."""

    name: str
    symbol: str
    mandate: tuple[int, int, int, int, int, int, int, int, int]
    deposit_usdc: int
    perp_margin_usdc: int
    buys_usdc: dict[str, int]
    perp_sizes: dict[str, int]
    options: tuple[tuple[int, int], ...]  # (series index into SERIES, signed size WAD)


def _mandate(
    target_vol: float,
    max_leverage: float,
    min_health: float,
    hedge_target: float,
    hedge_band: float,
    cppi_floor: float,
    cppi_multiplier: float,
    kelly_fraction: float,
    max_slippage_bps: int,
) -> tuple[int, int, int, int, int, int, int, int, int]:
    def wad(x: float) -> int:
        return round(x * 10_000) * WAD // 10_000

    return (
        wad(target_vol),
        wad(max_leverage),
        wad(min_health),
        wad(hedge_target),
        wad(hedge_band),
        wad(cppi_floor),
        wad(cppi_multiplier),
        wad(kelly_fraction),
        max_slippage_bps,
    )


VAULT_SPECS: tuple[VaultSpec, ...] = (
    VaultSpec(
        name="RiskVault Balanced ETH/BTC",
        symbol="rvBAL",
        mandate=_mandate(0.80, 2.5, 1.30, 0.30, 0.05, 0.60, 3.5, 0.5, 50),
        deposit_usdc=1_000_000 * 10**USDC_DECIMALS,
        perp_margin_usdc=150_000 * 10**USDC_DECIMALS,
        buys_usdc={"ETH": 787_000 * 10**USDC_DECIMALS, "BTC": 763_000 * 10**USDC_DECIMALS},
        # The 50 calls written lock 50 WETH of the buys in the option market: still the
        # vault's, at spot in NAV, so they are hedged too. Shorting 127 (the collateral's share
        # alone) left the vault at +44 % net delta against its +30 % ± 5 % mandate.
        perp_sizes={"ETH": -177 * WAD, "BTC": -10 * WAD},
        options=((0, 100 * WAD), (1, -50 * WAD)),
    ),
    VaultSpec(
        name="RiskVault Delta-Neutral Carry",
        symbol="rvDNC",
        mandate=_mandate(0.70, 3.0, 1.20, 0.0, 0.02, 0.65, 4.0, 0.25, 50),
        deposit_usdc=1_000_000 * 10**USDC_DECIMALS,
        perp_margin_usdc=200_000 * 10**USDC_DECIMALS,
        buys_usdc={"ETH": 550_000 * 10**USDC_DECIMALS, "BTC": 650_000 * 10**USDC_DECIMALS},
        # Shorts matching the spot the buys get after the venue's fee and impact: 10.8 BTC left
        # the vault 0.38 BTC (2.3 % of NAV) net short against its 0 ± 2 % mandate.
        perp_sizes={"ETH": -183 * WAD, "BTC": -104 * WAD // 10},
        options=((2, 2 * WAD),),
    ),
)


@dataclass
class Deployment:
    chain_id: int
    block: int
    contracts: dict[str, ChecksumAddress] = field(default_factory=dict)
    vaults: list[ChecksumAddress] = field(default_factory=list)
    accounts: dict[str, ChecksumAddress] = field(default_factory=dict)
    series: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "block": self.block,
            "contracts": self.contracts,
            "vaults": self.vaults,
            "accounts": self.accounts,
            "series": self.series,
        }


def feed_answer(value: float) -> int:
    """A feed answer for `value` at FEED_DECIMALS, rounded to nearest."""
    return int(round(value * 10**FEED_DECIMALS))


def series_name(underlying: str, is_call: bool, strike: int) -> str:
    return f"{underlying}-{'C' if is_call else 'P'}-{strike}"


def option_mark(spot: float, strike: float, t_years: float, vol: float, is_call: bool) -> float:
    """The Black–Scholes mark a market maker would post for a series (USD per unit)."""
    return float(black_scholes(spot, strike, t_years, RISK_FREE_RATE, vol, is_call).price)


class MarketDeployer:
    """Deploys and seeds everything from `roles` (role name → address) through `sender`."""

    def __init__(self, w3: Web3, sender: Sender, roles: dict[str, ChecksumAddress]) -> None:
        missing = [r for r in ROLE_NAMES if r not in roles]
        if missing:
            raise DeploymentError(f"missing role accounts: {', '.join(missing)}")
        self.w3 = w3
        self.sender = sender
        self.roles = roles
        self.admin = roles["admin"]
        self.c: dict[str, Contract] = {}
        self.series_ids: dict[str, int] = {}

    # ------------------------------------------------------------------ market
    def deploy_market(self) -> None:
        admin, s = self.admin, self.sender
        tok = load_artifact("TestToken")
        self.c["USDC"] = s.deploy(
            tok, ("USD Coin (test)", "USDC", USDC_DECIMALS, admin), admin, "deploy USDC"
        )
        for u, (sym, dec, spot, vol) in UNDERLYINGS.items():
            self.c[sym] = s.deploy(
                tok, (f"Wrapped {u} (test)", sym, dec, admin), admin, f"deploy {sym}"
            )
            feed = load_artifact("PriceFeed")
            self.c[f"{u}_USD"] = s.deploy(
                feed,
                (FEED_DECIMALS, f"{u} / USD", feed_answer(spot), admin),
                admin,
                f"deploy {u}/USD feed",
            )
            self.c[f"{u}_IV"] = s.deploy(
                feed,
                (FEED_DECIMALS, f"{u} implied vol", feed_answer(vol), admin),
                admin,
                f"deploy {u} IV feed",
            )

        usdc = self.c["USDC"].address
        self.c["LendingPool"] = s.deploy(
            load_artifact("LendingPool"),
            (usdc, USDC_DECIMALS, BORROW_RATE_PER_SECOND, MAX_PRICE_AGE_S, admin),
            admin,
            "deploy LendingPool",
        )
        self.c["SwapVenue"] = s.deploy(
            load_artifact("SwapVenue"),
            (usdc, USDC_DECIMALS, SWAP_FEE_BPS, MAX_PRICE_AGE_S, admin),
            admin,
            "deploy SwapVenue",
        )
        self.c["PerpMarket"] = s.deploy(
            load_artifact("PerpMarket"),
            (usdc, USDC_DECIMALS, PERP_FEE_BPS, MAX_PRICE_AGE_S, admin),
            admin,
            "deploy PerpMarket",
        )
        self.c["OptionMarket"] = s.deploy(
            load_artifact("OptionMarket"),
            (usdc, USDC_DECIMALS, OPTION_SPREAD_BPS, MAX_PRICE_AGE_S, admin),
            admin,
            "deploy OptionMarket",
        )
        for u, (sym, dec, _spot, _vol) in UNDERLYINGS.items():
            token, spot_feed = self.c[sym].address, self.c[f"{u}_USD"].address
            ltv, lt, bonus = COLLATERAL_PARAMS[u]
            s.call(
                self.c["LendingPool"].functions.configureCollateral(
                    token, spot_feed, dec, ltv, lt, bonus
                ),
                admin,
                f"list {sym} collateral",
            )
            s.call(
                self.c["SwapVenue"].functions.listAsset(
                    token, spot_feed, dec, SWAP_DEPTH_USD * WAD
                ),
                admin,
                f"list {sym} on SwapVenue",
            )
            s.call(
                self.c["PerpMarket"].functions.listMarket(
                    token, spot_feed, PERP_MAINTENANCE, PERP_INITIAL, PERP_FUNDING_PER_SECOND[u]
                ),
                admin,
                f"list {u} perp",
            )
        self._fund_venues()
        self._list_series()

    def _mint(self, symbol: str, to: ChecksumAddress, whole: int) -> None:
        dec = (
            USDC_DECIMALS
            if symbol == "USDC"
            else UNDERLYINGS[{"WETH": "ETH", "WBTC": "BTC"}[symbol]][1]
        )
        self.sender.call(
            self.c[symbol].functions.mint(to, whole * 10**dec), self.admin, f"mint {symbol}"
        )

    def _fund_venues(self) -> None:
        self._mint("USDC", self.c["LendingPool"].address, POOL_LIQUIDITY_USDC)
        for sym, whole in VENUE_INVENTORY.items():
            self._mint(sym, self.c["SwapVenue"].address, whole)
        self._mint("USDC", self.c["PerpMarket"].address, PERP_LIQUIDITY_USDC)
        self._mint("USDC", self.c["OptionMarket"].address, OPTION_LIQUIDITY_USDC)
        for sym, whole in OPTION_INVENTORY.items():
            self._mint(sym, self.c["OptionMarket"].address, whole)

    def _list_series(self) -> None:
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        expiry = now + OPTION_TENOR_S
        feed_art = load_artifact("PriceFeed")
        for u, is_call, strike in SERIES:
            sym, dec, spot, vol = UNDERLYINGS[u]
            name = series_name(u, is_call, strike)
            mark = option_mark(spot, strike, OPTION_TENOR_S / SECONDS_PER_YEAR, vol, is_call)
            mark_feed = self.sender.deploy(
                feed_art,
                (FEED_DECIMALS, f"{name} mark", feed_answer(mark), self.admin),
                self.admin,
                f"deploy {name} mark feed",
            )
            self.c[f"{name}_MARK"] = mark_feed
            fn = self.c["OptionMarket"].functions.createSeries(
                self.c[sym].address,
                dec,
                self.c[f"{u}_USD"].address,
                mark_feed.address,
                is_call,
                strike * WAD,
                expiry,
            )
            self.sender.call(fn, self.admin, f"create series {name}")
            self.series_ids[name] = int(self.c["OptionMarket"].functions.seriesCount().call())

    # ------------------------------------------------------------------ vaults
    def deploy_vault(self, spec: VaultSpec) -> Contract:
        s, admin = self.sender, self.admin
        vault = s.deploy(
            load_artifact("RiskVault"),
            (
                self.c["USDC"].address,
                spec.name,
                spec.symbol,
                self.c["LendingPool"].address,
                self.c["SwapVenue"].address,
                self.c["PerpMarket"].address,
                self.c["OptionMarket"].address,
                spec.mandate,
                MAX_PRICE_AGE_S,
                admin,
            ),
            admin,
            f"deploy vault {spec.symbol}",
        )
        for u, (sym, _dec, _spot, _vol) in UNDERLYINGS.items():
            fn = vault.functions.addAsset(
                self.c[sym].address, self.c[f"{u}_USD"].address, self.c[f"{u}_IV"].address
            )
            s.call(fn, admin, f"{spec.symbol}: add {sym}")
        for role in ("strategist", "keeper", "guardian"):
            role_id = vault.functions[f"{role.upper()}_ROLE"]().call()
            s.call(
                vault.functions.grantRole(role_id, self.roles[role]),
                admin,
                f"{spec.symbol}: grant {role}",
            )
        return vault

    def seed_vault(self, vault: Contract, spec: VaultSpec) -> None:
        """Deposit, then open the leverage and perp hedge (keeper) and options (strategist)."""
        s, depositor = self.sender, self.roles["depositor"]
        usdc = self.c["USDC"]
        s.call(usdc.functions.mint(depositor, spec.deposit_usdc), self.admin, "mint deposit")
        s.call(
            usdc.functions.approve(vault.address, spec.deposit_usdc),
            depositor,
            f"{spec.symbol}: approve deposit",
        )
        s.call(
            vault.functions.deposit(spec.deposit_usdc, depositor),
            depositor,
            f"{spec.symbol}: deposit",
        )

        # Long options first, paid from idle cash; covered calls after the rebalance has posted
        # the underlying they lock.
        self._trade_options(vault, spec, longs=True)
        venue = self.c["SwapVenue"]
        swaps = []
        idle = int(usdc.functions.balanceOf(vault.address).call()) - spec.perp_margin_usdc
        room = 0
        for u, total in spec.buys_usdc.items():
            token = self.c[UNDERLYINGS[u][0]].address
            ltv = COLLATERAL_PARAMS[u][0]
            # Haircut: the swap fee plus a bound on impact, so the estimated room is conservative.
            for amount in leverage_legs(total, max(idle, 0), room, ltv, SWAP_FEE_BPS + 20):
                quoted, _impact = venue.functions.quote(usdc.address, token, amount).call()
                swaps.append((token, True, amount, quoted * 999 // 1000))
                borrowed = max(0, amount - max(idle, 0))
                idle = max(idle - amount, 0)
                room += amount * ltv * (10_000 - SWAP_FEE_BPS - 20) // (WAD * 10_000) - borrowed
        perps = []
        for u, size in spec.perp_sizes.items():
            price = Web3.to_int(self.c[f"{u}_USD"].functions.latestAnswer().call()) * 10 ** (
                18 - FEED_DECIMALS
            )
            limit = price * 995 // 1000 if size < 0 else price * 1005 // 1000
            perps.append((self.c[UNDERLYINGS[u][0]].address, size, limit))
        deadline = int(self.w3.eth.get_block("latest")["timestamp"]) + 600
        s.call(
            vault.functions.rebalance(swaps, perps, spec.perp_margin_usdc, deadline),
            self.roles["keeper"],
            f"{spec.symbol}: opening rebalance",
        )
        self._trade_options(vault, spec, longs=False)

    def _trade_options(self, vault: Contract, spec: VaultSpec, longs: bool) -> None:
        options = self.c["OptionMarket"]
        for index, size in spec.options:
            if (size > 0) != longs:
                continue
            name = series_name(*SERIES[index])
            sid = self.series_ids[name]
            premium = options.functions.quote(sid, size).call()
            limit = premium * 101 // 100 if size > 0 else premium * 99 // 100
            self.sender.call(
                vault.functions.tradeOption(sid, size, limit),
                self.roles["strategist"],
                f"{spec.symbol}: trade {name}",
            )

    # ------------------------------------------------------------------ all
    def deploy_all(self, specs: tuple[VaultSpec, ...] = VAULT_SPECS) -> Deployment:
        ensure_multicall3(self.w3, self.admin)
        self.deploy_market()
        vaults = []
        for spec in specs:
            vault = self.deploy_vault(spec)
            self.seed_vault(vault, spec)
            vaults.append(vault.address)
        contracts = {name: c.address for name, c in self.c.items()}
        contracts["Multicall3"] = MULTICALL3_ADDRESS
        return Deployment(
            chain_id=int(self.w3.eth.chain_id),
            block=int(self.w3.eth.block_number),
            contracts=contracts,
            vaults=vaults,
            accounts=dict(self.roles),
            series=dict(self.series_ids),
        )


def unlocked_roles(w3: Web3) -> dict[str, ChecksumAddress]:
    """Distinct unlocked node accounts per role, the first as admin and feed owner."""
    accounts = list(w3.eth.accounts)
    if len(accounts) < len(ROLE_NAMES):
        raise DeploymentError(
            f"the node has {len(accounts)} unlocked accounts; {len(ROLE_NAMES)} are needed"
            " (or give a deployer key)"
        )
    return {role: Web3.to_checksum_address(accounts[i]) for i, role in enumerate(ROLE_NAMES)}


def deploy_everything(
    w3: Web3, sender: Sender | None = None, roles: dict[str, ChecksumAddress] | None = None
) -> Deployment:
    """The market and seeded vaults on `w3` (unlocked accounts unless `roles`/`sender` given)."""
    roles = roles or unlocked_roles(w3)
    return MarketDeployer(w3, sender or Sender(w3), roles).deploy_all()
