"""Starting and stopping a local anvil node (installed from npm by `make test`)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import requests
from web3 import Web3
from web3.providers.rpc import HTTPProvider
from web3.types import RPCEndpoint

from keeper.chain.abi import REPO_ROOT
from keeper.errors import ChainReadError

#: Where `npm ci` puts the binary; PATH is the fallback.
ANVIL_NPM_BIN = REPO_ROOT / "node_modules" / ".bin" / "anvil"
#: How long a fresh anvil may take to answer eth_chainId.
START_TIMEOUT_S = 15.0


def anvil_path() -> Path | None:
    if ANVIL_NPM_BIN.exists():
        return ANVIL_NPM_BIN
    found = shutil.which("anvil")
    return Path(found) if found else None


#: prctl option: the signal the kernel sends a process when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: ask for SIGTERM when the parent dies, so a killed simulator
    worker or test run never leaves an anvil behind (a no-op where prctl is missing)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Anvil:
    """An anvil process on 127.0.0.1 at a free port; a context manager that always stops it."""

    def __init__(self, *extra_args: str, gas_limit: int = 60_000_000) -> None:
        path = anvil_path()
        if path is None:
            raise ChainReadError("anvil not found (run `make install` to get it from npm)")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args = [
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--silent",
            "--gas-limit",
            str(gas_limit),
            *extra_args,
        ]
        self._proc: subprocess.Popen[bytes] | None = None
        #: The directory anvil persists old states to while it runs (``--cache-path``), removed
        #: when it stops. Left to anvil's default, ~/.foundry/anvil/tmp, it is never removed:
        #: one `bleed60` path wrote 4.8 GB there, and a day of simulations filled a 252 GB disk.
        self.cache_dir: Path | None = None

    def start(self) -> Web3:
        self.cache_dir = Path(tempfile.mkdtemp(prefix="keeper-anvil-"))
        self._proc = subprocess.Popen(
            [*self._args, "--cache-path", str(self.cache_dir)], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, preexec_fn=_die_with_parent,
        )
        w3 = devnet_web3(self.url)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                self.stop()  # removes its cache directory too
                raise ChainReadError(f"anvil exited at start: {err.strip()[:200]}")
            try:
                if int(w3.eth.chain_id) > 0:
                    return w3
            except Exception:  # not listening yet
                time.sleep(0.05)
        self.stop()
        raise ChainReadError(f"anvil did not answer on {self.url} within {START_TIMEOUT_S}s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self.cache_dir is not None:
            shutil.rmtree(self.cache_dir, ignore_errors=True)
            self.cache_dir = None

    def __enter__(self) -> Web3:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def devnet_web3(url: str, timeout_s: float = 30.0) -> Web3:
    """An HTTP Web3 for a development node: the chain id asked once (web3 validates every call
    and send against it, which otherwise doubles the requests), and, on loopback, no proxy
    lookup from the environment per request (about 0.6 ms each, measured in the simulator)."""
    session = requests.Session()
    session.trust_env = urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1")
    provider = HTTPProvider(
        url,
        request_kwargs={"timeout": timeout_s},
        session=session,
        cache_allowed_requests=True,
        cacheable_requests={RPCEndpoint("eth_chainId")},
    )
    return Web3(provider)


#: anvil's default development mnemonic (public, funded only on local nodes).
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"


def anvil_key(index: int) -> str:
    """The private key of anvil's default account `index` (hex), derived from its dev mnemonic."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    account = Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return "0x" + bytes(account.key).hex()
