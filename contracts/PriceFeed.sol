// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {AggregatorV3Interface} from "./interfaces/AggregatorV3Interface.sol";

/// @title PriceFeed
/// @notice A Chainlink `AggregatorV3Interface`-compatible feed whose owner pushes rounds with
///         `updateAnswer` (the name Chainlink's own test aggregator uses). Every round is kept,
///         so history can be read by round id. Used for spot prices, implied volatility and
///         option marks.
contract PriceFeed is AggregatorV3Interface, Ownable {
    // ---------------------------------------------------------------- errors
    error PriceFeedNoRound(uint80 roundId);
    error PriceFeedAnswerOutOfRange(int256 answer);

    // ---------------------------------------------------------------- events
    /// @dev Chainlink's own event, so off-chain tools that index feeds understand it.
    event AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt);
    event NewRound(uint256 indexed roundId, address indexed startedBy, uint256 startedAt);

    // ---------------------------------------------------------------- storage
    /// @dev One storage slot per round, so a read costs one SLOAD: answers fit int192 (Chainlink's
    ///      own aggregators use int192), and a round starts when it is updated.
    struct Round {
        int192 answer;
        uint64 updatedAt;
    }

    uint8 public immutable override decimals;
    uint256 public constant override version = 4;
    string private _description;
    uint80 public latestRound;
    mapping(uint80 => Round) private _rounds;

    constructor(uint8 decimals_, string memory description_, int256 initialAnswer, address owner_)
        Ownable(owner_)
    {
        decimals = decimals_;
        _description = description_;
        _push(initialAnswer);
    }

    // ---------------------------------------------------------------- owner
    /// @notice Push a new round with `answer`, timestamped now. Owner only.
    function updateAnswer(int256 answer) external onlyOwner {
        _push(answer);
    }

    // ---------------------------------------------------------------- views
    function description() external view override returns (string memory) {
        return _description;
    }

    /// @notice The data of round `roundId`; reverts with `PriceFeedNoRound` for an unknown id.
    function getRoundData(uint80 roundId)
        public
        view
        override
        returns (uint80, int256, uint256, uint256, uint80)
    {
        if (roundId == 0 || roundId > latestRound) revert PriceFeedNoRound(roundId);
        Round storage r = _rounds[roundId];
        return (roundId, r.answer, r.updatedAt, r.updatedAt, roundId);
    }

    /// @notice The newest round.
    function latestRoundData() external view override returns (uint80, int256, uint256, uint256, uint80) {
        return getRoundData(latestRound);
    }

    function latestAnswer() external view returns (int256) {
        return _rounds[latestRound].answer;
    }

    function latestTimestamp() external view returns (uint256) {
        return _rounds[latestRound].updatedAt;
    }

    // ---------------------------------------------------------------- internal
    function _push(int256 answer) private {
        if (answer > type(int192).max || answer < type(int192).min) revert PriceFeedAnswerOutOfRange(answer);
        uint80 id = latestRound + 1;
        latestRound = id;
        _rounds[id] = Round(int192(answer), uint64(block.timestamp));
        emit NewRound(id, msg.sender, block.timestamp);
        emit AnswerUpdated(answer, id, block.timestamp);
    }
}
