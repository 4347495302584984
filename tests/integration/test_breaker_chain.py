"""The circuit breaker on the in-process chain: the venue's quote read in the vault's own
multicall, a venue moved off the vault's feed, a feed jump between two reads, and a fresh book
seeded with the feed's previous round.

On the seeded market the venue prices WETH off the vault's own ETH/USD feed, so its quote
agrees with the feed by construction; to move it away, the venue's owner re-lists WETH on a
second feed 10 % lower (the only way a local venue's price can differ from the vault's).
"""

from __future__ import annotations

from web3 import Web3
from web3.contract import Contract

from keeper.breaker import BreakerBook
from keeper.chain.reader import SnapshotReader
from keeper.chain.snapshot import VaultSnapshot
from keeper.devnet.deploy import FEED_DECIMALS, SWAP_DEPTH_USD, Deployment
from tests.integration.conftest import BPS, WAD, Market, feed_to_wad, send
from tests.integration.fresh import deploy_contract

#: One USDC unit (1e-6 USD) in WAD, over (1 − fee − impact): the most the venue's backed-out
#: price can sit below the feed from its quote's flooring (fee 10 bps, impact 1–2 bps here).
QUOTE_FLOOR_WAD = 10**12 * BPS // (BPS - 10 - 2) + 1


def _read(reader: SnapshotReader, w3: Web3, vault: str) -> VaultSnapshot:
    return reader.read([Web3.to_checksum_address(vault)], int(w3.eth.block_number))[
        Web3.to_checksum_address(vault)
    ]


def _symbols(contracts: dict[str, Contract]) -> dict[str, str]:
    return {contracts[s].address: s for s in ("WETH", "WBTC")}


def test_the_vaults_multicall_carries_the_venues_quote_of_every_asset(
    w3: Web3, deployment: Deployment, contracts: dict[str, Contract]
) -> None:
    vault = deployment.vaults[0]
    reader = SnapshotReader(w3)
    reader.verify_vaults([vault])  # learns the venue, its USDC and decimals
    calls = reader.counter.eth_calls
    snap = _read(reader, w3, vault)
    assert reader.counter.eth_calls == calls + 1  # snapshot and quotes: one aggregate3
    assert len(snap.assets) == 2
    for a in snap.assets:
        # the venue lists each asset on the vault's own feed: it agrees up to the quote's floor
        assert a.venue_feed == a.price_feed
        assert 0 <= a.price - a.venue_price <= QUOTE_FLOOR_WAD
    book = BreakerBook()
    assert book.update({snap.vault: snap}, _symbols(contracts)) == {snap.vault: []}


def test_an_unverified_vault_is_quoted_from_its_second_read_without_an_extra_call(
    w3: Web3, deployment: Deployment
) -> None:
    vault = deployment.vaults[1]
    reader = SnapshotReader(w3)
    first = _read(reader, w3, vault)
    assert [a.venue_price for a in first.assets] == [0, 0]  # learning the venue
    second = _read(reader, w3, vault)
    assert reader.counter.eth_calls == 2
    assert all(0 <= a.price - a.venue_price <= QUOTE_FLOOR_WAD for a in second.assets)
    assert first == second  # snapshot equality ignores the quotes


def test_a_venue_relisted_10_percent_off_the_feed_opens_the_breaker(
    w3: Web3,
    deployment: Deployment,
    contracts: dict[str, Contract],
    admin: str,
    market: Market,
) -> None:
    vault = deployment.vaults[0]
    weth, swap, eth_feed = contracts["WETH"], contracts["SwapVenue"], contracts["ETH_USD"]
    answer = market.answer("ETH_USD")
    venue_feed = deploy_contract(
        w3, "PriceFeed", (FEED_DECIMALS, "ETH / USD (venue)", answer * 9 // 10, admin), admin
    )
    reader, book = SnapshotReader(w3), BreakerBook()
    reader.verify_vaults([vault])
    before = _read(reader, w3, vault)
    assert book.update({before.vault: before})[before.vault] == []
    send(swap.functions.listAsset(weth.address, venue_feed.address, 18, SWAP_DEPTH_USD * WAD),
         admin)

    snap = _read(reader, w3, vault)
    a = snap.asset(weth.address)
    assert a.venue_feed == venue_feed.address != a.price_feed == eth_feed.address
    # the venue now pays its own feed's price (90 % of the vault's), up to its quote's floor
    assert 0 <= feed_to_wad(answer * 9 // 10) - a.venue_price <= QUOTE_FLOOR_WAD
    (reason,) = book.update({snap.vault: snap}, _symbols(contracts))[snap.vault]
    usd = f"{a.price / WAD:,.2f}"
    assert reason.startswith(
        f"WETH: the swap venue pays ${a.venue_price / WAD:,.2f} (the venue lists it on feed "
        f"{venue_feed.address}), -10.0% from feed {eth_feed.address} (${usd}), "
        "beyond the ±2 % bound"
    )
    # listed back on the vault's feed, the venue agrees again; the breaker stays open for its
    # cool-down after the last read that saw the gap
    send(swap.functions.listAsset(weth.address, eth_feed.address, 18, SWAP_DEPTH_USD * WAD),
         admin)
    again = _read(reader, w3, vault)
    assert again.asset(weth.address).venue_feed == eth_feed.address
    assert book.update({again.vault: again})[again.vault] == [reason]
    assert book.open_until(again.vault) == snap.timestamp + book.bounds.cooldown_s


def test_a_30_percent_feed_jump_between_two_reads_opens_every_vault_on_the_feed(
    w3: Web3, deployment: Deployment, contracts: dict[str, Contract], market: Market
) -> None:
    vaults = [Web3.to_checksum_address(v) for v in deployment.vaults]
    reader, book = SnapshotReader(w3), BreakerBook()
    snaps = reader.read(vaults, int(w3.eth.block_number))
    assert all(r == [] for r in book.update(snaps).values())
    answer = market.answer("ETH_USD")
    market.set_answer("ETH_USD", answer * 7 // 10)
    snaps = reader.read(vaults, int(w3.eth.block_number))
    out = book.update(snaps, _symbols(contracts))
    eth = contracts["ETH_USD"].address
    rounds = {s.asset(contracts["WETH"].address).price_round for s in snaps.values()}
    (new_round,) = rounds
    for vault in vaults:
        (reason,) = out[vault]
        assert reason.startswith(
            f"WETH feed {eth} moved -30.0% from round {new_round - 1} to {new_round}"
        )


def test_a_fresh_book_seeded_with_the_previous_round_sees_the_last_jump(
    w3: Web3, deployment: Deployment, contracts: dict[str, Contract], market: Market
) -> None:
    vault = Web3.to_checksum_address(deployment.vaults[0])
    old = market.answer("BTC_USD")
    market.set_answer("BTC_USD", old * 13 // 10)  # +30 %
    reader = SnapshotReader(w3)
    block = int(w3.eth.block_number)
    snaps = reader.read([vault], block)
    book = BreakerBook()
    previous = reader.previous_rounds(snaps.values(), block)
    btc = snaps[vault].asset(contracts["WBTC"].address)
    assert previous[btc.price_feed][0] == btc.price_round - 1
    # the previous round's 8-decimal answer, scaled to WAD
    assert previous[btc.price_feed][1] == feed_to_wad(old)
    assert btc.price == feed_to_wad(old * 13 // 10)
    book.seed(previous)
    (reason,) = book.update(snaps, _symbols(contracts))[vault]
    assert reason.startswith(f"WBTC feed {btc.price_feed} moved +30.0%")
