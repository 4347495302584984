// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice Linear perpetuals per underlying with one cross-margin USDC account per trader.
interface IPerpMarket {
    // ---------------------------------------------------------------- errors
    error PerpMarketUnknownMarket(address underlying);
    error PerpMarketInvalidConfig(uint256 maintenanceMargin, uint256 initialMargin);
    error PerpMarketZeroAmount();
    error PerpMarketLimitPrice(uint256 executionPrice, uint256 limitPrice);
    error PerpMarketInsufficientMargin(int256 accountValue, uint256 requiredValue);
    error PerpMarketNotLiquidatable(uint256 health);
    error PerpMarketInsufficientLiquidity(uint256 available, uint256 requested);

    // ---------------------------------------------------------------- events
    event MarketListed(address indexed underlying, address feed, uint256 maintenanceMargin, uint256 initialMargin);
    event FundingRateUpdated(address indexed underlying, int256 oldRatePerSecond, int256 newRatePerSecond);
    event FundingAccrued(address indexed underlying, int256 oldCumulative, int256 newCumulative);
    event MarginDeposited(address indexed account, uint256 amount, int256 marginAfter);
    event MarginWithdrawn(address indexed account, uint256 amount, int256 marginAfter);
    event PositionChanged(
        address indexed account,
        address indexed underlying,
        int256 sizeBefore,
        int256 sizeAfter,
        uint256 executionPrice,
        int256 realizedPnl,
        uint256 fee,
        int256 fundingPaid
    );
    event Liquidated(address indexed account, address indexed liquidator, uint256 healthBefore, uint256 reward);

    // ---------------------------------------------------------------- functions
    function depositMargin(uint256 amount) external;
    function withdrawMargin(uint256 amount) external;
    function trade(address underlying, int256 sizeDelta, uint256 limitPrice) external returns (uint256 executionPrice);
    function liquidate(address account) external returns (uint256 reward);

    function positionOf(address account, address underlying)
        external
        view
        returns (int256 size, uint256 entryPrice, int256 unrealizedPnl);
    function maintenanceMargin(address underlying) external view returns (uint256);
    function marginOf(address account) external view returns (int256);
    function accountValue(address account) external view returns (int256);
    function accountSummary(address account) external view returns (int256 value, uint256 maintenanceRequirementUsd);
    function maintenanceRequirement(address account) external view returns (uint256);
    function marginHealth(address account) external view returns (uint256);
    function feeBps() external view returns (uint256);
}
