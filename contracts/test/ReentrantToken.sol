// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title ReentrantToken
/// @notice TEST ONLY — neither the keeper nor the devnet deploys it. A 6-decimal ERC-20 that, once
///         armed, calls `target` with `payload` from inside its next transfer, before any balance
///         moves (as an ERC-777 `tokensToSend` hook would), and records the outcome. The
///         integration tests build a vault on it to attempt reentrant ERC-4626 calls.
contract ReentrantToken is ERC20 {
    // ---------------------------------------------------------------- storage
    address public target;
    bytes public payload;
    bool public attempted;
    bool public succeeded;
    bytes public revertData;

    constructor() ERC20("Reentrant USD (test)", "rUSD") {}

    // ---------------------------------------------------------------- test controls
    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Anyone may mint: a test token.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Let `spender` pull this contract's own tokens (it deposits from itself when reentering).
    function approveSelf(address spender, uint256 amount) external {
        _approve(address(this), spender, amount);
    }

    /// @notice Call `target_` with `data` during the next transfer (once).
    function arm(address target_, bytes calldata data) external {
        target = target_;
        payload = data;
        attempted = false;
        succeeded = false;
        delete revertData;
    }

    // ---------------------------------------------------------------- hook
    function _update(address from, address to, uint256 value) internal override {
        address t = target;
        if (t != address(0)) {
            target = address(0);
            attempted = true;
            (bool ok, bytes memory ret) = t.call(payload);
            succeeded = ok;
            if (!ok) revertData = ret;
        }
        super._update(from, to, value);
    }
}
