// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice European cash-settled options; the market is the counterparty at a mark feed ± spread.
interface IOptionMarket {
    // ---------------------------------------------------------------- errors
    error OptionMarketUnknownSeries(uint256 seriesId);
    error OptionMarketInvalidSeries(uint256 strike, uint256 expiry);
    error OptionMarketExpired(uint256 seriesId, uint256 expiry);
    error OptionMarketNotExpired(uint256 seriesId, uint256 expiry);
    error OptionMarketZeroAmount();
    error OptionMarketPremiumLimit(uint256 premium, uint256 limit);
    error OptionMarketNoPosition(uint256 seriesId, address account);
    error OptionMarketSettlementPriceStale(uint256 seriesId, uint256 updatedAt, uint256 expiry);
    error OptionMarketInvalidSpread(uint256 spreadBps);

    // ---------------------------------------------------------------- events
    event SeriesCreated(
        uint256 indexed seriesId, address indexed underlying, bool isCall, uint256 strike, uint256 expiry, address markFeed
    );
    event SpreadUpdated(uint256 oldSpreadBps, uint256 newSpreadBps);
    event Traded(
        address indexed account,
        uint256 indexed seriesId,
        int256 sizeBefore,
        int256 sizeAfter,
        uint256 premium,
        uint256 collateralBefore,
        uint256 collateralAfter
    );
    event SettlementPriceSet(uint256 indexed seriesId, uint256 price);
    event Settled(uint256 indexed seriesId, address indexed account, int256 size, uint256 usdcPaid, uint256 underlyingReturned);

    // ---------------------------------------------------------------- types
    struct Series {
        address underlying;
        address spotFeed;
        address markFeed;
        uint8 spotDecimals;
        uint8 markDecimals;
        uint8 underlyingDecimals;
        bool isCall;
        uint256 strike; // USD WAD
        uint256 expiry; // unix seconds
        uint256 settlementPrice; // USD WAD, 0 until fixed after expiry
    }

    // ---------------------------------------------------------------- functions
    function trade(uint256 seriesId, int256 sizeDelta, uint256 premiumLimit) external returns (uint256 premium);
    function settle(uint256 seriesId, address account) external returns (uint256 usdcPaid, uint256 underlyingReturned);
    function getSeries(uint256 seriesId) external view returns (Series memory);
    function positionOf(address account, uint256 seriesId) external view returns (int256 size, uint256 collateral);
    function quote(uint256 seriesId, int256 sizeDelta) external view returns (uint256 premium);
    function markPrice(uint256 seriesId) external view returns (uint256 price, uint256 updatedAt);
    function markFeedOf(uint256 seriesId) external view returns (address markFeed, uint256 expiry);
    function positionValue(address account, uint256 seriesId) external view returns (int256 valueUsd);
    function spreadBps() external view returns (uint256);
}
