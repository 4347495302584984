// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice Types, errors and events of the RiskVault, the ERC-4626 vault the keeper manages.
interface IRiskVault {
    // ---------------------------------------------------------------- types
    /// @notice The vault's risk mandate, set by the strategist. Fractions and multiples are WAD.
    struct Mandate {
        uint256 targetVol; // annualised volatility target of NAV
        uint256 maxLeverage; // Σ collateral value ÷ NAV, at most
        uint256 minHealth; // binding health (min of lending and perp) at least this after risk-increasing actions
        int256 hedgeTarget; // target net delta as a signed fraction of NAV (0 = delta neutral)
        uint256 hedgeBand; // minimum no-trade half-width around the hedge target, fraction of NAV
        uint256 cppiFloor; // protected floor as a fraction of the share-price high-water mark
        uint256 cppiMultiplier; // CPPI multiplier on the cushion
        uint256 kellyFraction; // fraction of the full-Kelly exposure allowed
        uint256 maxSlippageBps; // largest loss against the oracle a keeper trade may take
    }

    /// @notice A spot trade: buy the asset with `amountIn` USDC (borrowing any shortfall) and
    ///         post it as collateral, or sell `amountIn` units of collateral and repay debt.
    struct SwapLeg {
        address asset;
        bool buy;
        uint256 amountIn;
        uint256 minOut;
    }

    /// @notice A perp trade of `sizeDelta` (18-decimal units) filled no worse than `limitPrice` (WAD).
    struct PerpLeg {
        address asset;
        int256 sizeDelta;
        uint256 limitPrice;
    }

    struct AssetSnapshot {
        address token;
        uint8 decimals;
        address priceFeed;
        uint256 price; // USD WAD
        uint256 priceUpdatedAt;
        uint80 priceRound;
        address volFeed;
        uint256 impliedVol; // WAD, annualised
        uint256 volUpdatedAt;
        uint256 collateral; // token units in the lending pool
        uint256 idle; // token units held by the vault
        uint256 ltv; // WAD
        uint256 liquidationThreshold; // WAD
        int256 perpSize; // 18-decimal units, signed
        uint256 perpEntryPrice; // USD WAD
        int256 perpPnl; // USDC units, net of pending funding
        uint256 perpMaintenanceMargin; // WAD
    }

    struct OptionSnapshot {
        uint256 seriesId;
        address underlying;
        bool isCall;
        uint256 strike; // USD WAD
        uint256 expiry;
        int256 size; // 18-decimal units, signed
        uint256 collateral; // locked: underlying units (calls) or USDC units (puts)
        uint256 mark; // USD WAD per unit
        uint256 markUpdatedAt;
    }

    /// @notice Everything a keeper needs, in one call, at one block.
    struct Snapshot {
        uint256 blockNumber;
        uint256 timestamp;
        uint256 totalAssets; // USDC units (NAV)
        uint256 totalSupply;
        uint256 highWaterMark; // share price high-water mark, WAD USDC per share
        uint256 idleUsdc;
        uint256 debt; // USDC units including interest
        uint256 lendingHealth; // WAD
        int256 perpMargin; // USDC units
        int256 perpAccountValue; // USDC units
        uint256 perpHealth; // WAD
        uint256 health; // WAD, min of the two
        uint256 leverage; // WAD
        uint256 swapFeeBps;
        uint256 perpFeeBps;
        uint256 maxPriceAge;
        bool paused;
        uint256 lastActionAt;
        Mandate mandate;
        AssetSnapshot[] assets;
        OptionSnapshot[] options;
    }

