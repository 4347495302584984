// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SignedMath} from "@openzeppelin/contracts/utils/math/SignedMath.sol";
import {AggregatorV3Interface} from "./interfaces/AggregatorV3Interface.sol";
import {IPerpMarket} from "./interfaces/IPerpMarket.sol";
import {Oracle} from "./libraries/Oracle.sol";

/// @title PerpMarket
/// @notice Linear perpetual futures per underlying, settled in USDC, with one cross-margin account
///         per trader. Trades fill at the oracle price plus a taker fee; the market is the
///         counterparty. Funding accrues per second: a signed rate (WAD per second, positive means
///         longs pay shorts) times the price, summed into a cumulative index per market.
///         Sizes are in underlying units with 18 decimals; prices and USD values are WAD;
///         margin is in USDC units.
///         margin health = (margin + Σ pnl − Σ funding owed) ÷ Σ |size| × price × maintenance, WAD.
///         Anyone may liquidate an account below 1.0: all its positions close at the oracle price
///         and the liquidator earns LIQUIDATION_FEE of the notional (capped at what is left).
/// @dev Trader PnL and funding are rounded toward the market (floor on gains, ceil on losses).
contract PerpMarket is IPerpMarket, Ownable, ReentrancyGuard {
    using SafeERC20 for IERC20;
    using Math for uint256;

    // ---------------------------------------------------------------- constants
    uint256 private constant WAD = 1e18;
    uint256 private constant BPS = 10_000;
    /// @notice Share of closed notional paid to a liquidator.
    uint256 public constant LIQUIDATION_FEE = 0.01e18;

    // ---------------------------------------------------------------- storage
    struct Market {
        address feed;
        uint8 feedDecimals;
        uint64 maintenanceMargin; // WAD fraction of notional
        uint64 initialMargin; // WAD fraction of notional, > maintenance
        int256 fundingRatePerSecond; // WAD
        int256 cumulativeFunding; // USD WAD per 1e18 units of size
        uint256 lastFundingTime;
        bool listed;
    }

    struct Position {
        int256 size;
        uint256 entryPrice;
        int256 lastCumulativeFunding;
    }

    IERC20 public immutable usdc;
    uint256 private immutable usdcToWad; // 10 ** (18 - usdc decimals)
    uint256 public feeBps;
    uint256 public maxPriceAge;
    address[] public underlyings;
    mapping(address => Market) public markets;
    mapping(address => int256) private _margin;
    mapping(address => mapping(address => Position)) private _positions;

    constructor(IERC20 usdc_, uint8 usdcDecimals_, uint256 feeBps_, uint256 maxPriceAge_, address owner_)
        Ownable(owner_)
    {
        usdc = usdc_;
        usdcToWad = 10 ** (18 - usdcDecimals_);
        feeBps = feeBps_;
        maxPriceAge = maxPriceAge_;
    }

    // ---------------------------------------------------------------- owner
    /// @notice List a perpetual on `underlying` priced by `feed`, or update a listed one's feed,
    ///         margins and funding rate. Funding accrued so far is kept (accrued at the old rate
    ///         first): relisting must not re-price open positions.
    function listMarket(address underlying, address feed, uint64 maintenance, uint64 initial, int256 fundingRatePerSecond)
        external
        onlyOwner
    {
        if (maintenance == 0 || initial <= maintenance || initial >= WAD) {
            revert PerpMarketInvalidConfig(maintenance, initial);
        }
        Market storage m = markets[underlying];
        if (m.listed) {
            _accrue(underlying, m);
            emit FundingRateUpdated(underlying, m.fundingRatePerSecond, fundingRatePerSecond);
        } else {
            underlyings.push(underlying);
            m.lastFundingTime = block.timestamp;
            m.listed = true;
        }
        m.feed = feed;
        m.feedDecimals = AggregatorV3Interface(feed).decimals();
        m.maintenanceMargin = maintenance;
        m.initialMargin = initial;
        m.fundingRatePerSecond = fundingRatePerSecond;
        emit MarketListed(underlying, feed, maintenance, initial);
    }

    /// @notice Change a market's funding rate; funding to now accrues at the old rate first.
    function setFundingRate(address underlying, int256 newRatePerSecond) external onlyOwner {
        Market storage m = _market(underlying);
        _accrue(underlying, m);
        emit FundingRateUpdated(underlying, m.fundingRatePerSecond, newRatePerSecond);
        m.fundingRatePerSecond = newRatePerSecond;
    }

    // ---------------------------------------------------------------- margin
    /// @notice Add `amount` USDC to the caller's margin.
    function depositMargin(uint256 amount) external nonReentrant {
        if (amount == 0) revert PerpMarketZeroAmount();
        usdc.safeTransferFrom(msg.sender, address(this), amount);
        _margin[msg.sender] += int256(amount);
        emit MarginDeposited(msg.sender, amount, _margin[msg.sender]);
    }

    /// @notice Withdraw `amount` USDC of margin; the account must still meet initial margin.
    function withdrawMargin(uint256 amount) external nonReentrant {
        if (amount == 0) revert PerpMarketZeroAmount();
        _settleAllFunding(msg.sender);
        int256 margin = _margin[msg.sender] - int256(amount);
        if (margin < 0) revert PerpMarketInsufficientMargin(_margin[msg.sender], amount);
        _margin[msg.sender] = margin;
        _requireInitialMargin(msg.sender);
        usdc.safeTransfer(msg.sender, amount);
        emit MarginWithdrawn(msg.sender, amount, margin);
    }

    // ---------------------------------------------------------------- trading
    /// @notice Change the caller's position on `underlying` by `sizeDelta` at the oracle price.
    ///         Buys fill only at or below `limitPrice`, sells only at or above it. A trade that
    ///         grows the position must leave the account above initial margin.
    function trade(address underlying, int256 sizeDelta, uint256 limitPrice)
        external
        nonReentrant
        returns (uint256 price)
    {
        if (sizeDelta == 0) revert PerpMarketZeroAmount();
        Market storage m = _market(underlying);
        _accrue(underlying, m);
        price = Oracle.strictWad(AggregatorV3Interface(m.feed), m.feedDecimals, maxPriceAge);
        if (sizeDelta > 0 ? price > limitPrice : price < limitPrice) revert PerpMarketLimitPrice(price, limitPrice);

        Position storage p = _positions[msg.sender][underlying];
        int256 before = p.size;
        int256 funding = _settleFunding(msg.sender, p, m);
        int256 realized = _applyTrade(p, sizeDelta, price);
        uint256 fee = _usdcCeil(SignedMath.abs(sizeDelta).mulDiv(price, WAD).mulDiv(feeBps, BPS));
        _margin[msg.sender] += realized - int256(fee);

        if (SignedMath.abs(p.size) > SignedMath.abs(before)) _requireInitialMargin(msg.sender);
        emit PositionChanged(msg.sender, underlying, before, p.size, price, realized, fee, funding);
    }

    /// @notice Close every position of `account` (health < 1.0) at the oracle price; the caller
    ///         earns LIQUIDATION_FEE of the closed notional, capped at the account's remaining value.
    function liquidate(address account) external nonReentrant returns (uint256 reward) {
        uint256 healthBefore = marginHealth(account);
        if (healthBefore >= WAD) revert PerpMarketNotLiquidatable(healthBefore);
        uint256 notional;
        for (uint256 i = 0; i < underlyings.length; i++) {
            address u = underlyings[i];
            Position storage p = _positions[account][u];
            if (p.size == 0) continue;
            Market storage m = markets[u];
            _accrue(u, m);
            uint256 price = Oracle.strictWad(AggregatorV3Interface(m.feed), m.feedDecimals, maxPriceAge);
            int256 before = p.size;
            int256 funding = _settleFunding(account, p, m);
            notional += SignedMath.abs(before).mulDiv(price, WAD);
            int256 realized = _applyTrade(p, -before, price);
            _margin[account] += realized;
            emit PositionChanged(account, u, before, 0, price, realized, 0, funding);
        }
        int256 left = _margin[account];
        reward = _usdcFloor(notional.mulDiv(LIQUIDATION_FEE, WAD));
        if (left <= 0) {
            reward = 0;
            _margin[account] = 0; // bad debt is absorbed by the market's own liquidity
        } else {
            if (reward > uint256(left)) reward = uint256(left);
            _margin[account] = left - int256(reward);
        }
        if (reward > 0) usdc.safeTransfer(msg.sender, reward);
        emit Liquidated(account, msg.sender, healthBefore, reward);
    }

    // ---------------------------------------------------------------- views
    /// @notice Signed size, average entry price (WAD) and unrealized PnL net of pending funding (USDC units).
    function positionOf(address account, address underlying)
        public
        view
        returns (int256 size, uint256 entryPrice, int256 unrealizedPnl)
    {
        Position storage p = _positions[account][underlying];
        size = p.size;
        entryPrice = p.entryPrice;
        if (size == 0) return (0, 0, 0);
        Market storage m = markets[underlying];
        (uint256 price,) = Oracle.latestWad(AggregatorV3Interface(m.feed), m.feedDecimals);
        int256 pnlWad = size * (int256(price) - int256(entryPrice)) / int256(WAD);
        int256 fundingWad = size * (_cumulativeNow(m, price) - p.lastCumulativeFunding) / int256(WAD);
        unrealizedPnl = _usdcFloorSigned(pnlWad - fundingWad);
    }

    /// @notice The market's maintenance margin fraction (WAD; zero when not listed).
    function maintenanceMargin(address underlying) external view returns (uint256) {
        return markets[underlying].maintenanceMargin;
    }

    function marginOf(address account) external view returns (int256) {
        return _margin[account];
    }

    function underlyingsLength() external view returns (uint256) {
        return underlyings.length;
    }

    /// @notice Margin plus unrealized PnL net of funding, USDC units (may be negative).
    function accountValue(address account) public view returns (int256 value) {
        (value,) = accountSummary(account);
    }

    /// @notice Σ |size| × price × maintenance margin, USD WAD.
    function maintenanceRequirement(address account) public view returns (uint256 req) {
        (, req) = accountSummary(account);
    }

    /// @notice Account value (USDC units) and maintenance requirement (USD WAD) in one pass,
    ///         reading each market's feed once.
    function accountSummary(address account) public view returns (int256 value, uint256 req) {
        value = _margin[account];
        for (uint256 i = 0; i < underlyings.length; i++) {
            address u = underlyings[i];
            Position storage p = _positions[account][u];
            int256 size = p.size;
            if (size == 0) continue;
            Market storage m = markets[u];
            (uint256 price,) = Oracle.latestWad(AggregatorV3Interface(m.feed), m.feedDecimals);
            int256 pnlWad = size * (int256(price) - int256(p.entryPrice)) / int256(WAD);
            int256 fundingWad = size * (_cumulativeNow(m, price) - p.lastCumulativeFunding) / int256(WAD);
            value += _usdcFloorSigned(pnlWad - fundingWad);
            req += SignedMath.abs(size).mulDiv(price, WAD).mulDiv(m.maintenanceMargin, WAD);
        }
    }

    /// @notice Account value ÷ maintenance requirement in WAD; type(uint256).max with no positions.
    function marginHealth(address account) public view returns (uint256) {
        (int256 value, uint256 req) = accountSummary(account);
        if (req == 0) return type(uint256).max;
        if (value <= 0) return 0;
        return (uint256(value) * usdcToWad).mulDiv(WAD, req);
    }

    // ---------------------------------------------------------------- internal
    function _market(address underlying) private view returns (Market storage m) {
        m = markets[underlying];
        if (!m.listed) revert PerpMarketUnknownMarket(underlying);
    }

    function _cumulativeNow(Market storage m, uint256 price) private view returns (int256) {
        // See LendingPool._currentIndex: a timestamp before the last accrual means no time passed.
        uint256 elapsed = block.timestamp > m.lastFundingTime ? block.timestamp - m.lastFundingTime : 0;
        return m.cumulativeFunding + m.fundingRatePerSecond * int256(elapsed) * int256(price) / int256(WAD);
    }

    function _accrue(address underlying, Market storage m) private {
        if (block.timestamp <= m.lastFundingTime) return;
        (uint256 price,) = Oracle.latestWad(AggregatorV3Interface(m.feed), m.feedDecimals);
        int256 next = _cumulativeNow(m, price);
        if (next != m.cumulativeFunding) emit FundingAccrued(underlying, m.cumulativeFunding, next);
        m.cumulativeFunding = next;
        m.lastFundingTime = block.timestamp;
    }

    /// @dev Moves funding owed since the position's last settlement into margin; returns it (USDC).
    function _settleFunding(address account, Position storage p, Market storage m) private returns (int256 paid) {
        if (p.size != 0) {
            paid = -_usdcFloorSigned(-(p.size * (m.cumulativeFunding - p.lastCumulativeFunding) / int256(WAD)));
            _margin[account] -= paid;
        }
        p.lastCumulativeFunding = m.cumulativeFunding;
    }

    function _settleAllFunding(address account) private {
        for (uint256 i = 0; i < underlyings.length; i++) {
            address u = underlyings[i];
            Market storage m = markets[u];
            _accrue(u, m);
            _settleFunding(account, _positions[account][u], m);
        }
    }

    /// @dev Applies a fill of `delta` at `price`; returns realized PnL (USDC units, floored).
    function _applyTrade(Position storage p, int256 delta, uint256 price) private returns (int256 realized) {
        int256 oldSize = p.size;
        int256 newSize = oldSize + delta;
        if (oldSize != 0 && (oldSize > 0) != (delta > 0)) {
            // Reducing (or flipping): the closed part realizes PnL against the entry price.
            int256 closed = SignedMath.abs(delta) < SignedMath.abs(oldSize) ? -delta : oldSize;
            realized = _usdcFloorSigned(closed * (int256(price) - int256(p.entryPrice)) / int256(WAD));
            if (newSize == 0) p.entryPrice = 0;
            else if ((newSize > 0) != (oldSize > 0)) p.entryPrice = price;
        } else {
            // Growing from flat or on the same side: size-weighted average entry.
            uint256 a = SignedMath.abs(oldSize);
            uint256 b = SignedMath.abs(delta);
            p.entryPrice = (a * p.entryPrice + b * price) / (a + b);
        }
        p.size = newSize;
    }

    function _requireInitialMargin(address account) private view {
        uint256 req;
        for (uint256 i = 0; i < underlyings.length; i++) {
            address u = underlyings[i];
            int256 size = _positions[account][u].size;
            if (size == 0) continue;
            Market storage m = markets[u];
            uint256 price = Oracle.strictWad(AggregatorV3Interface(m.feed), m.feedDecimals, maxPriceAge);
            req += SignedMath.abs(size).mulDiv(price, WAD).mulDiv(m.initialMargin, WAD);
        }
        int256 value = accountValue(account);
        if (value < 0 || uint256(value) * usdcToWad < req) revert PerpMarketInsufficientMargin(value, _usdcCeil(req));
    }

    function _usdcCeil(uint256 wad) private view returns (uint256) {
        return wad.ceilDiv(usdcToWad);
    }

    function _usdcFloor(uint256 wad) private view returns (uint256) {
        return wad / usdcToWad;
    }

    /// @dev Floors toward minus infinity, so a trader's gains round down and losses round up.
    function _usdcFloorSigned(int256 wad) private view returns (int256) {
        int256 unit = int256(usdcToWad);
        int256 q = wad / unit;
        if (wad % unit != 0 && wad < 0) q -= 1;
        return q;
    }
}
