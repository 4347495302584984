// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {AggregatorV3Interface} from "./interfaces/AggregatorV3Interface.sol";
import {ILendingPool} from "./interfaces/ILendingPool.sol";
import {ISwapVenue} from "./interfaces/ISwapVenue.sol";
import {Oracle} from "./libraries/Oracle.sol";

/// @title LendingPool
/// @notice Aave-style money market with one debt asset (USDC) and several collateral assets,
///         each with an LTV, a liquidation threshold and a liquidation bonus (WAD fractions).
///         Debt accrues per-second interest through a global index. Health factor is
///         Σ collateral value × liquidation threshold ÷ debt, in WAD (1e18 = 1.0); anyone may
///         liquidate an account below 1.0, repaying up to the close factor of its debt and
///         seizing collateral worth the repayment plus the bonus. State changes refuse stale feeds.
/// @dev Rounding: debt is rounded up, collateral value and seized amounts down (pool's favour).
contract LendingPool is ILendingPool, Ownable, ReentrancyGuard {
    using SafeERC20 for IERC20;
    using Math for uint256;

    // ---------------------------------------------------------------- constants
    uint256 private constant WAD = 1e18;
    /// @notice Share of the debt a single liquidation may repay (Aave's default close factor).
    uint256 public constant CLOSE_FACTOR = 0.5e18;

    // ---------------------------------------------------------------- storage
    struct CollateralConfig {
        address feed;
        uint8 feedDecimals;
        uint8 tokenDecimals;
        uint64 ltv;
        uint64 liquidationThreshold;
        uint64 liquidationBonus;
        bool enabled;
    }

    IERC20 public immutable debtAsset;
    uint8 private immutable debtDecimals;

    uint256 public borrowRatePerSecond; // WAD per second, simple within an accrual step
    uint256 public borrowIndex = WAD; // WAD, grows with interest
    uint256 public lastAccrual;
    uint256 public maxPriceAge;
    uint256 public totalScaledDebt;

    address[] public collateralAssets;
    mapping(address => CollateralConfig) public override collateralConfig;
    mapping(address => mapping(address => uint256)) private _collateral; // account => asset => units
    mapping(address => uint256) public scaledDebt; // account => debt / borrowIndex (WAD-scaled)

    constructor(IERC20 debtAsset_, uint8 debtDecimals_, uint256 borrowRatePerSecond_, uint256 maxPriceAge_, address owner_)
        Ownable(owner_)
    {
        debtAsset = debtAsset_;
        debtDecimals = debtDecimals_;
        borrowRatePerSecond = borrowRatePerSecond_;
        maxPriceAge = maxPriceAge_;
        lastAccrual = block.timestamp;
    }

    // ---------------------------------------------------------------- owner
    /// @notice Add or update a collateral asset. Requires ltv < threshold < 1 and threshold × (1 + bonus) < 1.
    function configureCollateral(
        address asset,
        address feed,
        uint8 tokenDecimals,
        uint64 ltv,
        uint64 liquidationThreshold,
        uint64 liquidationBonus
    ) external onlyOwner {
        if (
            ltv == 0 || ltv >= liquidationThreshold || liquidationThreshold >= WAD
                || uint256(liquidationThreshold) * (WAD + liquidationBonus) / WAD >= WAD
        ) revert LendingPoolInvalidConfig(ltv, liquidationThreshold, liquidationBonus);
        if (!collateralConfig[asset].enabled) collateralAssets.push(asset);
        uint8 feedDecimals = AggregatorV3Interface(feed).decimals();
        collateralConfig[asset] =
            CollateralConfig(feed, feedDecimals, tokenDecimals, ltv, liquidationThreshold, liquidationBonus, true);
        emit CollateralConfigured(asset, feed, ltv, liquidationThreshold, liquidationBonus);
    }

    /// @notice Set the per-second borrow rate (WAD). Interest to now is accrued at the old rate first.
    function setBorrowRate(uint256 newRatePerSecond) external onlyOwner {
        accrue();
        emit BorrowRateUpdated(borrowRatePerSecond, newRatePerSecond);
        borrowRatePerSecond = newRatePerSecond;
    }

    /// @notice Set the oldest acceptable feed age, in seconds.
    function setMaxPriceAge(uint256 newMaxAge) external onlyOwner {
        emit MaxPriceAgeUpdated(maxPriceAge, newMaxAge);
        maxPriceAge = newMaxAge;
    }

    // ---------------------------------------------------------------- interest
    /// @notice Bring the borrow index up to now.
    function accrue() public {
        uint256 newIndex = _currentIndex();
        if (newIndex != borrowIndex) emit InterestAccrued(borrowIndex, newIndex, block.timestamp);
        borrowIndex = newIndex;
        if (block.timestamp > lastAccrual) lastAccrual = block.timestamp;
    }

    // ---------------------------------------------------------------- user actions
    /// @notice Deposit `amount` units of collateral `asset` for the caller.
    function depositCollateral(address asset, uint256 amount) external nonReentrant {
        if (amount == 0) revert LendingPoolZeroAmount();
        _config(asset);
        IERC20(asset).safeTransferFrom(msg.sender, address(this), amount);
        uint256 balance = _collateral[msg.sender][asset] + amount;
        _collateral[msg.sender][asset] = balance;
        emit CollateralDeposited(msg.sender, asset, amount, balance);
    }

    /// @notice Withdraw collateral to `to`; the caller's health must stay at or above 1.0.
    function withdrawCollateral(address asset, uint256 amount, address to) external nonReentrant {
        if (amount == 0) revert LendingPoolZeroAmount();
        _config(asset);
        accrue();
        uint256 balance = _collateral[msg.sender][asset];
        if (amount > balance) revert LendingPoolInsufficientCollateral(asset, balance, amount);
        _collateral[msg.sender][asset] = balance - amount;
        if (scaledDebt[msg.sender] > 0) {
            uint256 health = _health(msg.sender, true);
            if (health < WAD) revert LendingPoolHealthTooLow(health);
        }
        IERC20(asset).safeTransfer(to, amount);
        emit CollateralWithdrawn(msg.sender, asset, amount, balance - amount, to);
    }

    /// @notice Borrow `amount` of the debt asset; the debt after must fit within Σ collateral × LTV.
    function borrow(uint256 amount) external nonReentrant {
        if (amount == 0) revert LendingPoolZeroAmount();
        accrue();
        uint256 available = debtAsset.balanceOf(address(this));
        if (amount > available) revert LendingPoolInsufficientLiquidity(available, amount);
        uint256 debtBefore = _debt(msg.sender, borrowIndex);
        // Scaled debt rounds up so the borrower owes at least what was lent.
        uint256 added = amount.mulDiv(WAD, borrowIndex, Math.Rounding.Ceil);
        scaledDebt[msg.sender] += added;
        totalScaledDebt += added;
        uint256 debtAfter = _debt(msg.sender, borrowIndex);
        // Capacity is valued in USD WAD, debt in debt-asset units: compare in debt-asset units,
        // capacity floored (the pool's favour).
        (, uint256 capacityUsd,) = _valuation(msg.sender, true);
        uint256 capacity = capacityUsd.mulDiv(10 ** debtDecimals, WAD);
        if (debtAfter > capacity) revert LendingPoolBorrowCapacityExceeded(capacity, debtAfter);
        debtAsset.safeTransfer(msg.sender, amount);
        emit Borrowed(msg.sender, amount, debtBefore, debtAfter);
    }

    /// @notice Repay up to `amount` of `onBehalfOf`'s debt (capped at the debt); returns what was repaid.
    function repay(uint256 amount, address onBehalfOf) external nonReentrant returns (uint256 repaid) {
        accrue();
        uint256 debtBefore = _debt(onBehalfOf, borrowIndex);
        repaid = _reduceDebt(onBehalfOf, amount, debtBefore);
        debtAsset.safeTransferFrom(msg.sender, address(this), repaid);
        emit Repaid(onBehalfOf, msg.sender, repaid, debtBefore, debtBefore - repaid);
    }

    /// @notice Sell `amount` of the caller's own collateral `asset` on `venue` for at least
    ///         `minOut` USDC and repay the caller's debt with the proceeds; any excess goes to the
    ///         caller. Works below health 1.0 (where a plain withdraw is refused) because health
    ///         must end at or above 1.0 or strictly above where it started.
    /// @dev Only the caller's own collateral moves, so a hostile `venue` can only hurt its caller;
    ///      the proceeds are measured as the pool's own balance change, not trusted from the venue.
    function repayWithCollateral(address asset, uint256 amount, address venue, uint256 minOut)
        external
        nonReentrant
        returns (uint256 proceeds, uint256 repaid)
    {
        if (amount == 0) revert LendingPoolZeroAmount();
        _config(asset);
        accrue();
        uint256 balance = _collateral[msg.sender][asset];
        if (amount > balance) revert LendingPoolInsufficientCollateral(asset, balance, amount);
        uint256 healthBefore = _health(msg.sender, false);
        _collateral[msg.sender][asset] = balance - amount;

        uint256 cashBefore = debtAsset.balanceOf(address(this));
        IERC20(asset).forceApprove(venue, amount);
        ISwapVenue(venue).swap(asset, address(debtAsset), amount, minOut, address(this));
        IERC20(asset).forceApprove(venue, 0);
        proceeds = debtAsset.balanceOf(address(this)) - cashBefore;
        if (proceeds < minOut) revert LendingPoolSwapShortfall(proceeds, minOut);

        uint256 debt = _debt(msg.sender, borrowIndex);
        repaid = _reduceDebt(msg.sender, proceeds, debt);
        uint256 healthAfter = _health(msg.sender, true);
        if (healthAfter < WAD && healthAfter <= healthBefore) revert LendingPoolHealthWorsened(healthBefore, healthAfter);
        if (proceeds > repaid) debtAsset.safeTransfer(msg.sender, proceeds - repaid);
        emit RepaidWithCollateral(msg.sender, asset, amount, proceeds, repaid);
        emit Repaid(msg.sender, msg.sender, repaid, debt, debt - repaid);
    }

    /// @notice Liquidate `account` (health < 1.0): repay up to the close factor of its debt and
    ///         receive collateral worth the repayment plus the asset's bonus.
    function liquidate(address account, address collateralAsset, uint256 repayAmount)
        external
        nonReentrant
        returns (uint256 seized)
    {
        CollateralConfig memory cfg = _config(collateralAsset);
        accrue();
        uint256 healthBefore = _health(account, true);
        if (healthBefore >= WAD) revert LendingPoolNotLiquidatable(healthBefore);
        uint256 debt = _debt(account, borrowIndex);
        uint256 maxRepay = debt.mulDiv(CLOSE_FACTOR, WAD);
        if (repayAmount > maxRepay) revert LendingPoolCloseFactorExceeded(maxRepay, repayAmount);
        if (repayAmount == 0) revert LendingPoolZeroAmount();

        uint256 price = Oracle.strictWad(AggregatorV3Interface(cfg.feed), cfg.feedDecimals, maxPriceAge);
        uint256 repayUsd = Oracle.toWad(repayAmount, debtDecimals);
        seized = repayUsd.mulDiv(WAD + cfg.liquidationBonus, WAD).mulDiv(10 ** cfg.tokenDecimals, price);
        uint256 available = _collateral[account][collateralAsset];
        if (seized > available) {
            // Not enough of this collateral: seize all of it and scale the repayment down to match.
            seized = available;
            repayAmount = available.mulDiv(price, 10 ** cfg.tokenDecimals).mulDiv(WAD, WAD + cfg.liquidationBonus)
                .mulDiv(10 ** debtDecimals, WAD, Math.Rounding.Ceil);
            if (repayAmount > debt) repayAmount = debt;
        }
        // Effects before interactions: the account's books are settled before tokens move.
        _reduceDebt(account, repayAmount, debt);
        _collateral[account][collateralAsset] = available - seized;
        debtAsset.safeTransferFrom(msg.sender, address(this), repayAmount);
        IERC20(collateralAsset).safeTransfer(msg.sender, seized);
        emit Liquidated(account, msg.sender, collateralAsset, repayAmount, seized, healthBefore, _health(account, false));
    }

    // ---------------------------------------------------------------- views
    /// @notice Debt of `account` including interest accrued up to now (rounded up).
    function debtOf(address account) public view returns (uint256) {
        return _debt(account, _currentIndex());
    }

    function collateralOf(address account, address asset) external view returns (uint256) {
        return _collateral[account][asset];
    }

    function collateralAssetsLength() external view returns (uint256) {
        return collateralAssets.length;
    }

    /// @notice Health factor in WAD (type(uint256).max with no debt). Uses the latest feed answers
    ///         without a staleness check, so a keeper can always read it.
    function healthFactor(address account) external view returns (uint256) {
        return _health(account, false);
    }

    /// @notice In one pass, at the latest prices: Σ collateral value and Σ value × liquidation
    ///         threshold (USD WAD, floored), and the debt with interest to now (USDC units, ceiled).
    ///         Health is liquidationCapacityUsd ÷ debt; borrowers' tools should not ask twice.
    function accountSummary(address account)
        external
        view
        returns (uint256 collateralUsd, uint256 liquidationCapacityUsd, uint256 debt)
    {
        (collateralUsd,, liquidationCapacityUsd) = _valuation(account, false);
        debt = _debt(account, _currentIndex());
    }

    /// @notice LTV and liquidation threshold of a collateral asset (WAD; zero when not listed).
    function riskParams(address asset) external view returns (uint256 ltv, uint256 liquidationThreshold) {
        CollateralConfig storage cfg = collateralConfig[asset];
        return (cfg.ltv, cfg.liquidationThreshold);
    }

    /// @notice Borrow capacity (Σ value × LTV) and liquidation capacity (Σ value × threshold), USD WAD.
    function accountCapacity(address account) external view returns (uint256 borrowCapacity, uint256 liquidationCapacity) {
        (, borrowCapacity, liquidationCapacity) = _valuation(account, false);
    }

    // ---------------------------------------------------------------- internal
    function _config(address asset) private view returns (CollateralConfig memory cfg) {
        cfg = collateralConfig[asset];
        if (!cfg.enabled) revert LendingPoolUnknownAsset(asset);
    }

    function _currentIndex() private view returns (uint256) {
        // A call may run at a timestamp before the last accrual (eth_call environments, nodes
        // whose clock trails a burst of blocks): no time has passed then, never an underflow.
        uint256 elapsed = block.timestamp > lastAccrual ? block.timestamp - lastAccrual : 0;
        if (elapsed == 0 || borrowRatePerSecond == 0) return borrowIndex;
        return borrowIndex.mulDiv(WAD + borrowRatePerSecond * elapsed, WAD, Math.Rounding.Ceil);
    }

    function _debt(address account, uint256 index) private view returns (uint256) {
        return scaledDebt[account].mulDiv(index, WAD, Math.Rounding.Ceil);
    }

    function _reduceDebt(address account, uint256 amount, uint256 debt) private returns (uint256 repaid) {
        repaid = amount > debt ? debt : amount;
        uint256 scaled = scaledDebt[account];
        // Paying off everything clears the scaled balance exactly; otherwise remove rounded down.
        uint256 removed = repaid == debt ? scaled : repaid.mulDiv(WAD, borrowIndex);
        if (removed > scaled) removed = scaled;
        scaledDebt[account] = scaled - removed;
        totalScaledDebt -= removed;
    }

    /// @dev Σ collateral value, Σ value × LTV and Σ value × threshold (USD WAD, floored), at
    ///      strict (state changes) or latest (views) prices: the one loop over collateral.
    function _valuation(address account, bool strict)
        private
        view
        returns (uint256 value, uint256 borrowCap, uint256 liqCap)
    {
        uint256 n = collateralAssets.length;
        for (uint256 i = 0; i < n; i++) {
            address asset = collateralAssets[i];
            uint256 amount = _collateral[account][asset];
            if (amount == 0) continue;
            CollateralConfig memory cfg = collateralConfig[asset];
            uint256 price;
            if (strict) {
                price = Oracle.strictWad(AggregatorV3Interface(cfg.feed), cfg.feedDecimals, maxPriceAge);
            } else {
                (price,) = Oracle.latestWad(AggregatorV3Interface(cfg.feed), cfg.feedDecimals);
            }
            uint256 assetValue = amount.mulDiv(price, 10 ** cfg.tokenDecimals);
            value += assetValue;
            borrowCap += assetValue.mulDiv(cfg.ltv, WAD);
            liqCap += assetValue.mulDiv(cfg.liquidationThreshold, WAD);
        }
    }

    function _health(address account, bool strict) private view returns (uint256) {
        uint256 debt = _debt(account, strict ? borrowIndex : _currentIndex());
        if (debt == 0) return type(uint256).max;
        (,, uint256 liqCap) = _valuation(account, strict);
        return liqCap.mulDiv(WAD, Oracle.toWad(debt, debtDecimals));
    }
}
