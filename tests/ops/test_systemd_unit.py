"""The systemd units in ops/: their settings, and their ExecStart line run as systemd would run
it — a real `keeper run` on anvil with only the unit's environment and an EnvironmentFile,
stopped by SIGTERM — and a bad setting in that file giving the exit code the unit does not
restart on. `systemd-analyze verify` checks both units too where it is installed.

How a unit becomes a command here (the rule the units' comments state): the install prefix
/opt/vault-keeper/venv in ExecStart is replaced by the project's .venv, the state directory
(/var/lib/ + StateDirectory=, the WorkingDirectory) by a temporary one, the EnvironmentFile by
a test file; ExecStart is then split with shlex, which splits as systemd does for a line
without quotes, `$` or `%` (asserted). The template is run as instance TEMPLATE_INSTANCE.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from keeper.config_values import TICK_DEADLINE_SHARE
from keeper.devnet.anvil import Anvil, _free_port, anvil_path
from keeper.devnet.deploy import deploy_everything
from keeper.health import CLOSE_TIMEOUT_S
from keeper.notify import SEND_TIMEOUT_S
from tests.cli.conftest import KEEPER_KEY, Node

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
UNIT = OPS / "vault-keeper.service"
TEMPLATE = OPS / "vault-keeper@.service"
#: Where the units expect the virtualenv, and what stands in for it here.
INSTALL_PREFIX = "/opt/vault-keeper/venv"
VENV = ROOT / ".venv"
#: The template's instance in these tests (anvil's chain id).
TEMPLATE_INSTANCE = "31337"
#: What systemd puts in a service's environment before Environment= and EnvironmentFile=
#: (its default PATH; HOME for a User= service). Nothing of the test run's own leaks in.
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
#: `keeper run` exit codes (keeper/cli.py, keeper/scheduler.py).
EXIT_CLEAN, EXIT_BUG, EXIT_USER_ERROR, EXIT_FAILING = 0, 1, 2, 3
#: The largest tick deadline the units' TimeoutStopSec is documented to cover, and what
#: stopping takes beyond the tick: the scheduler's idle wait (5 s), the metrics server's
#: close and the notifier's last send.
DOCUMENTED_MAX_DEADLINE_S = 60.0
STOP_SLACK_S = 30.0
IDLE_GRACE_S = 5.0
#: Seconds the keeper may take to start and complete a tick (imports, start-up checks).
START_LIMIT_S = 60.0
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

Unit = dict[str, dict[str, list[str]]]


# ---------------------------------------------------------------------- parsing, as systemd
def parse_unit(text: str) -> Unit:
    """A unit file: `[Section]` headers; `Key=Value` lines; whole-line comments starting with
    `#` or `;`; a trailing backslash joins the next line (with a space). A key may repeat
    (list settings add up) and an empty value resets what came before, as systemd does."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line, pending = pending + line, ""
        header = re.fullmatch(r"\[([^\]]+)\]", line)
        if header:
            section = unit.setdefault(header.group(1), {})
            continue
        if section is None or "=" not in line:
            raise ValueError(f"not a unit line: {raw!r}")
        key, value = (part.strip() for part in line.split("=", 1))
        values = section.setdefault(key, [])
        if value == "":
            values.clear()
        else:
            values.append(value)
    return unit


def one(unit: Unit, section: str, key: str) -> str:
    """The single value of `key` (assigned once, not reset)."""
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}: expected one value, found {values}"
    return values[0]


def expand(value: str, instance: str | None) -> str:
    """The specifiers these units may use: %i (instance), %% (a percent sign)."""

    def sub(match: re.Match[str]) -> str:
        spec = match.group(1)
        if spec == "%":
            return "%"
        if spec == "i" and instance is not None:
            return instance
        raise ValueError(f"specifier %{spec} not handled here (in {value!r})")

    return re.sub(r"%(.)", sub, value)


def parse_seconds(span: str) -> float:
    """A systemd time span: "90", "90s", "1min 30s", "500ms", "2h"."""
    units = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "": 1.0}
    total, rest = 0.0, span.replace(" ", "")
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)([a-z]*)", rest):
        if unit not in units:
            raise ValueError(f"time unit {unit!r} in {span!r}")
        total += float(number) * units[unit]
    if not re.fullmatch(r"(\d+(?:\.\d+)?[a-z]*)+", rest):
        raise ValueError(f"not a time span: {span!r}")
    return total


