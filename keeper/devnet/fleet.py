"""Many seeded vaults on one deployed market, cheaply: the fleet the cycle benchmark reads.

`MarketDeployer.seed_vault` waits for every transaction (~15 per vault); for hundreds of vaults
this module sends the same opening sequence without waiting in between — deploy, add both
assets, grant the three roles, deposit, long options, the leveraged opening rebalance with its
perp hedge, covered calls — from unlocked node accounts with locally allocated nonces and fixed
gas limits, and waits once per batch. Every vault ends with collateral, debt, a perp and
options, so its `snapshot()` does the same work as the seeded vaults'. For local chains only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3
from web3.types import Nonce, TxParams, Wei

from keeper.chain.abi import load_artifact
from keeper.chain.snapshot import VaultSnapshot
from keeper.devnet.deploy import (
    COLLATERAL_PARAMS,
    FEED_DECIMALS,
    MAX_PRICE_AGE_S,
    SERIES,
    SWAP_FEE_BPS,
    UNDERLYINGS,
    VAULT_SPECS,
    MarketDeployer,
    VaultSpec,
    series_name,
)
from keeper.errors import DeploymentError
from keeper.legs import leverage_legs

logger = logging.getLogger(__name__)

WAD = 10**18
#: Fixed gas limits per step (about twice what each uses) so no send needs an estimate, which
#: would also race the transactions still being mined ahead of it.
GAS_DEPLOY = 7_500_000
GAS_SMALL = 400_000
GAS_DEPOSIT = 500_000
GAS_OPTION = 900_000
GAS_REBALANCE = 2_500_000
#: Fees for local chains, where the base fee starts at 1 gwei and only falls.
MAX_FEE_WEI = 50 * 10**9
TIP_WEI = 10**9
#: Opening trades' deadline: generous, since hundreds of vaults share one plan.
DEADLINE_S = 3_600
#: Vaults per batch: one plan (quotes, deadline) and one wait per batch.
BATCH = 50
#: Venue liquidity minted per added vault, as a multiple of what one vault draws.
LIQUIDITY_HEADROOM = 2


@dataclass(frozen=True, slots=True)
class OpeningPlan:
    """One spec's opening trades, valid for every vault of that spec until `deadline`."""

    long_options: tuple[tuple[int, int, int], ...]  # (series id, size WAD, premium limit)
    short_options: tuple[tuple[int, int, int], ...]
    swaps: tuple[tuple[ChecksumAddress, bool, int, int], ...]
    perps: tuple[tuple[ChecksumAddress, int, int], ...]
    deadline: int


