// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AggregatorV3Interface} from "../interfaces/AggregatorV3Interface.sol";

/// @notice Reads Chainlink-style feeds and normalises answers to 18-decimal fixed point (WAD).
/// @dev Two flavours: `strictWad` for state-changing paths (refuses stale or non-positive
///      answers), `latestWad` for views, which must never revert so that a keeper can still
///      read a vault whose feed went stale and decide to do nothing.
library Oracle {
    // ---------------------------------------------------------------- errors
    error OracleStalePrice(address feed, uint256 updatedAt, uint256 maxAge);
    error OracleInvalidPrice(address feed, int256 answer);

    // ---------------------------------------------------------------- logic
    /// @notice Latest answer scaled to WAD; reverts when stale (older than `maxAge`) or <= 0.
    function strictWad(AggregatorV3Interface feed, uint8 feedDecimals, uint256 maxAge)
        internal
        view
        returns (uint256)
    {
        (, int256 answer,, uint256 updatedAt,) = feed.latestRoundData();
        if (answer <= 0) revert OracleInvalidPrice(address(feed), answer);
        if (block.timestamp > updatedAt + maxAge) revert OracleStalePrice(address(feed), updatedAt, maxAge);
        return toWad(uint256(answer), feedDecimals);
    }

    /// @notice Latest answer scaled to WAD with its timestamp; a non-positive answer reads as 0.
    function latestWad(AggregatorV3Interface feed, uint8 feedDecimals)
        internal
        view
        returns (uint256 price, uint256 updatedAt)
    {
        int256 answer;
        (, answer,, updatedAt,) = feed.latestRoundData();
        price = answer > 0 ? toWad(uint256(answer), feedDecimals) : 0;
    }

    function toWad(uint256 value, uint8 decimals_) internal pure returns (uint256) {
        return decimals_ <= 18 ? value * 10 ** (18 - decimals_) : value / 10 ** (decimals_ - 18);
    }
}
