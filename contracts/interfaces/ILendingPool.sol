// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice Aave-style lending pool: USDC debt against several collateral assets.
interface ILendingPool {
    // ---------------------------------------------------------------- errors
    error LendingPoolUnknownAsset(address asset);
    error LendingPoolInvalidConfig(uint256 ltv, uint256 liquidationThreshold, uint256 liquidationBonus);
    error LendingPoolZeroAmount();
    error LendingPoolInsufficientCollateral(address asset, uint256 available, uint256 requested);
    /// @dev Both in debt-asset (USDC) units: Σ collateral × LTV (floored) and the debt with the new borrow.
    error LendingPoolBorrowCapacityExceeded(uint256 capacity, uint256 debtAfter);
    error LendingPoolHealthTooLow(uint256 healthAfter);
    error LendingPoolInsufficientLiquidity(uint256 available, uint256 requested);
    error LendingPoolNotLiquidatable(uint256 health);
    error LendingPoolCloseFactorExceeded(uint256 maxRepay, uint256 requested);
    error LendingPoolSwapShortfall(uint256 received, uint256 minOut);
    error LendingPoolHealthWorsened(uint256 healthBefore, uint256 healthAfter);

    // ---------------------------------------------------------------- events
    event CollateralConfigured(
        address indexed asset, address feed, uint256 ltv, uint256 liquidationThreshold, uint256 liquidationBonus
    );
    event BorrowRateUpdated(uint256 oldRatePerSecond, uint256 newRatePerSecond);
    event MaxPriceAgeUpdated(uint256 oldMaxAge, uint256 newMaxAge);
    event InterestAccrued(uint256 oldIndex, uint256 newIndex, uint256 timestamp);
    event CollateralDeposited(address indexed account, address indexed asset, uint256 amount, uint256 balanceAfter);
    event CollateralWithdrawn(
        address indexed account, address indexed asset, uint256 amount, uint256 balanceAfter, address to
    );
    event Borrowed(address indexed account, uint256 amount, uint256 debtBefore, uint256 debtAfter);
    event Repaid(address indexed account, address indexed payer, uint256 amount, uint256 debtBefore, uint256 debtAfter);
    event RepaidWithCollateral(
        address indexed account, address indexed asset, uint256 collateralSold, uint256 proceeds, uint256 repaid
    );
    event Liquidated(
        address indexed account,
        address indexed liquidator,
        address indexed collateralAsset,
        uint256 repaid,
        uint256 seized,
        uint256 healthBefore,
        uint256 healthAfter
    );

    // ---------------------------------------------------------------- functions
    function depositCollateral(address asset, uint256 amount) external;
    function withdrawCollateral(address asset, uint256 amount, address to) external;
    function borrow(uint256 amount) external;
    function repay(uint256 amount, address onBehalfOf) external returns (uint256 repaid);
    function repayWithCollateral(address asset, uint256 amount, address venue, uint256 minOut)
        external
        returns (uint256 proceeds, uint256 repaid);
    function liquidate(address account, address collateralAsset, uint256 repayAmount) external returns (uint256 seized);

    function debtOf(address account) external view returns (uint256);
    function collateralOf(address account, address asset) external view returns (uint256);
    function healthFactor(address account) external view returns (uint256);
    function accountSummary(address account)
        external
        view
        returns (uint256 collateralUsd, uint256 liquidationCapacityUsd, uint256 debt);
    function riskParams(address asset) external view returns (uint256 ltv, uint256 liquidationThreshold);
    function collateralConfig(address asset)
        external
        view
        returns (address feed, uint8 feedDecimals, uint8 tokenDecimals, uint64 ltv, uint64 liquidationThreshold, uint64 liquidationBonus, bool enabled);
}