def parse_environment_file(text: str) -> dict[str, str]:
    """An EnvironmentFile as systemd reads the plain subset used here: `KEY=VALUE` lines, blank
    lines and `#`/`;` comments skipped, whitespace around the value dropped, one pair of
    matching quotes around the whole value removed."""
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", line)
        if match is None:
            raise ValueError(f"line {number}: not KEY=VALUE: {raw!r}")
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


def would_restart(unit: Unit, exit_code: int) -> bool:
    """Whether systemd restarts the service after `keeper run` exits with `exit_code` (no
    signal): Restart= on-failure restarts on a non-zero code unless RestartPreventExitStatus=
    lists it; "always" on any code it does not list; "no" never."""
    restart = one(unit, "Service", "Restart")
    prevent = {
        int(code)
        for value in unit["Service"].get("RestartPreventExitStatus", [])
        for code in value.split()
    }
    if restart == "no" or exit_code in prevent:
        return False
    if restart == "always":
        return True
    assert restart == "on-failure", f"Restart={restart} not modelled"
    return exit_code != 0


# ---------------------------------------------------------------------- the unit as a command
@dataclass(frozen=True)
class Service:
    """A unit made concrete for a test: its command, directory and environment file."""

    unit: Unit
    instance: str | None
    state_dir: str
    env_file: str

    def argv(self) -> list[str]:
        line = one(self.unit, "Service", "ExecStart")
        # Prefixes (-, @, :, +, !), $VAR and specifiers are where systemd's splitting and a
        # shell's part: none is used, so shlex.split is systemd's own split of this line.
        assert line[0] not in "-@:+!", line
        assert "$" not in line and "%" not in line and "'" not in line and '"' not in line, line
        argv = shlex.split(line)
        assert argv[0].startswith(INSTALL_PREFIX + "/"), argv
        return [str(VENV) + argv[0][len(INSTALL_PREFIX) :], *argv[1:]]

    def environment(self, env_file: Path, home: Path) -> dict[str, str]:
        """systemd's environment for the service: its defaults, Environment= assignments, then
        the EnvironmentFile (which overrides them)."""
        env = {"PATH": SYSTEMD_PATH, "HOME": str(home)}
        for assignment in self.unit["Service"].get("Environment", []):
            for pair in shlex.split(expand(assignment, self.instance)):
                key, value = pair.split("=", 1)
                env[key] = value
        env.update(parse_environment_file(env_file.read_text(encoding="utf-8")))
        return env


def service(path: Path, instance: str | None) -> Service:
    unit = parse_unit(path.read_text(encoding="utf-8"))
    s = unit["Service"]
    state = "/var/lib/" + expand(one(unit, "Service", "StateDirectory"), instance)
    env_file = expand(one(unit, "Service", "EnvironmentFile"), instance)
    assert expand(one(unit, "Service", "WorkingDirectory"), instance) == state
    assert [expand(v, instance) for v in s.get("ReadWritePaths", [])] == [state]
    return Service(unit, instance, state, env_file)


UNITS = [
    pytest.param(UNIT, None, "/etc/vault-keeper/keeper.env", id="vault-keeper.service"),
    pytest.param(
        TEMPLATE,
        TEMPLATE_INSTANCE,
        f"/etc/vault-keeper/{TEMPLATE_INSTANCE}.env",
        id="vault-keeper@.service",
    ),
]


# ---------------------------------------------------------------------- the parsers themselves
def test_parse_unit_follows_systemd_syntax() -> None:
    unit = parse_unit(
        "# comment\n[Service]\n; another\nA = 1\nL=x\nL=y\nL=\nL=z\nC=one \\\n  two\n"
    )
    assert unit == {"Service": {"A": ["1"], "L": ["z"], "C": ["one two"]}}
    with pytest.raises(ValueError):
        parse_unit("A=1\n")  # outside a section


def test_time_spans_and_environment_files() -> None:
    assert parse_seconds("90s") == 90 and parse_seconds("1min 30s") == 90
    assert parse_seconds("10") == 10 and parse_seconds("500ms") == 0.5
    with pytest.raises(ValueError):
        parse_seconds("soon")
    env = parse_environment_file('# c\n\nA=1\nB = "two words"\n; c\nC=\'x\'\n')
    assert env == {"A": "1", "B": "two words", "C": "x"}
    with pytest.raises(ValueError):
        parse_environment_file("export A=1\n")