def create_address(sender: str, nonce: int) -> ChecksumAddress:
    """The CREATE address of `sender`'s transaction with `nonce` (keccak of RLP [sender, nonce])."""
    raw = bytes.fromhex(sender[2:])
    if nonce == 0:
        enc_nonce = b"\x80"
    elif nonce < 0x80:
        enc_nonce = bytes([nonce])
    else:
        body = nonce.to_bytes((nonce.bit_length() + 7) // 8, "big")
        enc_nonce = bytes([0x80 + len(body)]) + body
    payload = b"\x94" + raw + enc_nonce
    return Web3.to_checksum_address(Web3.keccak(bytes([0xC0 + len(payload)]) + payload)[12:])


class Fleet:
    """Adds seeded vaults to the market `deployer` has deployed (its `c` and `series_ids`).

    Owns the senders' nonces only during one public call: they are read once at its start and
    allocated locally, so other senders (or a reverted snapshot) in between do no harm."""

    def __init__(self, deployer: MarketDeployer) -> None:
        self.d = deployer
        self.w3 = deployer.w3
        self.roles = deployer.roles
        self.vaults: list[ChecksumAddress] = []
        self._nonces: dict[ChecksumAddress, int] = {}
        self._last: dict[ChecksumAddress, HexBytes] = {}
        self._vault_art = load_artifact("RiskVault")
        self._vault = self.w3.eth.contract(abi=self._vault_art.abi)
        self._roles = {r: Web3.keccak(text=f"{r.upper()}_ROLE") for r in ("strategist", "keeper",
                                                                           "guardian")}

    # ------------------------------------------------------------------ public
    def add(self, count: int, specs: tuple[VaultSpec, ...] = VAULT_SPECS) -> list[ChecksumAddress]:
        """Deploy and seed `count` more vaults, cycling through `specs`; returns their addresses.
        Raises DeploymentError if any transaction of a batch reverted."""
        self._nonces.clear()  # others may have sent (or a snapshot been reverted) since
        added: list[ChecksumAddress] = []
        for start in range(0, count, BATCH):
            n = min(BATCH, count - start)
            batch_specs = [specs[(len(self.vaults) + i) % len(specs)] for i in range(n)]
            self._fund(batch_specs)
            plans = {s.symbol: self._plan(s) for s in {s.symbol: s for s in batch_specs}.values()}
            for spec in batch_specs:
                vault = self._send_vault(spec, plans[spec.symbol])
                self.vaults.append(vault)
                added.append(vault)
            self._wait_all()
        return added

    def set_hedge_targets(self, vaults: list[ChecksumAddress], shift: float) -> None:
        """The strategist moves each vault's hedge target by `shift` (fraction of NAV)."""
        strategist = self.roles["strategist"]
        self._nonces.clear()
        for vault in vaults:
            c = self.w3.eth.contract(address=vault, abi=self._vault_art.abi)
            mandate = list(c.functions.mandate().call())
            mandate[3] = int(mandate[3]) + round(shift * 10_000) * WAD // 10_000
            self._send(strategist, vault, c.encode_abi("setMandate", [tuple(mandate)]), GAS_SMALL)
        self._wait_all()

    # ------------------------------------------------------------------ internals
    def _fund(self, specs: list[VaultSpec]) -> None:
        """Mint the depositor's deposits and enough venue liquidity for `specs` (admin owns the
        tokens). Liquidity is sized from each spec's buys, with headroom."""
        c, admin = self.d.c, self.d.admin
        buys = {u: sum(s.buys_usdc.get(u, 0) for s in specs) for u in UNDERLYINGS}
        usdc_units = 10 ** 6
        mints: list[tuple[str, ChecksumAddress, int]] = [
            ("USDC", self.roles["depositor"], sum(s.deposit_usdc for s in specs)),
            ("USDC", c["LendingPool"].address, LIQUIDITY_HEADROOM * sum(buys.values())),
            ("USDC", c["OptionMarket"].address, LIQUIDITY_HEADROOM * 100_000 * usdc_units
             * len(specs)),
        ]
        for u, (sym, dec, spot, _vol) in UNDERLYINGS.items():
            whole = LIQUIDITY_HEADROOM * buys[u] // usdc_units // spot + 1
            mints.append((sym, c["SwapVenue"].address, whole * 10**dec))
        for sym, to, amount in mints:
            self._send(admin, c[sym].address, c[sym].encode_abi("mint", [to, amount]), GAS_SMALL)
        self._wait_all()

    def _plan(self, spec: VaultSpec) -> OpeningPlan:
        """The opening trades of `spec` as `seed_vault` computes them: long options from idle
        cash, buys split into legs the pool accepts, perps at a 0.5 % limit, then covered calls."""
        c = self.d.c
        options = c["OptionMarket"]
        longs, shorts = [], []
        premiums = 0
        for index, size in spec.options:
            sid = self.d.series_ids[series_name(*SERIES[index])]
            premium = int(options.functions.quote(sid, size).call())
            if size > 0:
                premiums += premium
                longs.append((sid, size, premium * 101 // 100))
            else:
                shorts.append((sid, size, premium * 99 // 100))
        usdc, venue = c["USDC"], c["SwapVenue"]
        idle = spec.deposit_usdc - premiums - spec.perp_margin_usdc
        room = 0
        swaps = []
        for u, total in spec.buys_usdc.items():
            token = c[UNDERLYINGS[u][0]].address
            ltv = COLLATERAL_PARAMS[u][0]
            for amount in leverage_legs(total, max(idle, 0), room, ltv, SWAP_FEE_BPS + 20):
                quoted, _impact = venue.functions.quote(usdc.address, token, amount).call()
                swaps.append((token, True, amount, int(quoted) * 999 // 1000))
                borrowed = max(0, amount - max(idle, 0))
                idle = max(idle - amount, 0)
                room += amount * ltv * (10_000 - SWAP_FEE_BPS - 20) // (WAD * 10_000) - borrowed
        perps = []
        for u, size in spec.perp_sizes.items():
            answer = Web3.to_int(c[f"{u}_USD"].functions.latestAnswer().call())
            price = answer * 10 ** (18 - FEED_DECIMALS)
            limit = price * 995 // 1000 if size < 0 else price * 1005 // 1000
            perps.append((c[UNDERLYINGS[u][0]].address, size, limit))
        deadline = int(self.w3.eth.get_block("latest")["timestamp"]) + DEADLINE_S
        return OpeningPlan(tuple(longs), tuple(shorts), tuple(swaps), tuple(perps), deadline)

    def _send_vault(self, spec: VaultSpec, plan: OpeningPlan) -> ChecksumAddress:
        c, admin = self.d.c, self.d.admin
        factory = self.w3.eth.contract(abi=self._vault_art.abi, bytecode=self._vault_art.bytecode)
        ctor = factory.constructor(
            c["USDC"].address, spec.name, spec.symbol, c["LendingPool"].address,
            c["SwapVenue"].address, c["PerpMarket"].address, c["OptionMarket"].address,
            spec.mandate, MAX_PRICE_AGE_S, admin,
        )
        vault = create_address(admin, self._nonce(admin))
        self._send(admin, None, HexBytes(ctor.data_in_transaction), GAS_DEPLOY)
        v = self._vault
        for u, (sym, _dec, _spot, _vol) in UNDERLYINGS.items():
            data = v.encode_abi("addAsset", [c[sym].address, c[f"{u}_USD"].address,
                                             c[f"{u}_IV"].address])
            self._send(admin, vault, data, GAS_SMALL)
        for role, role_id in self._roles.items():
            self._send(admin, vault, v.encode_abi("grantRole", [role_id, self.roles[role]]),
                       GAS_SMALL)
        depositor, strategist = self.roles["depositor"], self.roles["strategist"]
        usdc = c["USDC"]
        self._send(depositor, usdc.address, usdc.encode_abi("approve", [vault, spec.deposit_usdc]),
                   GAS_SMALL)
        self._send(depositor, vault, v.encode_abi("deposit", [spec.deposit_usdc, depositor]),
                   GAS_DEPOSIT)
        for sid, size, limit in plan.long_options:
            self._send(strategist, vault, v.encode_abi("tradeOption", [sid, size, limit]),
                       GAS_OPTION)
        rebalance = v.encode_abi(
            "rebalance", [list(plan.swaps), list(plan.perps), spec.perp_margin_usdc, plan.deadline]
        )
        self._send(self.roles["keeper"], vault, rebalance, GAS_REBALANCE)
        for sid, size, limit in plan.short_options:
            self._send(strategist, vault, v.encode_abi("tradeOption", [sid, size, limit]),
                       GAS_OPTION)
        return vault

    def _nonce(self, sender: ChecksumAddress) -> int:
        if sender not in self._nonces:
            self._nonces[sender] = int(self.w3.eth.get_transaction_count(sender, "pending"))
        return self._nonces[sender]

    def _send(self, sender: ChecksumAddress, to: ChecksumAddress | None, data: Any,
              gas: int) -> None:
        tx: TxParams = {
            "from": sender,
            "data": HexBytes(data),
            "gas": gas,
            "nonce": Nonce(self._nonce(sender)),
            "maxFeePerGas": Wei(MAX_FEE_WEI),
            "maxPriorityFeePerGas": Wei(TIP_WEI),
        }
        if to is not None:
            tx["to"] = to
        self._last[sender] = self.w3.eth.send_transaction(tx)
        self._nonces[sender] += 1

    def _wait_all(self) -> None:
        """Wait for each sender's last transaction (nonces are sequential, so every earlier one
        is mined too). Earlier reverts do not show here: `check_fleet` finds them in the state."""
        for sender, tx_hash in self._last.items():
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=300)
            if receipt["status"] != 1:
                raise DeploymentError(f"fleet: last transaction of {sender} reverted: "
                                      f"{tx_hash.hex()}")
        self._last.clear()


def check_fleet(
    snapshots: dict[ChecksumAddress, VaultSnapshot], vaults: list[ChecksumAddress]
) -> None:
    """Every vault read, with collateral, debt, a perp and options: the opening sequence landed
    (the fleet's sends are not awaited one by one, so this is where a revert would show)."""
    for vault in vaults:
        snap = snapshots.get(vault)
        if snap is None:
            raise DeploymentError(f"fleet: vault {vault} could not be read")
        if not (snap.debt > 0 and snap.options and len(snap.assets) == len(UNDERLYINGS)
                and any(a.collateral > 0 for a in snap.assets)
                and any(a.perp_size != 0 for a in snap.assets)):
            raise DeploymentError(f"fleet: vault {vault} is not fully seeded")


__all__ = ["Fleet", "OpeningPlan", "check_fleet", "create_address"]
