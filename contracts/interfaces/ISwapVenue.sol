// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice Oracle-priced swaps between USDC and each listed risky asset.
interface ISwapVenue {
    // ---------------------------------------------------------------- errors
    error SwapVenueUnsupportedPair(address tokenIn, address tokenOut);
    error SwapVenueZeroAmount();
    error SwapVenueSlippage(uint256 amountOut, uint256 minOut);
    error SwapVenueInsufficientInventory(address token, uint256 available, uint256 requested);
    error SwapVenueInvalidConfig(uint256 feeBps, uint256 depthUsd);
    /// @dev The fee plus the trade's price impact take the whole trade (≥ 100 %): nothing would be
    ///      paid out, so the venue refuses to quote it.
    error SwapVenueCostTooHigh(uint256 feeBps, uint256 impactBps);

    // ---------------------------------------------------------------- events
    event AssetListed(address indexed asset, address feed, uint256 depthUsd);
    event FeeUpdated(uint256 oldFeeBps, uint256 newFeeBps);
    event MaxPriceAgeUpdated(uint256 oldMaxAge, uint256 newMaxAge);
    event Swapped(
        address indexed sender,
        address indexed tokenIn,
        address indexed tokenOut,
        uint256 amountIn,
        uint256 amountOut,
        uint256 impactBps,
        address recipient
    );

    // ---------------------------------------------------------------- functions
    function quote(address tokenIn, address tokenOut, uint256 amountIn)
        external
        view
        returns (uint256 amountOut, uint256 impactBps);
    function swap(address tokenIn, address tokenOut, uint256 amountIn, uint256 minOut, address recipient)
        external
        returns (uint256 amountOut);
    function feeBps() external view returns (uint256);
}
