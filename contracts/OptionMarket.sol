// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SignedMath} from "@openzeppelin/contracts/utils/math/SignedMath.sol";
import {AggregatorV3Interface} from "./interfaces/AggregatorV3Interface.sol";
import {IOptionMarket} from "./interfaces/IOptionMarket.sol";
import {Oracle} from "./libraries/Oracle.sol";

/// @title OptionMarket
/// @notice European, cash-settled calls and puts on listed underlyings. The market is the
///         counterparty to every trade, at a per-series mark feed (USD per unit) plus a spread for
///         buys and minus it for sells. Shorts are covered: a short call locks the underlying
///         (size units), a short put locks strike × size USDC. After expiry the first settlement
///         fixes the series' price from the spot feed (a round at or after expiry); longs receive
///         the intrinsic value in USDC, shorts get their collateral back less the intrinsic value
///         (calls: in underlying at the settlement price).
///         Sizes are in underlying units with 18 decimals; prices WAD.
/// @dev Premiums paid and collateral locked round up, premiums and payouts received round down.
contract OptionMarket is IOptionMarket, Ownable, ReentrancyGuard {
    using SafeERC20 for IERC20;
    using Math for uint256;

    // ---------------------------------------------------------------- constants
    uint256 private constant WAD = 1e18;
    uint256 private constant BPS = 10_000;

    // ---------------------------------------------------------------- storage
    struct Position {
        int256 size;
        uint256 collateral; // underlying units for calls, USDC units for puts
    }

    IERC20 public immutable usdc;
    uint8 public immutable usdcDecimals;
    uint256 public spreadBps;
    uint256 public maxPriceAge;
    uint256 public seriesCount;
    mapping(uint256 => Series) private _series;
    mapping(address => mapping(uint256 => Position)) private _positions;

    constructor(IERC20 usdc_, uint8 usdcDecimals_, uint256 spreadBps_, uint256 maxPriceAge_, address owner_)
        Ownable(owner_)
    {
        if (spreadBps_ >= BPS) revert OptionMarketInvalidSpread(spreadBps_);
        usdc = usdc_;
        usdcDecimals = usdcDecimals_;
        spreadBps = spreadBps_;
        maxPriceAge = maxPriceAge_;
    }

    // ---------------------------------------------------------------- owner
    /// @notice Create a series; returns its id (ids start at 1).
    function createSeries(
        address underlying,
        uint8 underlyingDecimals,
        address spotFeed,
        address markFeed,
        bool isCall,
        uint256 strike,
        uint256 expiry
    ) external onlyOwner returns (uint256 id) {
        if (strike == 0 || expiry <= block.timestamp) revert OptionMarketInvalidSeries(strike, expiry);
        id = ++seriesCount;
        _series[id] = Series(
            underlying,
            spotFeed,
            markFeed,
            AggregatorV3Interface(spotFeed).decimals(),
            AggregatorV3Interface(markFeed).decimals(),
            underlyingDecimals,
            isCall,
            strike,
            expiry,
            0
        );
        emit SeriesCreated(id, underlying, isCall, strike, expiry, markFeed);
    }

    function setSpread(uint256 newSpreadBps) external onlyOwner {
        if (newSpreadBps >= BPS) revert OptionMarketInvalidSpread(newSpreadBps);
        emit SpreadUpdated(spreadBps, newSpreadBps);
        spreadBps = newSpreadBps;
    }

    // ---------------------------------------------------------------- trading
    /// @notice Buy (`sizeDelta` > 0) or sell (< 0) options of `seriesId`. A buy pays at most
    ///         `premiumLimit` USDC; a sell receives at least `premiumLimit`. Collateral for any
    ///         short part is locked (or released) in the same call.
    function trade(uint256 seriesId, int256 sizeDelta, uint256 premiumLimit)
        external
        nonReentrant
        returns (uint256 premium)
    {
        if (sizeDelta == 0) revert OptionMarketZeroAmount();
        Series storage s = _existing(seriesId);
        if (block.timestamp >= s.expiry) revert OptionMarketExpired(seriesId, s.expiry);
        premium = quote(seriesId, sizeDelta);
        if (sizeDelta > 0 ? premium > premiumLimit : premium < premiumLimit) {
            revert OptionMarketPremiumLimit(premium, premiumLimit);
        }
        Position storage p = _positions[msg.sender][seriesId];
        int256 before = p.size;
        uint256 collateralBefore = p.collateral;
        p.size = before + sizeDelta;
        uint256 collateralAfter = _requiredCollateral(s, p.size);
        p.collateral = collateralAfter;
        IERC20 collateralToken = s.isCall ? IERC20(s.underlying) : usdc;

        // Effects are booked above; pull what the trader owes before paying anything out.
        if (sizeDelta > 0) usdc.safeTransferFrom(msg.sender, address(this), premium);
        if (collateralAfter > collateralBefore) {
            collateralToken.safeTransferFrom(msg.sender, address(this), collateralAfter - collateralBefore);
        }
        if (sizeDelta < 0) usdc.safeTransfer(msg.sender, premium);
        if (collateralAfter < collateralBefore) {
            collateralToken.safeTransfer(msg.sender, collateralBefore - collateralAfter);
        }
        emit Traded(msg.sender, seriesId, before, p.size, premium, collateralBefore, collateralAfter);
    }

    /// @notice Settle `account`'s position in an expired series (anyone may call; proceeds go to
    ///         the account). The first call fixes the settlement price from the spot feed.
    function settle(uint256 seriesId, address account)
        external
        nonReentrant
        returns (uint256 usdcPaid, uint256 underlyingReturned)
    {
        Series storage s = _existing(seriesId);
        if (block.timestamp < s.expiry) revert OptionMarketNotExpired(seriesId, s.expiry);
        if (s.settlementPrice == 0) {
            (uint256 price, uint256 updatedAt) = _expiryPrice(s);
            if (price == 0) revert OptionMarketSettlementPriceStale(seriesId, updatedAt, s.expiry);
            s.settlementPrice = price;
            emit SettlementPriceSet(seriesId, price);
        }
        Position memory p = _positions[account][seriesId];
        if (p.size == 0) revert OptionMarketNoPosition(seriesId, account);
        delete _positions[account][seriesId];

        uint256 size = SignedMath.abs(p.size);
        uint256 intrinsic = _intrinsic(s, s.settlementPrice); // USD WAD per unit
        if (p.size > 0) {
            usdcPaid = size.mulDiv(intrinsic, WAD).mulDiv(10 ** usdcDecimals, WAD);
            if (usdcPaid > 0) usdc.safeTransfer(account, usdcPaid);
        } else if (s.isCall) {
            // The short call owes size × intrinsic, taken from its locked underlying at the settlement price.
            uint256 owed = size.mulDiv(intrinsic, s.settlementPrice, Math.Rounding.Ceil).mulDiv(
                10 ** s.underlyingDecimals, WAD, Math.Rounding.Ceil
            );
            underlyingReturned = owed >= p.collateral ? 0 : p.collateral - owed;
            if (underlyingReturned > 0) IERC20(s.underlying).safeTransfer(account, underlyingReturned);
        } else {
            uint256 owed = size.mulDiv(intrinsic, WAD, Math.Rounding.Ceil).mulDiv(10 ** usdcDecimals, WAD, Math.Rounding.Ceil);
            usdcPaid = owed >= p.collateral ? 0 : p.collateral - owed;
            if (usdcPaid > 0) usdc.safeTransfer(account, usdcPaid);
        }
        emit Settled(seriesId, account, p.size, usdcPaid, underlyingReturned);
    }

    // ---------------------------------------------------------------- views
    function getSeries(uint256 seriesId) external view returns (Series memory) {
        return _series[seriesId];
    }

    function positionOf(address account, uint256 seriesId) external view returns (int256 size, uint256 collateral) {
        Position storage p = _positions[account][seriesId];
        return (p.size, p.collateral);
    }

    /// @notice Premium in USDC for trading `sizeDelta` now: mark × (1 ± spread) × |size|.
    function quote(uint256 seriesId, int256 sizeDelta) public view returns (uint256 premium) {
        Series storage s = _existing(seriesId);
        uint256 mark = Oracle.strictWad(AggregatorV3Interface(s.markFeed), s.markDecimals, maxPriceAge);
        uint256 size = SignedMath.abs(sizeDelta);
        if (sizeDelta > 0) {
            premium = size.mulDiv(mark.mulDiv(BPS + spreadBps, BPS, Math.Rounding.Ceil), WAD, Math.Rounding.Ceil)
                .mulDiv(10 ** usdcDecimals, WAD, Math.Rounding.Ceil);
        } else {
            premium = size.mulDiv(mark.mulDiv(BPS - spreadBps, BPS), WAD).mulDiv(10 ** usdcDecimals, WAD);
        }
    }

    /// @notice The series' mark (USD WAD per unit) and its timestamp; after expiry, the intrinsic
    ///         value at the settlement price (the spot feed's first round at or after expiry;
    ///         the latest spot until there is one). Never reverts for a known series.
    function markPrice(uint256 seriesId) external view returns (uint256 price, uint256 updatedAt) {
        return _markPrice(_existing(seriesId));
    }

    /// @notice The feed that marks the series until `expiry` (after it, markPrice is the intrinsic
    ///         value at the settlement price). Two words, for callers that check the feed's age.
    function markFeedOf(uint256 seriesId) external view returns (address markFeed, uint256 expiry) {
        Series storage s = _existing(seriesId);
        return (s.markFeed, s.expiry);
    }

    function _markPrice(Series storage s) private view returns (uint256 price, uint256 updatedAt) {
        if (block.timestamp >= s.expiry) {
            (uint256 spot, uint256 at) = _expiryPrice(s);
            if (spot == 0) (spot, at) = Oracle.latestWad(AggregatorV3Interface(s.spotFeed), s.spotDecimals);
            return (_intrinsic(s, spot), at);
        }
        return Oracle.latestWad(AggregatorV3Interface(s.markFeed), s.markDecimals);
    }

    /// @dev The settlement price: the fixed one, else the spot feed's first round at or after
    ///      expiry (its answer and time), found by bisection over round ids — the bundled feeds
    ///      number rounds 1..latestRound with non-decreasing times — so the price does not depend
    ///      on when somebody settles. (0, latest time) while no such round exists yet.
    function _expiryPrice(Series storage s) private view returns (uint256 price, uint256 updatedAt) {
        if (s.settlementPrice != 0) return (s.settlementPrice, s.expiry);
        AggregatorV3Interface feed = AggregatorV3Interface(s.spotFeed);
        (uint80 hi,,, uint256 latestAt,) = feed.latestRoundData();
        if (hi == 0 || latestAt < s.expiry) return (0, latestAt);
        uint80 lo = 1;
        while (lo < hi) {
            uint80 mid = lo + (hi - lo) / 2;
            (,,, uint256 at,) = feed.getRoundData(mid);
            if (at >= s.expiry) hi = mid;
            else lo = mid + 1;
        }
        int256 answer;
        (, answer,, updatedAt,) = feed.getRoundData(lo);
        price = answer > 0 ? Oracle.toWad(uint256(answer), s.spotDecimals) : 0;
    }

    /// @notice What `account`'s position in `seriesId` is worth (USD WAD, latest prices): longs
    ///         at the mark; shorts as locked collateral (calls: at the spot price) less the mark.
    function positionValue(address account, uint256 seriesId) external view returns (int256) {
        Position storage p = _positions[account][seriesId];
        if (p.size == 0) return 0;
        Series storage s = _series[seriesId];
        (uint256 mark,) = _markPrice(s);
        uint256 markValue = SignedMath.abs(p.size).mulDiv(mark, WAD);
        if (p.size > 0) return int256(markValue);
        uint256 lockedUsd;
        if (s.isCall) {
            (uint256 spot,) = Oracle.latestWad(AggregatorV3Interface(s.spotFeed), s.spotDecimals);
            lockedUsd = p.collateral.mulDiv(spot, 10 ** s.underlyingDecimals);
            // After expiry the short call owes underlying worth the intrinsic at the expiry
            // price; that many tokens are worth today's spot.
            (uint256 atExpiry,) = block.timestamp >= s.expiry ? _expiryPrice(s) : (uint256(0), uint256(0));
            if (atExpiry > 0) markValue = markValue.mulDiv(spot, atExpiry);
        } else {
            lockedUsd = Oracle.toWad(p.collateral, usdcDecimals);
        }
        return int256(lockedUsd) - int256(markValue);
    }

    // ---------------------------------------------------------------- internal
    function _existing(uint256 seriesId) private view returns (Series storage s) {
        s = _series[seriesId];
        if (s.expiry == 0) revert OptionMarketUnknownSeries(seriesId);
    }

    function _intrinsic(Series storage s, uint256 spot) private view returns (uint256) {
        if (s.isCall) return spot > s.strike ? spot - s.strike : 0;
        return s.strike > spot ? s.strike - spot : 0;
    }

    function _requiredCollateral(Series storage s, int256 size) private view returns (uint256) {
        if (size >= 0) return 0;
        uint256 shortSize = SignedMath.abs(size);
        if (s.isCall) return shortSize.mulDiv(10 ** s.underlyingDecimals, WAD, Math.Rounding.Ceil);
        return shortSize.mulDiv(s.strike, WAD, Math.Rounding.Ceil).mulDiv(10 ** usdcDecimals, WAD, Math.Rounding.Ceil);
    }
}