# ---------------------------------------------------------------------- the settings
@pytest.mark.parametrize(("path", "instance", "env_file"), UNITS)
def test_unit_settings(path: Path, instance: str | None, env_file: str) -> None:
    s = service(path, instance)
    unit = s.unit
    user = one(unit, "Service", "User")
    assert user not in ("root", "0") and one(unit, "Service", "Group") == user
    assert s.env_file == env_file  # required: no leading "-" (a missing file fails the start)
    assert s.state_dir.startswith("/var/lib/vault-keeper")
    assert one(unit, "Service", "Restart") == "on-failure"
    assert 1 <= parse_seconds(one(unit, "Service", "RestartSec")) <= 60
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "UMask": "0077",
        "Type": "exec",
    }.items():
        assert one(unit, "Service", key) == value, key
    # An empty assignment: no capabilities at all.
    assert unit["Service"]["CapabilityBoundingSet"] == []
    # The unit restarts every failure and never gives up: exit 2 is also "node unreachable at
    # start", and a keeper that stopped restarting after an outage would leave the chain unkept.
    assert not would_restart(unit, EXIT_CLEAN)
    assert would_restart(unit, EXIT_USER_ERROR)
    assert would_restart(unit, EXIT_BUG) and would_restart(unit, EXIT_FAILING)
    assert "RestartPreventExitStatus" not in unit["Service"]
    assert one(unit, "Unit", "StartLimitIntervalSec") == "0"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


@pytest.mark.parametrize(("path", "instance", "env_file"), UNITS)
def test_stop_timeout_covers_the_tick_in_flight(
    path: Path, instance: str | None, env_file: str
) -> None:
    unit = service(path, instance).unit
    stop_s = parse_seconds(one(unit, "Service", "TimeoutStopSec"))
    # What stopping takes after the tick in flight, from the code's own bounds.
    assert IDLE_GRACE_S + CLOSE_TIMEOUT_S + SEND_TIMEOUT_S <= STOP_SLACK_S
    assert stop_s >= DOCUMENTED_MAX_DEADLINE_S + STOP_SLACK_S
    # The default deadline (0.8 x the default 12 s interval) is well inside.
    assert TICK_DEADLINE_SHARE * 12.0 + STOP_SLACK_S < stop_s


def test_the_template_differs_only_by_instance() -> None:
    plain = parse_unit(UNIT.read_text(encoding="utf-8"))["Service"]
    template = parse_unit(TEMPLATE.read_text(encoding="utf-8"))["Service"]
    per_instance = {"EnvironmentFile", "WorkingDirectory", "StateDirectory", "ReadWritePaths"}
    assert set(plain) == set(template)
    for key in plain:
        if key not in per_instance:
            assert plain[key] == template[key], key
        else:
            assert all("%i" in v for v in template[key]), key


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize(("path", "instance", "env_file"), UNITS)
def test_systemd_analyze_verify(
    path: Path, instance: str | None, env_file: str, tmp_path: Path
) -> None:
    assert SYSTEMD_ANALYZE is not None
    # verify checks that ExecStart's binary exists: the substituted copy points at .venv.
    copy = tmp_path / path.name
    copy.write_text(path.read_text(encoding="utf-8").replace(INSTALL_PREFIX, str(VENV)))
    name = path.name.replace("@.", f"@{instance}.") if instance else path.name
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Unknown keys and unparsable values are only warnings to verify: none is allowed.
    assert path.name not in output and name not in output, output


