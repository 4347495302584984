"""One masking helper for every error message, log record and journal entry."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from keeper.chain.connect import mask_rpc_url as reexported
from keeper.errors import ChainReadError, ConfigError
from keeper.journal import Journal
from keeper.logs import JsonFormatter, SecretFilter, configure_logging
from keeper.masking import (
    MASK,
    SecretMasker,
    mask_rpc_url,
    mask_text,
    register_secret_url,
    secret_fragments,
)

USER, PASSWORD, PATH_KEY, QUERY_KEY = "keeperop", "hunter2pw", "PATHKEY0123456789", "QKEY98765"
URL = f"https://{USER}:{PASSWORD}@eth.example.com/v3/{PATH_KEY}?apikey={QUERY_KEY}"
SECRETS = (PASSWORD, PATH_KEY, QUERY_KEY, f"{USER}:{PASSWORD}")


def leaks(text: str, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    return [s for s in secrets if s.lower() in text.lower()]


@pytest.fixture
def masker() -> SecretMasker:
    m = SecretMasker()
    m.register_url(URL)
    return m


def test_mask_rpc_url_is_the_one_config_and_connect_use() -> None:
    assert reexported is mask_rpc_url
    assert mask_rpc_url(URL) == "https://***@eth.example.com/***"
    assert mask_rpc_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    assert mask_rpc_url("http://host:99999/x") == "<unparseable url>"


def test_secret_fragments_of_a_url() -> None:
    found = secret_fragments(URL)
    assert {f"{USER}:{PASSWORD}@", PASSWORD, USER, f"/v3/{PATH_KEY}", PATH_KEY} <= found
    assert {f"apikey={QUERY_KEY}", QUERY_KEY} <= found
    assert "v3" not in found  # short segments are not masked on their own
    assert secret_fragments("http://127.0.0.1:8545") == set()
    assert secret_fragments("http://a:b@h/") == {"a:b@"}  # short credentials: only whole


@pytest.mark.parametrize(
    "text",
    [
        URL,
        URL.upper(),
        # what requests and urllib3 write, with and without the URL around the path
        f"HTTPConnectionPool(host='eth.example.com', port=443): Max retries exceeded with url: "
        f"/v3/{PATH_KEY}?apikey={QUERY_KEY} (Caused by NewConnectionError(...))",
        f"502 Server Error: Bad Gateway for url: {URL}",
        f'"POST /v3/{PATH_KEY}?apikey={QUERY_KEY} HTTP/1.1" 502 157',
        f"Making request HTTP. URI: {URL}, Method: eth_call",
        f"token {PATH_KEY.lower()} alone",
        f"percent-encoded https://{USER}:{PASSWORD}@eth.example.com/v3/{PATH_KEY}%20",
    ],
)
def test_registered_secrets_are_masked_wherever_they_appear(
    masker: SecretMasker, text: str
) -> None:
    masked = masker.mask(text)
    assert leaks(masked) == [], masked
    assert MASK in masked


def test_unregistered_urls_lose_credentials_query_and_tokens_only() -> None:
    m = SecretMasker()
    text = (
        "see https://u:pass@node.example.org/v2/abcdefABCDEF0123456789xyz/rpc?key=1 and "
        "https://docs.soliditylang.org/en/latest/control-structures.html#revert, block 0x"
        + "ab"
        * 32
    )
    masked = m.mask(text)
    assert "pass" not in masked and "abcdefABCDEF0123456789xyz" not in masked
    assert "key=1" not in masked
    assert "https://***@node.example.org/v2/***/rpc?***" in masked
    # ordinary URLs keep their readable path; hashes outside URLs are untouched
    assert "https://docs.soliditylang.org/en/latest/control-structures.html#***" in masked
    assert "0x" + "ab" * 32 in masked


def test_masking_is_idempotent_and_leaves_masked_urls_alone(masker: SecretMasker) -> None:
    shown = mask_rpc_url(URL)
    assert masker.mask(shown) == shown
    once = masker.mask(f"RPC {URL} unreachable")
    assert masker.mask(once) == once


def test_keeper_errors_are_masked_on_construction() -> None:
    register_secret_url(URL)
    exc = ChainReadError(f"fee history failed: {requests.ConnectionError(URL)}")
    assert leaks(str(exc)) == []
    assert exc.retryable  # the branch default
    refused = ChainReadError("x", retryable=False)
    assert not refused.retryable and ChainReadError("y").retryable
    assert leaks(str(ConfigError(f"KEEPER_RPC_URL: bad {URL}"))) == []


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {n: logging.getLogger(n).level for n in ("web3", "urllib3", "apscheduler", "eth")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


def _raise_with_url() -> None:
    try:
        raise requests.ConnectionError(f"Max retries exceeded with url: /v3/{PATH_KEY}")
    except requests.ConnectionError as exc:
        raise RuntimeError(f"while asking {URL}") from exc


@pytest.mark.parametrize("json_lines", [False, True])
def test_configure_logging_masks_messages_args_tracebacks_and_extras(
    root_logging: None, json_lines: bool
) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", json_lines, secret_urls=[URL], stream=stream)
    logging.getLogger("urllib3").setLevel(logging.DEBUG)  # the chattiest quoter of URLs
    log = logging.getLogger("keeper.test")
    log.info("RPC %s failed: %s", URL, requests.HTTPError(f"502 for url: {URL}"))
    logging.getLogger("urllib3.connectionpool").debug(
        '%s://%s:%s "%s %s %s" %s %s',
        "https",
        "eth.example.com",
        443,
        "POST",
        f"/v3/{PATH_KEY}?apikey={QUERY_KEY}",
        "HTTP/1.1",
        502,
        157,
    )
    log.warning("with extra", extra={"rpc": URL})
    try:
        _raise_with_url()
    except RuntimeError:
        log.exception("tick failed")
    out = stream.getvalue()
    assert leaks(out) == [], out
    assert out.count("\n") >= 4 and "eth.example.com" in out  # the lines are all there
    assert "Traceback" in out and "RuntimeError" in out
    if json_lines:
        records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert any("exc" in r for r in records) and any(r.get("rpc") for r in records)


def test_the_filter_masks_records_for_every_handler_after_it(masker: SecretMasker) -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom %s", (URL,), None)
    assert SecretFilter(masker).filter(record)
    assert leaks(record.getMessage()) == [] and record.args is None
    assert leaks(JsonFormatter().format(record)) == []


def test_journal_masks_tick_errors_and_intent_outcomes(tmp_path: Path) -> None:
    register_secret_url(URL)
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        tick = journal.start_tick(1, 31337)
        journal.finish_tick(tick, "error", f"multicall failed: 502 for url: {URL}")
        intent = journal.record_intent("0x" + "11" * 20, "deleverage", "0x" + "11" * 20, b"\x01")
        journal.finish_intent(intent, "failed", {"error": f"broadcast refused: {URL}"})
        assert leaks(journal.tick(tick).error or "") == []
        assert leaks(str(journal.intent(intent).outcome)) == []
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert leaks(raw.decode("latin-1")) == []
    assert mask_text(URL) != URL


def test_a_database_url_hides_its_password_not_its_user_or_database_names() -> None:
    from keeper.masking import SecretMasker, secret_fragments

    url = "postgresql://keeper:pg-Secret-7Hq2@db.internal:5432/keeper?sslpassword=tlsPW99"
    assert secret_fragments(url) == {"keeper:pg-Secret-7Hq2@", "pg-Secret-7Hq2", "tlsPW99"}
    masker = SecretMasker()
    masker.register_url(url)
    line = masker.mask(
        f"keeper.journal: cannot connect to {url}; password pg-secret-7hq2 refused"
        " in /srv/keeper/keeper/journal.py"
    )
    assert "Secret-7Hq2".lower() not in line.lower() and "tlsPW99" not in line
    # the user and database names stay (they are no secret; "keeper" is in every log line)
    assert line.startswith("keeper.journal: ") and "/srv/keeper/keeper/journal.py" in line
    assert "db.internal:5432/keeper" in line
