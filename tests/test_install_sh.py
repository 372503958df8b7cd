"""install.sh: its options, the plan a dry run prints, and real runs into a scratch root.

The real runs set MICROFEDI_INSTALL_ROOT, so every file the installer writes lands
under a tmp dir, and put stand-ins for the system's commands first on PATH
(apt-get, dpkg-query, getent, useradd, chown, runuser, pipx, systemctl, caddy).
The stand-ins log their arguments and keep just the state the installer asks
about; microfedi itself is the real CLI and the real server: `pipx` links the
program dir to this checkout and `systemctl restart` starts the server the way
the written unit says, on a loopback port.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import Result

REPO = Path(__file__).resolve().parent.parent
INSTALL_SH = REPO / "install.sh"

FAKE_COMMANDS = textwrap.dedent(
    r"""
    #!/usr/bin/env bash
    # Stand-in for a system command; which one is the name it was called by.
    set -euo pipefail
    name=$(basename "$0")
    echo "$name $*" >>"$FAKE_STATE/commands.log"
    root=$MICROFEDI_INSTALL_ROOT
    pidfile=$FAKE_STATE/microfedi.pid
    server_running() { [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
    stop_server() {
        server_running || return 0
        local pid
        pid=$(cat "$pidfile")
        kill -KILL "$pid"  # what matters here is that it stops, and this is quick
        # Gone or a zombie (whoever adopted it reaps it later): its port is free.
        while [[ $(ps -o stat= -p "$pid" || true) == [!Z]* ]]; do sleep 0.05; done
        rm -f "$pidfile"
    }
    case $name in
        apt-get)
            if [[ $1 == install ]]; then
                for arg in "${@:2}"; do [[ $arg == -* ]] || touch "$FAKE_STATE/pkg-$arg"; done
            fi
            ;;
        dpkg-query)
            [[ -e $FAKE_STATE/pkg-${!#} ]] || exit 1
            printf installed
            ;;
        getent)
            [[ -e $FAKE_STATE/user-$2 ]] || exit 2
            echo "$2:x:999:999::/var/lib/$2:/usr/sbin/nologin"
            ;;
        useradd) touch "$FAKE_STATE/user-${!#}" ;;
        chown) ;;
        runuser)
            while [[ $1 != -- ]]; do shift; done
            shift
            exec "$@"
            ;;
        pipx)
            if [[ -n ${FAKE_PIPX_FAIL:-} ]]; then
                echo "ERROR: No matching distribution found for microfedi" >&2
                exit 1
            fi
            mkdir -p "$PIPX_BIN_DIR"
            printf '#!/bin/sh\nexec %s -m microfedi "$@"\n' "$FAKE_PYTHON" >"$PIPX_BIN_DIR/microfedi"
            chmod +x "$PIPX_BIN_DIR/microfedi"
            ;;
        systemctl)
            case $1 in
                is-enabled) [[ -e $FAKE_STATE/enabled-$3 ]] ;;
                enable) touch "$FAKE_STATE/enabled-$2" ;;
                is-active)
                    if server_running; then echo active; else echo inactive; exit 3; fi
                    ;;
                restart)
                    stop_server
                    unit=$root/etc/systemd/system/$2
                    command=$(sed -n 's/^ExecStart=//p' "$unit")
                    data_dir=$(sed -n 's/^Environment=MICROFEDI_DATA_DIR=//p' "$unit")
                    # shellcheck disable=SC2086 # ExecStart is a command line to split
                    MICROFEDI_DATA_DIR=$root$data_dir nohup $root$command \
                        >>"$FAKE_STATE/server.log" 2>&1 </dev/null &
                    echo $! >"$pidfile"
                    ;;
                disable)
                    stop_server
                    rm -f "$FAKE_STATE/enabled-${!#}"
                    ;;
            esac
            ;;
        caddy)
            if [[ -n ${FAKE_CADDY_REFUSE:-} ]]; then
                echo "Error: adapting config using caddyfile: unrecognized directive: nonsense" >&2
                exit 1
            fi
            ;;
    esac
    """
).lstrip()

FAKED = ("apt-get", "dpkg-query", "getent", "useradd", "chown", "runuser", "pipx", "systemctl", "caddy")

DEBIAN_CADDYFILE = ":80 {\n\troot * /usr/share/caddy\n\tfile_server\n}\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Machine:
    """A scratch root with stand-in system commands, and a way to run install.sh on it."""

    root: Path
    state: Path
    env: dict[str, str]

    def install(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run install.sh with ARGS and return the finished process (never raises on failure)."""
        return subprocess.run(
            ["bash", str(INSTALL_SH), *args],
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def path(self, absolute: str) -> Path:
        """Where an absolute path of the real machine lives in the scratch root."""
        return self.root / absolute.lstrip("/")

    def commands(self) -> list[str]:
        """The stand-in commands run so far, one line each ("systemctl restart ...")."""
        log = self.state / "commands.log"
        return log.read_text().splitlines() if log.exists() else []

    def forget_commands(self) -> None:
        (self.state / "commands.log").unlink(missing_ok=True)

    def stop_server(self) -> None:
        pidfile = self.state / "microfedi.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    root, state, bin_dir = tmp_path / "root", tmp_path / "state", tmp_path / "bin"
    for folder in (root / "run/systemd/system", root / "etc/caddy", state, bin_dir):
        folder.mkdir(parents=True)
    (root / "etc/caddy/Caddyfile").write_text(DEBIAN_CADDYFILE)
    fake = tmp_path / "fake-command"
    fake.write_text(FAKE_COMMANDS)
    fake.chmod(0o755)
    for name in FAKED:
        (bin_dir / name).symlink_to(fake)
    env = {name: value for name, value in os.environ.items() if not name.startswith(("MICROFEDI_", "FAKE_"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        MICROFEDI_INSTALL_ROOT=str(root),
        FAKE_STATE=str(state),
        FAKE_PYTHON=sys.executable,
        PYTHONPATH=str(REPO / "src"),
    )
    box = Machine(root, state, env)
    yield box
    box.stop_server()


def files_under(top: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below `top` with its content and modification time."""
    return {
        str(path.relative_to(top)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(top.rglob("*"))
        if path.is_file()
    }


def caddy_sites(text: str) -> dict[str, list[str]]:
    """The site blocks of a Caddy snippet: host -> the directive lines inside it."""
    return {
        host: [line.strip() for line in body.strip().splitlines()]
        for host, body in re.findall(r"^(\S+) \{\n(.*?)^\}", text, flags=re.M | re.S)
    }


def printed_file(output: str, path: str) -> str:
    """The content a dry run printed for `path`."""
    match = re.search(rf"^--- {re.escape(path)} \(.*?\)\n(.*?)^--- end of {re.escape(path)}$", output, flags=re.M | re.S)
    assert match, f"the dry run did not print {path}"
    return match.group(1)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def discovery_paths_redirect(lines: list[str], service: str) -> bool:
    return all(f"redir /.well-known/{path} https://{service}{{uri}} 301" in lines for path in ("webfinger", "host-meta", "nodeinfo"))


# ---------------------------------------------------------------- options


def test_script_parses() -> None:
    subprocess.run(["bash", "-n", str(INSTALL_SH)], check=True)


def test_help_lists_every_option_the_parser_accepts() -> None:
    result = subprocess.run(["bash", str(INSTALL_SH), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    parser = INSTALL_SH.read_text().split("parse_args() {", 1)[1].split("\n}\n", 1)[0]
    accepted = set(re.findall(r"^\s+(?:-h \| )?(--[a-z-]+)\)", parser, flags=re.M))
    assert {"--source", "--domain", "--port", "--no-caddy", "--dry-run", "--uninstall", "--help"} <= accepted
    for option in accepted | {"-h"}:
        assert re.search(rf"^\s+(-h, )?{re.escape(option)}\b", result.stdout, flags=re.M), option


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--bogus"], "unknown option: --bogus"),
        (["--port", "0"], "--port 0"),
        (["--port=80x"], "--port 80x"),
        (["--domain"], "--domain needs a value"),
        (["--domain", "a b.example"], "not a domain name"),
        (["--domain", "carol.example=fedi example"], "not a domain name"),
        (["--dry-run=yes"], "--dry-run takes no value"),
        (["--source", "./no/such/checkout"], "no such file or directory"),
    ],
)
def test_bad_usage_is_one_line_and_status_2(args: list[str], complaint: str) -> None:
    result = subprocess.run(["bash", str(INSTALL_SH), *args], capture_output=True, text=True)
    assert result.returncode == 2
    assert complaint in one_error_line(result)
    assert result.stdout == ""


# ---------------------------------------------------------------- dry run


def test_dry_run_prints_unit_and_caddy_sites_and_changes_nothing(machine: Machine) -> None:
    result = machine.install(
        "--dry-run", "--port", "8123", "--caddy-handle-redirects",
        "--domain", "Alice.Example", "--domain", "carol.example=fedi.example",
    )
    assert result.returncode == 0, result.stderr
    unit = printed_file(result.stdout, "/etc/systemd/system/microfedi.service")
    for line in (
        "User=microfedi",
        "Environment=MICROFEDI_DATA_DIR=/var/lib/microfedi",
        "ExecStart=/opt/microfedi/bin/microfedi run --host 127.0.0.1 --port 8123",
        "ReadWritePaths=/var/lib/microfedi",
        "ProtectSystem=strict",
        "MemoryHigh=400M",
    ):
        assert line in unit.splitlines()
    assert "MemoryMax" not in unit.replace("# MemoryMax", "")
    sites = caddy_sites(printed_file(result.stdout, "/etc/caddy/microfedi/microfedi.caddy"))
    assert sites["alice.example"] == ["reverse_proxy 127.0.0.1:8123"]
    assert sites["fedi.example"] == ["reverse_proxy 127.0.0.1:8123"]
    assert discovery_paths_redirect(sites["carol.example"], "fedi.example")
    assert not any("reverse_proxy" in line for line in sites["carol.example"])
    assert "import /etc/caddy/microfedi/*.caddy" in printed_file(result.stdout, "/etc/caddy/Caddyfile")
    planned = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert any(re.match(r"\+ env DEBIAN_FRONTEND=noninteractive apt-get install .*python3-venv pipx caddy$", line) for line in planned)
    assert any(line.startswith("+ useradd --system") and line.endswith(" microfedi") for line in planned)
    assert any(line.endswith("microfedi domain add carol.example --service-domain fedi.example") for line in planned)
    assert "+ systemctl restart microfedi.service" in planned
    # Only questions were asked of the system; nothing was written.
    questions = ("dpkg-query ", "getent ", "systemctl is-enabled ", "systemctl is-active ")
    assert [line for line in machine.commands() if not line.startswith(questions)] == []
    assert set(files_under(machine.root)) == {"etc/caddy/Caddyfile"}
    assert machine.path("/etc/caddy/Caddyfile").read_text() == DEBIAN_CADDYFILE


def test_dry_run_without_caddy_handle_redirects_prints_them_for_the_operator(machine: Machine) -> None:
    result = machine.install("--dry-run", "--domain", "carol.example=fedi.example")
    assert result.returncode == 0, result.stderr
    sites = caddy_sites(printed_file(result.stdout, "/etc/caddy/microfedi/microfedi.caddy"))
    assert sites == {"fedi.example": ["reverse_proxy 127.0.0.1:8000"]}
    for path in ("webfinger", "host-meta", "nodeinfo"):
        assert f"https://carol.example/.well-known/{path} -> https://fedi.example/.well-known/{path}" in result.stdout


def test_dry_run_with_no_caddy_installs_and_writes_nothing_for_caddy(machine: Machine) -> None:
    result = machine.install("--dry-run", "--no-caddy", "--domain", "alice.example")
    assert result.returncode == 0, result.stderr
    assert "microfedi.caddy" not in result.stdout
    assert "caddy" not in next(line for line in result.stdout.splitlines() if "apt-get install" in line)
    assert "proxy https for those hosts to 127.0.0.1:8000" in result.stdout


# ---------------------------------------------------------------- real runs


@pytest.fixture
def installed(machine: Machine) -> tuple[Machine, int]:
    """A machine after one real install of alice.example and carol.example (served by fedi.example)."""
    port = free_port()
    result = machine.install("--port", str(port), "--domain", "alice.example", "--domain", "carol.example=fedi.example")
    assert result.returncode == 0, result.stdout + result.stderr
    return machine, port


def test_install_runs_the_service_with_its_data_dir_and_proxies_every_url_host(
    installed: tuple[Machine, int], cli_in: Callable[..., Result]
) -> None:
    machine, port = installed
    data_dir = machine.path("/var/lib/microfedi")
    listing = cli_in(data_dir, "domain", "list").output
    assert re.search(r"^alice\.example\s+serves itself", listing, flags=re.M)
    assert re.search(r"^carol\.example\s+served by fedi\.example", listing, flags=re.M)
    # The server the unit describes answers for the domains, from that data dir.
    response = httpx.get(f"http://127.0.0.1:{port}/.well-known/host-meta", headers={"Host": "alice.example"})
    assert response.status_code == 200
    assert "https://alice.example/" in response.text
    sites = caddy_sites(machine.path("/etc/caddy/microfedi/microfedi.caddy").read_text())
    assert sites == {host: [f"reverse_proxy 127.0.0.1:{port}"] for host in ("alice.example", "fedi.example")}
    caddyfile = machine.path("/etc/caddy/Caddyfile").read_text()
    assert caddyfile.startswith(DEBIAN_CADDYFILE)
    wrapper = machine.path("/usr/local/bin/microfedi")
    assert os.access(wrapper, os.X_OK)
    assert "runuser -u microfedi -- env MICROFEDI_DATA_DIR=/var/lib/microfedi /opt/microfedi/bin/microfedi" in wrapper.read_text()
    assert machine.path("/etc/microfedi/install.conf").read_text().splitlines()[1:] == [
        f"port={port}", "caddy=yes", "caddy_handle_redirects=no"
    ]


def test_running_again_changes_nothing_and_a_new_domain_adds_only_its_site(installed: tuple[Machine, int]) -> None:
    machine, port = installed
    before = files_under(machine.root / "etc") | files_under(machine.root / "usr")
    machine.forget_commands()

    again = machine.install("--port", str(port), "--domain", "alice.example", "--domain", "carol.example=fedi.example")

    assert again.returncode == 0, again.stdout + again.stderr
    assert files_under(machine.root / "etc") | files_under(machine.root / "usr") == before
    ran = machine.commands()
    for changing in ("apt-get", "useradd", "systemctl daemon-reload", "systemctl enable", "caddy validate", "systemctl reload-or-restart caddy"):
        assert not any(line.startswith(changing) for line in ran), changing
    assert any(line.startswith("pipx install --force") for line in ran)
    assert "systemctl restart microfedi.service" in ran
    assert "Caddy configuration unchanged" in again.stdout
    assert machine.path("/etc/caddy/Caddyfile").read_text().count("import /etc/caddy/microfedi/*.caddy") == 1

    # A later run names only the new domain: the port and Caddy choices are remembered.
    machine.forget_commands()
    added = machine.install("--domain", "bob.example")
    assert added.returncode == 0, added.stdout + added.stderr
    sites = caddy_sites(machine.path("/etc/caddy/microfedi/microfedi.caddy").read_text())
    assert set(sites) == {"alice.example", "bob.example", "fedi.example"}
    assert sites["bob.example"] == [f"reverse_proxy 127.0.0.1:{port}"]
    assert files_under(machine.root / "etc")["systemd/system/microfedi.service"] == before["systemd/system/microfedi.service"]
    assert "caddy validate --config" in " ".join(machine.commands())
    assert "systemctl reload-or-restart caddy" in machine.commands()


def test_caddy_handle_redirects_are_kept_until_turned_off(installed: tuple[Machine, int]) -> None:
    machine, _ = installed
    snippet = machine.path("/etc/caddy/microfedi/microfedi.caddy")
    assert machine.install("--caddy-handle-redirects").returncode == 0
    assert discovery_paths_redirect(caddy_sites(snippet.read_text())["carol.example"], "fedi.example")
    assert "caddy_handle_redirects=yes" in machine.path("/etc/microfedi/install.conf").read_text().splitlines()
    assert machine.install("--no-caddy-handle-redirects").returncode == 0
    assert "carol.example" not in caddy_sites(snippet.read_text())


def test_caddy_refusing_the_new_sites_puts_the_old_ones_back(installed: tuple[Machine, int]) -> None:
    machine, _ = installed
    before = files_under(machine.path("/etc/caddy"))
    machine.forget_commands()
    result = machine.install("--domain", "bob.example", extra_env={"FAKE_CADDY_REFUSE": "1"})
    assert result.returncode == 1
    assert "unrecognized directive" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("install.sh: error: Caddy refused the new configuration")
    assert {name: content for name, (content, _) in files_under(machine.path("/etc/caddy")).items()} == {
        name: content for name, (content, _) in before.items()
    }
    assert "systemctl reload-or-restart caddy" not in machine.commands()


def test_a_domain_asked_for_with_another_service_domain_is_refused(installed: tuple[Machine, int]) -> None:
    machine, _ = installed
    result = machine.install("--domain", "carol.example")
    assert result.returncode == 1
    line = one_error_line(result)
    assert "carol.example exists already (served by fedi.example)" in line
    assert "--domain carol.example=fedi.example" in line


def test_no_caddy_later_takes_the_sites_out_of_caddy(installed: tuple[Machine, int]) -> None:
    machine, _ = installed
    result = machine.install("--no-caddy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not machine.path("/etc/caddy/microfedi").exists()
    assert machine.path("/etc/caddy/Caddyfile").read_text() == DEBIAN_CADDYFILE
    assert "caddy=no" in machine.path("/etc/microfedi/install.conf").read_text().splitlines()


def test_uninstall_removes_service_program_and_sites_but_keeps_the_data(installed: tuple[Machine, int]) -> None:
    machine, port = installed
    sites = machine.path("/etc/caddy/microfedi/microfedi.caddy").read_text()
    refused = machine.install("--uninstall", extra_env={"FAKE_CADDY_REFUSE": "1"})
    assert refused.returncode == 1
    assert machine.path("/etc/caddy/microfedi/microfedi.caddy").read_text() == sites

    result = machine.install("--uninstall")
    assert result.returncode == 0, result.stdout + result.stderr
    for gone in ("/etc/systemd/system/microfedi.service", "/usr/local/bin/microfedi", "/opt/microfedi", "/etc/caddy/microfedi", "/etc/microfedi"):
        assert not machine.path(gone).exists(), gone
    assert machine.path("/etc/caddy/Caddyfile").read_text() == DEBIAN_CADDYFILE
    assert machine.path("/var/lib/microfedi/microfedi.sqlite3").exists()
    assert "Kept: the data dir /var/lib/microfedi" in result.stdout
    assert "systemctl disable --now microfedi.service" in machine.commands()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_a_microfedi_command_from_elsewhere_is_not_overwritten(machine: Machine) -> None:
    foreign = machine.path("/usr/local/bin/microfedi")
    foreign.parent.mkdir(parents=True)
    foreign.write_text("#!/bin/sh\n# pip's console script\n")
    result = machine.install("--domain", "alice.example")
    assert result.returncode == 1
    assert "/usr/local/bin/microfedi exists and this installer did not write it" in one_error_line(result)
    assert foreign.read_text() == "#!/bin/sh\n# pip's console script\n"
    assert machine.commands() == []


def test_a_failing_step_stops_the_install_with_one_line_naming_it(machine: Machine) -> None:
    result = machine.install("--source", "microfedi==9.9", extra_env={"FAKE_PIPX_FAIL": "1"})
    assert result.returncode == 1
    *said, last = result.stderr.strip().splitlines()
    assert said == ["ERROR: No matching distribution found for microfedi"]
    assert last.startswith("install.sh: error: this failed with status 1: runuser -u microfedi -- env ")
    assert last.endswith(" pipx install microfedi==9.9")
    assert not machine.path("/etc/systemd/system/microfedi.service").exists()