# ---------------------------------------------------------------------- ExecStart, run
@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One anvil for this module with the bundled market and vaults (as tests/cli's)."""
    if anvil_path() is None:
        pytest.skip("anvil not installed (make test installs it from npm)")
    anvil = Anvil()
    with anvil as w3:
        deployment = deploy_everything(w3)
        path = tmp_path_factory.mktemp("deployment") / "deployment.json"
        path.write_text(json.dumps(deployment.to_json()), encoding="utf-8")
        yield Node(anvil.url, w3, deployment, path)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback only
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


def ok_ticks(metrics: str) -> float:
    match = re.search(r'^keeper_ticks_total\{result="ok"\} (\S+)$', metrics, flags=re.M)
    return float(match.group(1)) if match else 0.0


def write_env_file(path: Path, settings: Mapping[str, str]) -> Path:
    lines = ["# test EnvironmentFile: anvil and the bundled deployment"]
    lines += [f"{key}={value}" for key, value in settings.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def node_env_file(node: Node, path: Path, **extra: str) -> Path:
    return write_env_file(
        path,
        {
            "KEEPER_RPC_URL": node.url,
            "KEEPER_PRIVATE_KEY": KEEPER_KEY,
            "KEEPER_DEPLOYMENT": str(node.deployment_file),
            "KEEPER_POLL_INTERVAL": "1",
            **extra,
        },
    )


@pytest.mark.anvil
@pytest.mark.parametrize(("path", "instance", "env_file"), UNITS)
def test_exec_start_runs_ticks_and_stops_cleanly_on_sigterm(
    node: Node,
    tmp_path: Path,
    path: Path,
    instance: str | None,
    env_file: str,
) -> None:
    s = service(path, instance)
    state = tmp_path / "state"  # stands in for s.state_dir, which StateDirectory= creates
    state.mkdir()
    port = _free_port()
    settings = node_env_file(node, tmp_path / "test.env", KEEPER_METRICS_PORT=str(port))
    stop_s = parse_seconds(one(s.unit, "Service", "TimeoutStopSec"))
    proc = subprocess.Popen(
        s.argv(),
        cwd=state,
        env=s.environment(settings, home=state),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, metrics = time.monotonic() + START_LIMIT_S, ""
        while time.monotonic() < deadline and proc.poll() is None:
            status, metrics = get(f"{base}/metrics")
            if status == 200 and ok_ticks(metrics) >= 2:
                break
            time.sleep(0.2)
        assert ok_ticks(metrics) >= 2, metrics[-2000:]
        assert get(f"{base}/healthz")[0] == 200
        assert get(f"{base}/readyz")[0] == 200
    finally:
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # what systemd sends: KillSignal=SIGTERM
        try:
            out, err = proc.communicate(timeout=stop_s)
        except subprocess.TimeoutExpired:
            proc.kill()  # what systemd does after TimeoutStopSec
            out, err = proc.communicate()
            pytest.fail(f"not stopped within TimeoutStopSec={stop_s:g}s:\n{err[-3000:]}")
    took = time.monotonic() - stopped_at
    assert proc.returncode == EXIT_CLEAN, err[-3000:]
    assert not would_restart(s.unit, proc.returncode)
    assert took < stop_s
    assert "Traceback" not in err and "Traceback" not in out
    assert "finishing the tick in flight, then stopping" in err  # the SIGTERM handler ran
    assert "keeper stopped cleanly" in err
    # The default journal is relative: it lands in the WorkingDirectory (the state directory).
    assert (state / "keeper-journal.sqlite").is_file()
    assert KEEPER_KEY[2:] not in err and KEEPER_KEY[2:] not in out


@pytest.mark.anvil
@pytest.mark.parametrize(("path", "instance", "env_file"), UNITS)
def test_a_bad_environment_file_value_exits_2_in_one_line(
    node: Node,
    tmp_path: Path,
    path: Path,
    instance: str | None,
    env_file: str,
) -> None:
    s = service(path, instance)
    state = tmp_path / "state"
    state.mkdir()
    settings = node_env_file(node, tmp_path / "bad.env", KEEPER_POLL_INTERVAL="-5")
    run = subprocess.run(
        s.argv(),
        cwd=state,
        env=s.environment(settings, home=state),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_LIMIT_S,
        check=False,
    )
    assert run.returncode == EXIT_USER_ERROR, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("keeper: error: KEEPER_POLL_INTERVAL"), lines
    assert "Traceback" not in run.stderr and run.stdout == ""
    assert not (state / "keeper-journal.sqlite").exists()


def test_exec_start_is_the_keeper_entry_point() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    assert scripts["keeper"] == "keeper.cli:main"  # what pip installs as bin/keeper
    for path, instance in ((UNIT, None), (TEMPLATE, TEMPLATE_INSTANCE)):
        argv = service(path, instance).argv()
        assert argv == [str(VENV / "bin" / "keeper"), "run"], argv
    entry = VENV / "bin" / "keeper"
    if not entry.exists():
        pytest.skip(f"{entry} missing: `make install` creates the venv")
    assert os.access(entry, os.X_OK)
    assert "from keeper.cli import main" in entry.read_text(encoding="utf-8")
