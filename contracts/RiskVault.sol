// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC4626} from "@openzeppelin/contracts/token/ERC20/extensions/ERC4626.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SignedMath} from "@openzeppelin/contracts/utils/math/SignedMath.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {AggregatorV3Interface} from "./interfaces/AggregatorV3Interface.sol";
import {ILendingPool} from "./interfaces/ILendingPool.sol";
import {ISwapVenue} from "./interfaces/ISwapVenue.sol";
import {IPerpMarket} from "./interfaces/IPerpMarket.sol";
import {IOptionMarket} from "./interfaces/IOptionMarket.sol";
import {IRiskVault} from "./interfaces/IRiskVault.sol";
import {Oracle} from "./libraries/Oracle.sol";

/// @title RiskVault
/// @notice ERC-4626 vault on USDC holding leveraged collateral (lending pool), perpetual hedges
///         and options. `totalAssets()` marks everything from the feeds. The strategist sets the
///         mandate and trades options; the keeper may only rebalance, hedge and deleverage, within
///         rules this contract enforces whatever it is sent:
///         - every keeper trade has a deadline and a slippage bound (the mandate's maxSlippageBps,
///           at most MAX_SLIPPAGE_BPS, against the oracle, per leg, and on NAV as a whole);
///         - a keeper call trades each asset once per venue (a leveraged buy may be split into
///           several buys): no round trip of an asset within one call;
///         - after a risk-increasing action, health ≥ minHealth and leverage ≤ maxLeverage;
///         - a deleverage only sells and shrinks, and must strictly improve health;
///         - pause blocks risk-increasing actions, never deleverage;
///         - across calls: keeper-caused NAV loss is capped per 24 h window (maxDailyLossBps of
///           NAV; rescues below minHealth exempt), and two rebalances (or two hedges) are at
///           least minActionInterval apart (see _applyLimits);
///         - every token a keeper action moves goes to a venue on the vault's behalf or back to
///           the vault: there is no path to an outside address.
/// @dev Rounding: ERC-4626 conversions round in the vault's favour (OpenZeppelin), with
///      DECIMALS_OFFSET virtual shares against donations; NAV is floored; keeper loss budgets are
///      floored (vault's favour); the loss counted against the window is rounded up and its
///      allowance down; health and leverage use the venues' own rounding (pool's favour).
contract RiskVault is IRiskVault, ERC4626, AccessControl, Pausable, ReentrancyGuard {
    using SafeERC20 for IERC20;
    using Math for uint256;

    // ---------------------------------------------------------------- roles
    bytes32 public constant STRATEGIST_ROLE = keccak256("STRATEGIST_ROLE");
    bytes32 public constant KEEPER_ROLE = keccak256("KEEPER_ROLE");
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");

    // ---------------------------------------------------------------- constants
    uint256 private constant WAD = 1e18;
    uint256 private constant BPS = 10_000;
    /// @notice Bounds the loops in every valuation, so gas per action stays predictable.
    uint256 public constant MAX_ASSETS = 4;
    uint256 public constant MAX_SERIES = 16;
    bytes32 private constant KIND_REBALANCE = "rebalance";
    bytes32 private constant KIND_HEDGE = "hedge";
    bytes32 private constant KIND_DELEVERAGE = "deleverage";
    bytes32 private constant KIND_REPAY = "repay";
    uint256 private constant REPAY_ROUNDING_UNITS = 10;
    /// @notice Shares have this many more decimals than USDC (OpenZeppelin's virtual shares):
    ///         10**6 virtual shares per virtual asset unit. A first depositor's donation is then
    ///         shared with the virtual shares, and to round a later deposit down by one USDC unit
    ///         it must be about 10**6 times that deposit, which makes the inflation attack cost
    ///         far more than it can take.
    uint8 public constant DECIMALS_OFFSET = 6;
    /// @notice maxPriceAge ceiling (seconds): one day, the longest heartbeat Chainlink feeds use
    ///         (ETH/USD, BTC/USD beat hourly). A feed older than that has missed its heartbeat
    ///         and must not price deposits, withdrawals or keeper trades.
    uint256 public constant MAX_PRICE_AGE_LIMIT = 1 days;
    /// @notice maxSlippageBps ceiling: 1 %, ten times the seeded venue's 10 bps swap fee and twice
    ///         what the seeded vaults use (50 bps). It bounds both each leg's fill against the oracle and
    ///         the NAV a keeper call may lose, so a mandate cannot hand the keeper 10 % per trade.
    uint256 public constant MAX_SLIPPAGE_BPS = 100;
    /// @notice The keeper-loss window: keeper-caused NAV loss is summed over fixed windows of
    ///         this length, each opened by the first keeper action after the last one closed.
    uint256 public constant LOSS_WINDOW = 1 days;
    /// @notice maxDailyLossBps ceiling: 5 % of NAV per window. Default (constructor): 1 %, about
    ///         20× what the keeper itself loses on its worst simulated day, so it never binds it.
    uint256 public constant MAX_DAILY_LOSS_BPS_LIMIT = 500;
    /// @notice minActionInterval ceiling: one day. Default (constructor): 0, off — every deployer
    ///         seeds a vault with a keeper rebalance, and tools rebalance again seconds later; an
    ///         operator turns it on with setKeeperLimits (300 s leaves the keeper unchanged: it
    ///         sends at most one rebalance and one hedge a tick).
    uint256 public constant MAX_ACTION_INTERVAL_LIMIT = 1 days;

    // ---------------------------------------------------------------- storage
    struct AssetConfig {
        address token;
        address priceFeed;
        address volFeed;
        uint8 tokenDecimals;
        uint8 priceDecimals;
        uint8 volDecimals;
    }

    struct State {
        uint256 nav; // USDC units
        uint256 health; // WAD, min of the two below
        uint256 leverage; // WAD
        uint256 lendingHealth; // WAD
        uint256 perpHealth; // WAD
        uint256 debt; // USDC units
        int256 perpValue; // USDC units
    }

    /// @dev The keeper limits and their clocks, packed in one slot (one read, one write a call).
    struct Limits {
        uint40 lastActionAt; // any keeper action
        uint40 lastRebalanceAt;
        uint40 lastHedgeAt;
        uint40 windowStart; // 0: no window yet
        uint16 maxDailyLossBps;
        uint32 minActionInterval; // seconds, between two rebalances and between two hedges
    }

    /// @dev The open loss window: NAV when it opened and the keeper-caused loss counted in it.
    struct LossWindow {
        uint128 nav; // USDC units
        uint128 loss; // USDC units
    }

    ILendingPool public immutable pool;
    ISwapVenue public immutable swapVenue;
    IPerpMarket public immutable perps;
    IOptionMarket public immutable options;
    IERC20 private immutable _usdc;
    uint256 private immutable _usdcToWad;

    Mandate private _mandate;
    AssetConfig[] private _assets;
    mapping(address => uint256) private _assetIndex; // token => index + 1
    uint256[] private _series;
    uint256 public maxPriceAge;
    uint256 public highWaterMark; // WAD USDC units per share unit
    Limits private _limits;
    LossWindow private _window;

    constructor(
        IERC20 usdc_,
        string memory name_,
        string memory symbol_,
        ILendingPool pool_,
        ISwapVenue swapVenue_,
        IPerpMarket perps_,
        IOptionMarket options_,
        Mandate memory mandate_,
        uint256 maxPriceAge_,
        address admin_
    ) ERC20(name_, symbol_) ERC4626(usdc_) {
        pool = pool_;
        swapVenue = swapVenue_;
        perps = perps_;
        options = options_;
        _usdc = usdc_;
        _usdcToWad = 10 ** (18 - IERC20Metadata(address(usdc_)).decimals());
        _validateMandate(mandate_);
        _validateMaxPriceAge(maxPriceAge_);
        _mandate = mandate_;
        maxPriceAge = maxPriceAge_;
        _limits.maxDailyLossBps = 100;
        // The initial share price: 1 USDC unit buys 10**DECIMALS_OFFSET share units.
        highWaterMark = WAD / 10 ** DECIMALS_OFFSET;
        _grantRole(DEFAULT_ADMIN_ROLE, admin_);
        // Standing approvals to the immutable venues (which hold the vault's positions anyway):
        // one SSTORE here instead of one per trade. Amounts are bounded by each call's arguments.
        usdc_.forceApprove(address(swapVenue_), type(uint256).max);
        usdc_.forceApprove(address(perps_), type(uint256).max);
        usdc_.forceApprove(address(options_), type(uint256).max);
        usdc_.forceApprove(address(pool_), type(uint256).max);
        emit MandateUpdated(Mandate(0, 0, 0, 0, 0, 0, 0, 0, 0), mandate_);
    }

    // ================================================================ admin / guardian
    /// @notice Add a risky asset the vault may hold: spot feed, implied-volatility feed.
    ///         Each token once, and never USDC itself: NAV adds every listed token's idle balance.
    function addAsset(address token, address priceFeed, address volFeed) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (_assetIndex[token] != 0 || token == address(_usdc)) revert VaultDuplicateAsset(token);
        if (_assets.length >= MAX_ASSETS) revert VaultTooManyAssets(_assets.length + 1);
        _assets.push(
            AssetConfig(
                token,
                priceFeed,
                volFeed,
                IERC20Metadata(token).decimals(),
                AggregatorV3Interface(priceFeed).decimals(),
                AggregatorV3Interface(volFeed).decimals()
            )
        );
        _assetIndex[token] = _assets.length;
        IERC20(token).forceApprove(address(pool), type(uint256).max);
        IERC20(token).forceApprove(address(options), type(uint256).max);
        emit AssetAdded(token, priceFeed, volFeed);
    }

    /// @notice Oldest acceptable feed age (seconds) for deposits, withdrawals and keeper actions,
    ///         in [1, MAX_PRICE_AGE_LIMIT]: 0 would refuse every feed but in its own block.
    function setMaxPriceAge(uint256 newMaxAge) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _validateMaxPriceAge(newMaxAge);
        emit MaxPriceAgeUpdated(maxPriceAge, newMaxAge);
        maxPriceAge = newMaxAge;
    }

    /// @notice The keeper limits: at most `maxDailyLossBps` of NAV (at the window's start) lost
    ///         to keeper calls per LOSS_WINDOW, in [1, MAX_DAILY_LOSS_BPS_LIMIT]; at least
    ///         `minActionInterval` seconds between two rebalances and between two hedges, in
    ///         [0, MAX_ACTION_INTERVAL_LIMIT] (0: no interval). Both apply at once, also to the
    ///         window already open. Admin only.
    function setKeeperLimits(uint256 maxDailyLossBps, uint256 minActionInterval) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (
            maxDailyLossBps == 0 || maxDailyLossBps > MAX_DAILY_LOSS_BPS_LIMIT
                || minActionInterval > MAX_ACTION_INTERVAL_LIMIT
        ) revert VaultInvalidKeeperLimits(maxDailyLossBps, minActionInterval);
        emit KeeperLimitsUpdated(_limits.maxDailyLossBps, maxDailyLossBps, _limits.minActionInterval, minActionInterval);
        _limits.maxDailyLossBps = uint16(maxDailyLossBps);
        _limits.minActionInterval = uint32(minActionInterval);
    }

    /// @notice Stop risk-increasing actions and deposits. Guardian only.
    function pause() external onlyRole(GUARDIAN_ROLE) {
        _pause();
    }

    /// @notice Resume. Admin only: the guardian can stop the vault, not restart it.
    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    // ================================================================ strategist
    /// @notice Replace the mandate. Emits the old and new values.
    function setMandate(Mandate calldata newMandate) external onlyRole(STRATEGIST_ROLE) {
        _validateMandate(newMandate);
        emit MandateUpdated(_mandate, newMandate);
        _mandate = newMandate;
    }

    /// @notice Buy (`sizeDelta` > 0) or sell options of `seriesId` for the vault. Short calls are
    ///         covered with underlying taken from idle balance, then from lending collateral.
    function tradeOption(uint256 seriesId, int256 sizeDelta, uint256 premiumLimit)
        external
        onlyRole(STRATEGIST_ROLE)
        nonReentrant
    {
        _requireFresh();
        IOptionMarket.Series memory s = options.getSeries(seriesId);
        if (s.expiry == 0) revert VaultUnknownSeries(seriesId);
        if (_assetIndex[s.underlying] == 0) revert VaultUnknownAsset(s.underlying);
        State memory before = _state();
        (int256 sizeBefore, uint256 lockedBefore) = options.positionOf(address(this), seriesId);
        if (sizeBefore == 0) _trackSeries(seriesId);

        if (sizeDelta < 0 && s.isCall) {
            int256 shortAfter = -(sizeBefore + sizeDelta);
            if (shortAfter > 0) {
                uint256 needed = uint256(shortAfter).mulDiv(10 ** s.underlyingDecimals, WAD, Math.Rounding.Ceil);
                if (needed > lockedBefore) _freeUnderlying(s.underlying, needed - lockedBefore);
            }
        }
        // The option market enforces premiumLimit on what it takes or pays.
        uint256 premium = options.trade(seriesId, sizeDelta, premiumLimit);
        _depositIdle(s.underlying);

        _checkAfter(before, _state());
        (int256 sizeAfter,) = options.positionOf(address(this), seriesId);
        if (sizeAfter == 0) _untrackSeries(seriesId);
        emit OptionTraded(seriesId, sizeBefore, sizeAfter, premium);
    }

    /// @notice Settle an expired series the vault holds; anyone may call (proceeds stay in the vault).
    function settleOption(uint256 seriesId) external nonReentrant {
        (uint256 usdcReceived, uint256 underlyingReceived) = options.settle(seriesId, address(this));
        IOptionMarket.Series memory s = options.getSeries(seriesId);
        _depositIdle(s.underlying);
        _untrackSeries(seriesId);
        emit OptionSettled(seriesId, usdcReceived, underlyingReceived);
    }

    // ================================================================ keeper
    /// @notice Trade spot collateral and perps towards the target allocation. Buys borrow any
    ///         USDC shortfall; sells repay debt. `marginDelta` > 0 moves idle USDC into perp margin
    ///         before the trades (borrowing what idle cash lacks), < 0 withdraws margin after them.
    function rebalance(SwapLeg[] calldata swaps, PerpLeg[] calldata perpLegs, int256 marginDelta, uint256 deadline)
        external
        onlyRole(KEEPER_ROLE)
        nonReentrant
    {
        if (swaps.length == 0 && perpLegs.length == 0 && marginDelta == 0) revert VaultEmptyAction();
        (State memory before, uint256 lossBudget) = _begin(deadline, marginDelta);
        lossBudget += _swaps(swaps) + _tradePerps(perpLegs);
        if (marginDelta < 0) perps.withdrawMargin(uint256(-marginDelta));
        _end(before, lossBudget);
    }

    /// @notice Change perp positions (and margin) to bring net delta towards the mandate's target.
    function hedge(PerpLeg[] calldata perpLegs, int256 marginDelta, uint256 deadline)
        external
        onlyRole(KEEPER_ROLE)
        nonReentrant
    {
        if (perpLegs.length == 0 && marginDelta == 0) revert VaultEmptyAction();
        (State memory before, uint256 lossBudget) = _begin(deadline, marginDelta);
        lossBudget += _tradePerps(perpLegs);
        if (marginDelta < 0) perps.withdrawMargin(uint256(-marginDelta));
        _end(before, lossBudget);
    }

    /// @notice Reduce risk: sell collateral to repay debt, shrink perps, top up perp margin from
    ///         idle USDC (borrowing what it lacks: lending room moved to the perp venue when that
    ///         one binds). Allowed while paused; must strictly improve health.
    function deleverage(SwapLeg[] calldata sells, PerpLeg[] calldata perpLegs, uint256 marginTopUp, uint256 deadline)
        external
        onlyRole(KEEPER_ROLE)
        nonReentrant
    {
        if (sells.length == 0 && perpLegs.length == 0 && marginTopUp == 0) revert VaultEmptyAction();
        (State memory before, uint256 lossBudget) = _begin(deadline, SafeCastInt.toInt(marginTopUp));
        lossBudget += _swaps(sells) + _tradePerps(perpLegs);
        _end(before, lossBudget);
    }

    /// @notice Reduce lending risk without selling: withdraw `marginWithdraw` USDC of surplus
    ///         perp margin into the vault (the perp market refuses to go below initial margin),
    ///         then repay up to `repayAmount` of the vault's debt from idle USDC. Allowed while
    ///         paused; must strictly improve health. The cash only moves between the vault and
    ///         its own venue accounts.
    function repayDebt(uint256 marginWithdraw, uint256 repayAmount, uint256 deadline)
        external
        onlyRole(KEEPER_ROLE)
        nonReentrant
    {
        if (repayAmount == 0) revert VaultEmptyAction();
        (State memory before, uint256 lossBudget) = _begin(deadline, 0);
        if (marginWithdraw > 0) perps.withdrawMargin(marginWithdraw);
        uint256 idle = _usdc.balanceOf(address(this));
        uint256 amount = Math.min(Math.min(repayAmount, idle), before.debt);
        if (amount == 0) revert VaultEmptyAction();
        pool.repay(amount, address(this));
        _end(before, lossBudget);
    }

    // ================================================================ views
    /// @notice NAV in USDC units: idle cash and tokens, lending collateral less debt, perp account
    ///         value, options at their mark (shorts: locked collateral less the mark). Floored at 0.
    function totalAssets() public view override returns (uint256) {
        return _state().nav;
    }

    function mandate() external view returns (Mandate memory) {
        return _mandate;
    }

    /// @notice Timestamp of the last keeper action of any kind (0: none yet).
    function lastActionAt() external view returns (uint256) {
        return _limits.lastActionAt;
    }

    /// @notice The keeper limits and the open loss window: `windowLoss` of `windowAllowance`
    ///         (USDC units) used since `windowStart`; the last rebalance and hedge times.
    function keeperLimits()
        external
        view
        returns (
            uint256 maxDailyLossBps,
            uint256 minActionInterval,
            uint256 windowStart,
            uint256 windowLoss,
            uint256 windowAllowance,
            uint256 lastRebalanceAt,
            uint256 lastHedgeAt
        )
    {
        Limits storage k = _limits;
        return (
            k.maxDailyLossBps,
            k.minActionInterval,
            k.windowStart,
            _window.loss,
            uint256(_window.nav) * k.maxDailyLossBps / BPS,
            k.lastRebalanceAt,
            k.lastHedgeAt
        );
    }

    /// @notice Binding health: the lower of the lending health factor and the perp margin health (WAD).
    function health() external view returns (uint256) {
        return _state().health;
    }

    /// @notice Withdrawals are served from idle USDC only.
    function maxWithdraw(address owner) public view override returns (uint256) {
        return Math.min(super.maxWithdraw(owner), _usdc.balanceOf(address(this)));
    }

    function maxRedeem(address owner) public view override returns (uint256) {
        return Math.min(super.maxRedeem(owner), convertToShares(_usdc.balanceOf(address(this))));
    }

    function maxDeposit(address receiver) public view override returns (uint256) {
        return paused() ? 0 : super.maxDeposit(receiver);
    }

    function maxMint(address receiver) public view override returns (uint256) {
        return paused() ? 0 : super.maxMint(receiver);
    }

    /// @notice Everything a keeper needs in one struct, read at one block. Never reverts on stale feeds.
    function snapshot() external view returns (Snapshot memory snap) {
        address self = address(this);
        snap.blockNumber = block.number;
        snap.timestamp = block.timestamp;
        State memory st = _state();
        snap.totalAssets = st.nav;
        snap.totalSupply = totalSupply();
        snap.highWaterMark = highWaterMark;
        snap.idleUsdc = _usdc.balanceOf(self);
        snap.debt = st.debt;
        snap.lendingHealth = st.lendingHealth;
        snap.perpMargin = perps.marginOf(self);
        snap.perpAccountValue = st.perpValue;
        snap.perpHealth = st.perpHealth;
        snap.health = st.health;
        snap.leverage = st.leverage;
        snap.swapFeeBps = swapVenue.feeBps();
        snap.perpFeeBps = perps.feeBps();
        snap.maxPriceAge = maxPriceAge;
        snap.paused = paused();
        snap.lastActionAt = _limits.lastActionAt;
        snap.mandate = _mandate;
        snap.assets = new AssetSnapshot[](_assets.length);
        for (uint256 i = 0; i < _assets.length; i++) {
            snap.assets[i] = _assetSnapshot(_assets[i]);
        }
        snap.options = new OptionSnapshot[](_series.length);
        for (uint256 i = 0; i < _series.length; i++) {
            snap.options[i] = _optionSnapshot(_series[i]);
        }
    }

    function supportsInterface(bytes4 interfaceId) public view override returns (bool) {
        return super.supportsInterface(interfaceId);
    }

    // ================================================================ ERC-4626 entry points
    // All four are nonReentrant: their share price comes from totalAssets(), which reads every
    // venue and feed, and the asset transfer inside them hands control to the token. No entry
    // point (nor a keeper action) may run while another is halfway through.

    /// @notice ERC-4626 deposit (OpenZeppelin), refused while any feed NAV uses is stale.
    function deposit(uint256 assets_, address receiver) public override nonReentrant returns (uint256) {
        return super.deposit(assets_, receiver);
    }

    /// @notice ERC-4626 mint (OpenZeppelin), refused while any feed NAV uses is stale.
    function mint(uint256 shares, address receiver) public override nonReentrant returns (uint256) {
        return super.mint(shares, receiver);
    }

    /// @notice ERC-4626 withdraw (OpenZeppelin), from idle USDC, refused while any feed NAV uses is stale.
    function withdraw(uint256 assets_, address receiver, address owner)
        public
        override
        nonReentrant
        returns (uint256)
    {
        return super.withdraw(assets_, receiver, owner);
    }

    /// @notice ERC-4626 redeem (OpenZeppelin), from idle USDC, refused while any feed NAV uses is stale.
    function redeem(uint256 shares, address receiver, address owner) public override nonReentrant returns (uint256) {
        return super.redeem(shares, receiver, owner);
    }

    // ================================================================ ERC-4626 hooks
    function _deposit(address caller, address receiver, uint256 assets_, uint256 shares) internal override {
        _requireFreshNav();
        super._deposit(caller, receiver, assets_, shares);
        _updateHighWaterMark(totalAssets());
    }

    function _withdraw(address caller, address receiver, address owner, uint256 assets_, uint256 shares)
        internal
        override
    {
        _requireFreshNav();
        super._withdraw(caller, receiver, owner, assets_, shares);
    }

    function _decimalsOffset() internal pure override returns (uint8) {
        return DECIMALS_OFFSET;
    }

    // ================================================================ internal: keeper flow
    /// @dev The keeper call in progress, from the function called: its KeeperAction kind, and
    ///      whether it is risk-reducing (deleverage, repayDebt). Read from msg.sig rather than
    ///      passed down as literal arguments: viaIR's optimizer copies a function once per literal
    ///      argument value (FunctionSpecializer, inliner), so _end and its checks were compiled
    ///      once per kind and _tradePerps once per reduceOnly value. Removing the copies freed
    ///      1,036 of the 24,576 bytes EIP-170 allows; the keeper limits in _end would otherwise
    ///      have cost ~2.9 kB (four copies) instead of ~1 kB.
    function _keeperCall() private pure returns (bytes32 kind, bool riskReducing) {
        bytes4 sig = msg.sig;
        if (sig == this.rebalance.selector) return (KIND_REBALANCE, false);
        if (sig == this.hedge.selector) return (KIND_HEDGE, false);
        if (sig == this.deleverage.selector) return (KIND_DELEVERAGE, true);
        if (sig == this.repayDebt.selector) return (KIND_REPAY, true);
        // Not a keeper call (tradeOption): checked as a risk-increasing one would be.
        return (bytes32(0), false);
    }

    /// @dev The checks before a keeper call, its valuation before and its starting loss budget
    ///      (a repayDebt's: REPAY_ROUNDING_UNITS, as NAV is unchanged but for rounding: the
    ///      pool's scaled debt and the funding settled on withdrawal each round by a unit or two).
    function _begin(uint256 deadline, int256 marginDelta) private returns (State memory before, uint256 lossBudget) {
        if (block.timestamp > deadline) revert VaultDeadlinePassed(deadline, block.timestamp);
        _requireFresh();
        before = _state();
        if (marginDelta > 0) {
            // Margin beyond idle cash is borrowed against the collateral, as a buy's shortfall
            // is: the call's own checks bound it (a deleverage must raise binding health; any
            // other call that lowers health must leave it >= minHealth).
            _cover(uint256(marginDelta));
            perps.depositMargin(uint256(marginDelta));
        }
        (bytes32 kind,) = _keeperCall();
        lossBudget = kind == KIND_REPAY ? REPAY_ROUNDING_UNITS : 0;
    }

    function _end(State memory before, uint256 lossBudget) private {
        (bytes32 kind, bool riskReducing) = _keeperCall();
        State memory afterState = _state();
        // NAV may fall by at most the slippage budget of the legs traded (+1 unit for rounding).
        if (afterState.nav + lossBudget + 1 < before.nav) revert VaultNavLoss(before.nav, afterState.nav, lossBudget);
        _checkAfter(before, afterState);
        _applyLimits(kind, riskReducing, before, afterState.nav);
        _updateHighWaterMark(afterState.nav);
        emit KeeperAction(
            kind,
            msg.sender,
            before.nav,
            afterState.nav,
            before.health,
            afterState.health,
            before.leverage,
            afterState.leverage
        );
    }

    /// @dev The keeper limits, after the call's own checks:
    ///      - interval: a rebalance within minActionInterval of the last rebalance, or a hedge of
    ///        the last hedge, is refused (VaultActionTooSoon); deleverage and repayDebt never;
    ///      - loss window: the first keeper action at or after windowStart + LOSS_WINDOW opens a
    ///        new window at its NAV before. Each call's loss, navBefore − navAfter + 1 when NAV
    ///        did not rise (rounded up: both are floored), else 0, is added; the call is refused
    ///        (VaultDailyLossExceeded) if the window's loss would pass maxDailyLossBps × the
    ///        window's NAV ÷ 10,000 (floored). A rescue — a deleverage or repayDebt that starts
    ///        below minHealth — is neither counted nor refused: it sells or repays only, must
    ///        improve health, is bounded per call by its legs' slippage (VaultNavLoss), and no
    ///        keeper call can bring the vault below minHealth (only the market can).
    function _applyLimits(bytes32 kind, bool riskReducing, State memory before, uint256 navAfter) private {
        Limits storage k = _limits;
        LossWindow storage w = _window;
        if (!riskReducing) {
            bool isHedge = kind == KIND_HEDGE;
            uint256 last = isHedge ? k.lastHedgeAt : k.lastRebalanceAt;
            uint256 next = last + k.minActionInterval;
            if (block.timestamp < next) revert VaultActionTooSoon(last, next);
            if (isHedge) k.lastHedgeAt = uint40(block.timestamp);
            else k.lastRebalanceAt = uint40(block.timestamp);
        }
        // windowStart 0 (no window yet) opens one too: block.timestamp > LOSS_WINDOW.
        if (block.timestamp >= k.windowStart + LOSS_WINDOW) {
            k.windowStart = uint40(block.timestamp);
            w.nav = SafeCast.toUint128(before.nav);
            w.loss = 0;
        }
        if (!riskReducing || before.health >= _mandate.minHealth) {
            uint256 loss = w.loss + (navAfter > before.nav ? 0 : before.nav - navAfter + 1);
            uint256 allowance = uint256(w.nav) * k.maxDailyLossBps / BPS;
            if (loss > allowance) revert VaultDailyLossExceeded(loss, allowance);
            w.loss = uint128(loss); // <= allowance < 2**128
        }
        k.lastActionAt = uint40(block.timestamp);
    }

    function _checkAfter(State memory before, State memory afterState) private view {
        (, bool riskReducing) = _keeperCall();
        if (riskReducing) {
            if (afterState.health <= before.health) {
                revert VaultDeleverageNoImprovement(before.health, afterState.health);
            }
            // No leverage check here: a deleverage only sells collateral and shrinks perps, so it
            // cannot add exposure; closing a losing perp pays its fee, which lowers NAV and so
            // nudges collateral ÷ NAV up — refusing that would block the rescue itself.
            return;
        }
        bool riskIncreasing = afterState.health < before.health || afterState.leverage > before.leverage;
        if (!riskIncreasing) return;
        if (paused()) revert VaultPausedRiskIncrease();
        if (afterState.health < _mandate.minHealth) revert VaultHealthTooLow(afterState.health, _mandate.minHealth);
        if (afterState.leverage > _mandate.maxLeverage) {
            revert VaultLeverageTooHigh(afterState.leverage, _mandate.maxLeverage);
        }
    }

    /// @dev Executes the spot legs of a rebalance or (sells only) a deleverage; returns their
    ///      loss budget.
    function _swaps(SwapLeg[] calldata legs) private returns (uint256 budget) {
        (, bool riskReducing) = _keeperCall();
        for (uint256 i = 0; i < legs.length; i++) {
            if (riskReducing && legs[i].buy) revert VaultNotDeleverage(legs[i].asset);
            _requireNewSwapLeg(legs, i);
            budget += _swap(legs[i]);
        }
    }

    /// @dev Borrows what idle USDC lacks of `amount`.
    function _cover(uint256 amount) private {
        uint256 idle = _usdc.balanceOf(address(this));
        if (amount > idle) pool.borrow(amount - idle);
    }

    /// @dev Executes one spot leg; returns its loss budget (USDC units) under maxSlippageBps.
    function _swap(SwapLeg calldata leg) private returns (uint256 budget) {
        AssetConfig storage a = _asset(leg.asset);
        uint256 price = Oracle.strictWad(AggregatorV3Interface(a.priceFeed), a.priceDecimals, maxPriceAge);
        uint256 slip = _mandate.maxSlippageBps;
        if (leg.buy) {
            _cover(leg.amountIn);
            uint256 out = swapVenue.swap(address(_usdc), leg.asset, leg.amountIn, leg.minOut, address(this));
            uint256 fair = (leg.amountIn * _usdcToWad).mulDiv(10 ** a.tokenDecimals, price);
            _requireSlippage(leg.asset, fair, out, slip);
            pool.depositCollateral(leg.asset, out);
            // Loss budgets are floored: rounding goes against the keeper, in the vault's favour.
            budget = leg.amountIn.mulDiv(slip, BPS);
        } else {
            (uint256 proceeds,) = pool.repayWithCollateral(leg.asset, leg.amountIn, address(swapVenue), leg.minOut);
            uint256 fairUsd = leg.amountIn.mulDiv(price, 10 ** a.tokenDecimals);
            uint256 fair = fairUsd / _usdcToWad;
            _requireSlippage(leg.asset, fair, proceeds, slip);
            budget = fair.mulDiv(slip, BPS); // floored: vault's favour
        }
    }

    /// @dev Spot legs on one asset may only be repeated as buys: a leveraged buy is split so each
    ///      step fits the borrow room the earlier steps posted. A sell shares its asset with no
    ///      other leg, so a call cannot round-trip an asset (buy then sell, or sell then buy back).
    function _requireNewSwapLeg(SwapLeg[] calldata legs, uint256 i) private pure {
        for (uint256 j = 0; j < i; j++) {
            bool bothBuys = legs[i].buy && legs[j].buy;
            if (legs[j].asset == legs[i].asset && !bothBuys) revert VaultDuplicateLeg(legs[i].asset);
        }
    }

    /// @dev Executes perp legs; a deleverage may only shrink positions. Returns the loss budget.
    function _tradePerps(PerpLeg[] calldata legs) private returns (uint256 budget) {
        if (legs.length == 0) return 0;
        (, bool reduceOnly) = _keeperCall();
        uint256 slip = _mandate.maxSlippageBps;
        uint256 fee = perps.feeBps();
        if (fee > slip) revert VaultSlippageExceeded(address(perps), slip, fee);
        for (uint256 i = 0; i < legs.length; i++) {
            PerpLeg calldata leg = legs[i];
            // One perp leg per asset: two would net to one trade, or round-trip it.
            for (uint256 j = 0; j < i; j++) {
                if (legs[j].asset == leg.asset) revert VaultDuplicateLeg(leg.asset);
            }
            AssetConfig storage a = _asset(leg.asset);
            if (reduceOnly) {
                (int256 size,,) = perps.positionOf(address(this), leg.asset);
                bool shrinks = size != 0 && (size > 0) != (leg.sizeDelta > 0)
                    && SignedMath.abs(leg.sizeDelta) <= SignedMath.abs(size);
                if (!shrinks) revert VaultNotDeleverage(leg.asset);
            }
            uint256 price = Oracle.strictWad(AggregatorV3Interface(a.priceFeed), a.priceDecimals, maxPriceAge);
            // The vault's own bound on the fill: no worse than the oracle by maxSlippageBps.
            uint256 bound = leg.sizeDelta > 0 ? price.mulDiv(BPS + slip, BPS) : price.mulDiv(BPS - slip, BPS);
            uint256 limit = leg.sizeDelta > 0 ? Math.min(leg.limitPrice, bound) : Math.max(leg.limitPrice, bound);
            perps.trade(leg.asset, leg.sizeDelta, limit);
            // Notional and budget both floored: vault's favour.
            uint256 notionalUsdc = SignedMath.abs(leg.sizeDelta).mulDiv(price, WAD) / _usdcToWad;
            budget += notionalUsdc.mulDiv(slip, BPS);
        }
    }

    function _requireSlippage(address asset, uint256 fair, uint256 actual, uint256 slipBps) private pure {
        uint256 minAcceptable = fair.mulDiv(BPS - slipBps, BPS, Math.Rounding.Ceil);
        if (actual < minAcceptable) revert VaultSlippageExceeded(asset, minAcceptable, actual);
    }

    // ================================================================ internal: valuation
    /// @dev One pass over the venues' account summaries, at the latest prices: NAV (USDC units,
    ///      floored, >= 0), the two healths, and leverage = Σ collateral value ÷ NAV.
    function _state() private view returns (State memory st) {
        address self = address(this);
        (uint256 collateralUsd, uint256 liqCapacityUsd, uint256 debt) = pool.accountSummary(self);
        (int256 perpValue, uint256 perpReq) = perps.accountSummary(self);
        int256 total = int256((_usdc.balanceOf(self) * _usdcToWad) + collateralUsd) - int256(debt * _usdcToWad)
            + perpValue * int256(_usdcToWad);
        for (uint256 i = 0; i < _assets.length; i++) {
            AssetConfig storage a = _assets[i];
            uint256 idle = IERC20(a.token).balanceOf(self);
            if (idle == 0) continue;
            (uint256 price,) = Oracle.latestWad(AggregatorV3Interface(a.priceFeed), a.priceDecimals);
            total += int256(idle.mulDiv(price, 10 ** a.tokenDecimals));
        }
        for (uint256 i = 0; i < _series.length; i++) {
            total += options.positionValue(self, _series[i]);
        }
        st.nav = total > 0 ? uint256(total) / _usdcToWad : 0;
        st.debt = debt;
        st.perpValue = perpValue;
        st.lendingHealth = debt == 0 ? type(uint256).max : liqCapacityUsd.mulDiv(WAD, debt * _usdcToWad);
        // Same formula as PerpMarket.marginHealth, from the summary already read.
        if (perpReq == 0) st.perpHealth = type(uint256).max;
        else if (perpValue > 0) st.perpHealth = (uint256(perpValue) * _usdcToWad).mulDiv(WAD, perpReq);
        st.health = Math.min(st.lendingHealth, st.perpHealth);
        st.leverage = st.nav == 0 ? type(uint256).max : collateralUsd.mulDiv(WAD, st.nav * _usdcToWad);
    }

    /// @dev Every spot feed fresh and positive: the gate for keeper actions and option trades.
    function _requireFresh() private view {
        for (uint256 i = 0; i < _assets.length; i++) {
            _requireFreshFeed(_assets[i].priceFeed);
        }
    }

    /// @dev Every feed NAV reads fresh: spot feeds and the marks of the unexpired series held.
    ///      The gate for deposits and withdrawals, which are priced at NAV. An expired series is
    ///      no longer valued at its mark but at its settlement price (the spot feed's first round
    ///      at or after expiry; until there is one, the latest spot), so its mark feed is skipped.
    function _requireFreshNav() private view {
        _requireFresh();
        for (uint256 i = 0; i < _series.length; i++) {
            (address markFeed, uint256 expiry) = options.markFeedOf(_series[i]);
            if (block.timestamp < expiry) _requireFreshFeed(markFeed);
        }
    }

    function _requireFreshFeed(address feed) private view {
        (, int256 answer,, uint256 updatedAt,) = AggregatorV3Interface(feed).latestRoundData();
        if (answer <= 0 || block.timestamp > updatedAt + maxPriceAge) {
            revert VaultStalePrice(feed, updatedAt, maxPriceAge);
        }
    }

    function _assetSnapshot(AssetConfig memory a) private view returns (AssetSnapshot memory s) {
        address self = address(this);
        s.token = a.token;
        s.decimals = a.tokenDecimals;
        s.priceFeed = a.priceFeed;
        int256 answer;
        (s.priceRound, answer,, s.priceUpdatedAt,) = AggregatorV3Interface(a.priceFeed).latestRoundData();
        s.price = answer > 0 ? Oracle.toWad(uint256(answer), a.priceDecimals) : 0;
        s.volFeed = a.volFeed;
        (s.impliedVol, s.volUpdatedAt) = Oracle.latestWad(AggregatorV3Interface(a.volFeed), a.volDecimals);
        s.collateral = pool.collateralOf(self, a.token);
        s.idle = IERC20(a.token).balanceOf(self);
        (s.ltv, s.liquidationThreshold) = pool.riskParams(a.token);
        (s.perpSize, s.perpEntryPrice, s.perpPnl) = perps.positionOf(self, a.token);
        s.perpMaintenanceMargin = perps.maintenanceMargin(a.token);
    }

    function _optionSnapshot(uint256 seriesId) private view returns (OptionSnapshot memory o) {
        IOptionMarket.Series memory s = options.getSeries(seriesId);
        o.seriesId = seriesId;
        o.underlying = s.underlying;
        o.isCall = s.isCall;
        o.strike = s.strike;
        o.expiry = s.expiry;
        (o.size, o.collateral) = options.positionOf(address(this), seriesId);
        (o.mark, o.markUpdatedAt) = options.markPrice(seriesId);
    }

    // ================================================================ internal: bookkeeping
    function _asset(address token) private view returns (AssetConfig storage) {
        uint256 idx = _assetIndex[token];
        if (idx == 0) revert VaultUnknownAsset(token);
        return _assets[idx - 1];
    }

    /// @dev Brings `amount` of `token` to the vault's idle balance, withdrawing collateral if needed.
    function _freeUnderlying(address token, uint256 amount) private {
        uint256 idle = IERC20(token).balanceOf(address(this));
        if (idle < amount) pool.withdrawCollateral(token, amount - idle, address(this));
    }

    /// @dev Idle risky tokens earn nothing and are not counted as leverage: post them as collateral.
    function _depositIdle(address token) private {
        uint256 idle = IERC20(token).balanceOf(address(this));
        if (idle == 0) return;
        pool.depositCollateral(token, idle);
    }

    function _trackSeries(uint256 seriesId) private {
        for (uint256 i = 0; i < _series.length; i++) {
            if (_series[i] == seriesId) return;
        }
        if (_series.length >= MAX_SERIES) revert VaultTooManySeries(_series.length + 1);
        _series.push(seriesId);
    }

    function _untrackSeries(uint256 seriesId) private {
        for (uint256 i = 0; i < _series.length; i++) {
            if (_series[i] == seriesId) {
                _series[i] = _series[_series.length - 1];
                _series.pop();
                return;
            }
        }
    }

    /// @dev `nav` is passed in by callers that have just computed it, to avoid a third valuation.
    ///      The mark is WAD USDC units per share unit (shares have DECIMALS_OFFSET more decimals).
    function _updateHighWaterMark(uint256 nav) private {
        uint256 supply = totalSupply();
        if (supply == 0) return;
        uint256 pps = nav.mulDiv(WAD, supply);
        if (pps > highWaterMark) {
            emit HighWaterMarkUpdated(highWaterMark, pps);
            highWaterMark = pps;
        }
    }

    /// @dev Bounds of each mandate field, in struct order; a violation names the field by index
    ///      (0 targetVol … 8 maxSlippageBps), which the keeper decodes back to its name.
    function _validateMandate(Mandate memory m) private pure {
        _bound(0, int256(m.targetVol), 1, 5e18);
        _bound(1, int256(m.maxLeverage), 1e18, 10e18);
        _bound(2, int256(m.minHealth), 1.01e18, 10e18);
        _bound(3, m.hedgeTarget, -2e18, 2e18);
        _bound(4, int256(m.hedgeBand), 0, 1e18);
        _bound(5, int256(m.cppiFloor), 0, 1e18 - 1);
        _bound(6, int256(m.cppiMultiplier), 0, 10e18);
        _bound(7, int256(m.kellyFraction), 1, 1e18);
        _bound(8, int256(m.maxSlippageBps), 1, int256(MAX_SLIPPAGE_BPS));
    }

    function _validateMaxPriceAge(uint256 maxAge) private pure {
        if (maxAge == 0 || maxAge > MAX_PRICE_AGE_LIMIT) revert VaultInvalidMaxPriceAge(maxAge, MAX_PRICE_AGE_LIMIT);
    }

    function _bound(uint256 field, int256 value, int256 lo, int256 hi) private pure {
        if (value < lo || value > hi) revert VaultInvalidMandate(field, value);
    }
}

library SafeCastInt {
    error SafeCastIntOverflow(uint256 value);

    function toInt(uint256 value) internal pure returns (int256) {
        if (value > uint256(type(int256).max)) revert SafeCastIntOverflow(value);
        return int256(value);
    }
}