    // ---------------------------------------------------------------- errors
    error VaultDeadlinePassed(uint256 deadline, uint256 timestamp);
    error VaultHealthTooLow(uint256 current, uint256 required);
    error VaultLeverageTooHigh(uint256 current, uint256 maximum);
    error VaultDeleverageNoImprovement(uint256 healthBefore, uint256 healthAfter);
    error VaultNotDeleverage(address asset);
    error VaultPausedRiskIncrease();
    error VaultSlippageExceeded(address asset, uint256 minAcceptable, uint256 actual);
    error VaultNavLoss(uint256 navBefore, uint256 navAfter, uint256 allowedLoss);
    error VaultUnknownAsset(address asset);
    error VaultUnknownSeries(uint256 seriesId);
    /// @dev `field` is the Mandate member's index: 0 targetVol, 1 maxLeverage, 2 minHealth,
    ///      3 hedgeTarget, 4 hedgeBand, 5 cppiFloor, 6 cppiMultiplier, 7 kellyFraction, 8 maxSlippageBps.
    error VaultInvalidMandate(uint256 field, int256 value);
    error VaultStalePrice(address feed, uint256 updatedAt, uint256 maxAge);
    error VaultTooManyAssets(uint256 count);
    error VaultTooManySeries(uint256 count);
    error VaultEmptyAction();
    /// @dev `token` is already listed, or is the vault's own asset (USDC): its idle balance
    ///      would be counted twice in NAV.
    error VaultDuplicateAsset(address token);
    /// @dev maxPriceAge must lie in [1, `limit`] seconds.
    error VaultInvalidMaxPriceAge(uint256 maxAge, uint256 limit);
    /// @dev A keeper call trades `asset` in more than one leg of a kind where only one is allowed
    ///      (a round trip: buy and sell, two sells, or two perp legs).
    error VaultDuplicateLeg(address asset);
    /// @dev The keeper-caused NAV loss of the current window, this call's included, would be
    ///      `loss` (USDC units, rounded up) against the window's `allowance` (rounded down).
    error VaultDailyLossExceeded(uint256 loss, uint256 allowance);
    /// @dev A rebalance (or a hedge) within minActionInterval of the last one of its kind,
    ///      at `lastAt`: the next may go at `nextAt`.
    error VaultActionTooSoon(uint256 lastAt, uint256 nextAt);
    /// @dev maxDailyLossBps must lie in [1, 500] and minActionInterval in [0, 1 day].
    error VaultInvalidKeeperLimits(uint256 maxDailyLossBps, uint256 minActionInterval);

    // ---------------------------------------------------------------- events
    event MandateUpdated(Mandate oldMandate, Mandate newMandate);
    event AssetAdded(address indexed token, address priceFeed, address volFeed);
    event MaxPriceAgeUpdated(uint256 oldMaxAge, uint256 newMaxAge);
    event KeeperLimitsUpdated(
        uint256 oldMaxDailyLossBps, uint256 newMaxDailyLossBps, uint256 oldMinActionInterval, uint256 newMinActionInterval
    );
    /// @notice One per keeper action: what it was and the vault's state before and after.
    event KeeperAction(
        bytes32 indexed kind,
        address indexed keeper,
        uint256 navBefore,
        uint256 navAfter,
        uint256 healthBefore,
        uint256 healthAfter,
        uint256 leverageBefore,
        uint256 leverageAfter
    );
    event OptionTraded(uint256 indexed seriesId, int256 sizeBefore, int256 sizeAfter, uint256 premium);
    event OptionSettled(uint256 indexed seriesId, uint256 usdcReceived, uint256 underlyingReceived);
    event HighWaterMarkUpdated(uint256 oldMark, uint256 newMark);

    // ---------------------------------------------------------------- functions
    function rebalance(SwapLeg[] calldata swaps, PerpLeg[] calldata perps, int256 marginDelta, uint256 deadline) external;
    function hedge(PerpLeg[] calldata perps, int256 marginDelta, uint256 deadline) external;
    function deleverage(SwapLeg[] calldata sells, PerpLeg[] calldata perps, uint256 marginTopUp, uint256 deadline) external;
    function snapshot() external view returns (Snapshot memory);
    function mandate() external view returns (Mandate memory);
}
