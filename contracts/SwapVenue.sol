// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {AggregatorV3Interface} from "./interfaces/AggregatorV3Interface.sol";
import {ISwapVenue} from "./interfaces/ISwapVenue.sol";
import {Oracle} from "./libraries/Oracle.sol";

/// @title SwapVenue
/// @notice Swaps USDC ↔ each listed asset at the oracle price, less a fee and a price impact that
///         grows linearly with trade size: impact = value ÷ depth (bps, capped at MAX_IMPACT_BPS).
///         Inventory is minted to the venue at deploy. Refuses stale feeds.
/// @dev amountOut is rounded down (venue's favour). A trade whose fee plus impact reaches 100 %
///      is refused (SwapVenueCostTooHigh).
contract SwapVenue is ISwapVenue, Ownable, ReentrancyGuard {
    using SafeERC20 for IERC20;
    using Math for uint256;

    // ---------------------------------------------------------------- constants
    uint256 private constant BPS = 10_000;
    /// @notice Impact never exceeds half the trade: beyond that the venue is simply not a market.
    uint256 public constant MAX_IMPACT_BPS = 5_000;

    // ---------------------------------------------------------------- storage
    struct Listing {
        address feed;
        uint8 feedDecimals;
        uint8 tokenDecimals;
        uint256 depthUsd; // WAD: a trade of this USD value moves the price by 100 %
        bool listed;
    }

    IERC20 public immutable usdc;
    uint8 public immutable usdcDecimals;
    uint256 public feeBps;
    uint256 public maxPriceAge;
    mapping(address => Listing) public listings;

    constructor(IERC20 usdc_, uint8 usdcDecimals_, uint256 feeBps_, uint256 maxPriceAge_, address owner_)
        Ownable(owner_)
    {
        if (feeBps_ >= BPS) revert SwapVenueInvalidConfig(feeBps_, 0);
        usdc = usdc_;
        usdcDecimals = usdcDecimals_;
        feeBps = feeBps_;
        maxPriceAge = maxPriceAge_;
    }

    // ---------------------------------------------------------------- owner
    /// @notice List `asset` priced by `feed` with a depth of `depthUsd` (WAD).
    function listAsset(address asset, address feed, uint8 tokenDecimals, uint256 depthUsd) external onlyOwner {
        if (depthUsd == 0) revert SwapVenueInvalidConfig(feeBps, depthUsd);
        listings[asset] = Listing(feed, AggregatorV3Interface(feed).decimals(), tokenDecimals, depthUsd, true);
        emit AssetListed(asset, feed, depthUsd);
    }

    function setFee(uint256 newFeeBps) external onlyOwner {
        if (newFeeBps >= BPS) revert SwapVenueInvalidConfig(newFeeBps, 0);
        emit FeeUpdated(feeBps, newFeeBps);
        feeBps = newFeeBps;
    }

    function setMaxPriceAge(uint256 newMaxAge) external onlyOwner {
        emit MaxPriceAgeUpdated(maxPriceAge, newMaxAge);
        maxPriceAge = newMaxAge;
    }

    // ---------------------------------------------------------------- swaps
    /// @notice What `amountIn` of `tokenIn` buys of `tokenOut` now, and the price impact in bps.
    function quote(address tokenIn, address tokenOut, uint256 amountIn)
        public
        view
        returns (uint256 amountOut, uint256 impactBps)
    {
        (address asset, bool buy) = _pair(tokenIn, tokenOut);
        Listing memory l = listings[asset];
        uint256 price = Oracle.strictWad(AggregatorV3Interface(l.feed), l.feedDecimals, maxPriceAge);
        uint256 valueUsd = buy ? Oracle.toWad(amountIn, usdcDecimals) : amountIn.mulDiv(price, 10 ** l.tokenDecimals);
        impactBps = Math.min(valueUsd.mulDiv(BPS, l.depthUsd, Math.Rounding.Ceil), MAX_IMPACT_BPS);
        // A fee above 100 % − MAX_IMPACT_BPS can meet an impact that takes the rest: refuse it by
        // name rather than underflow.
        if (feeBps + impactBps >= BPS) revert SwapVenueCostTooHigh(feeBps, impactBps);
        uint256 netUsd = valueUsd.mulDiv(BPS - feeBps - impactBps, BPS);
        amountOut = buy ? netUsd.mulDiv(10 ** l.tokenDecimals, price) : netUsd.mulDiv(10 ** usdcDecimals, 1e18);
    }

    /// @notice Swap `amountIn` of `tokenIn` for at least `minOut` of `tokenOut`, sent to `recipient`.
    function swap(address tokenIn, address tokenOut, uint256 amountIn, uint256 minOut, address recipient)
        external
        nonReentrant
        returns (uint256 amountOut)
    {
        if (amountIn == 0) revert SwapVenueZeroAmount();
        uint256 impactBps;
        (amountOut, impactBps) = quote(tokenIn, tokenOut, amountIn);
        if (amountOut < minOut) revert SwapVenueSlippage(amountOut, minOut);
        uint256 inventory = IERC20(tokenOut).balanceOf(address(this));
        if (amountOut > inventory) revert SwapVenueInsufficientInventory(tokenOut, inventory, amountOut);
        IERC20(tokenIn).safeTransferFrom(msg.sender, address(this), amountIn);
        IERC20(tokenOut).safeTransfer(recipient, amountOut);
        emit Swapped(msg.sender, tokenIn, tokenOut, amountIn, amountOut, impactBps, recipient);
    }

    // ---------------------------------------------------------------- internal
    function _pair(address tokenIn, address tokenOut) private view returns (address asset, bool buy) {
        if (tokenIn == address(usdc) && listings[tokenOut].listed) return (tokenOut, true);
        if (tokenOut == address(usdc) && listings[tokenIn].listed) return (tokenIn, false);
        revert SwapVenueUnsupportedPair(tokenIn, tokenOut);
    }
}
