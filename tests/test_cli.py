"""The `microfedi` command, run in-process with click's CliRunner against a temp data dir."""

from __future__ import annotations

import asyncio
import sqlite3
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from microfedi.accounts import verify_login
from microfedi.cli import main
from microfedi.config import DATABASE_FILE
from microfedi.store.database import Database

Cli = Callable[..., Result]


@pytest.fixture
def installed(cli: Cli) -> Cli:
    """The CLI of a data dir on which `microfedi init` has run."""
    result = cli("init")
    assert result.exit_code == 0, result.output
    return cli


def assert_refused(result: Result, *fragments: str) -> str:
    """The command exited 1 with one `error: ...` line and no traceback; returns that line."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), f"crashed instead of refusing: {result.exception!r}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert "Traceback" not in result.output
    return lines[0]


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    return result.stdout


def login_works(data_dir: Path, handle: str, password: str) -> bool:
    with Database(data_dir / DATABASE_FILE) as db:
        return asyncio.run(verify_login(db, handle, password)) is not None


def printed_password(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("password: ")]
    assert len(lines) == 1, output
    return lines[0].removeprefix("password: ")


# ---------------------------------------------------------------- init and the data dir


def test_init_twice_is_safe_and_keeps_data_and_secret(cli: Cli, data_dir: Path) -> None:
    assert "created" in ok(cli("init"))
    assert (data_dir / DATABASE_FILE).is_file()
    secret = tomllib.loads((data_dir / "microfedi.toml").read_text())["secret_key"]
    ok(cli("domain", "add", "alice.test"))

    assert "already set up" in ok(cli("init"))

    assert tomllib.loads((data_dir / "microfedi.toml").read_text())["secret_key"] == secret
    assert "alice.test" in ok(cli("domain", "list"))


def test_data_dir_comes_from_the_environment(tmp_path: Path) -> None:
    data_dir = tmp_path / "from-env"
    result = CliRunner().invoke(main, ["init"], env={"MICROFEDI_DATA_DIR": str(data_dir)})
    assert result.exit_code == 0, result.output
    assert (data_dir / DATABASE_FILE).is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["domain", "list"],
        ["domain", "add", "alice.test"],
        ["domain", "remove", "alice.test"],
        ["user", "add", "alice@alice.test"],
        ["user", "list"],
        ["user", "passwd", "alice@alice.test"],
        ["user", "remove", "alice@alice.test", "--yes"],
        ["run", "--port", "8999"],
    ],
    ids=" ".join,
)
def test_commands_before_init_say_to_run_init(cli: Cli, data_dir: Path, args: list[str]) -> None:
    assert_refused(cli(*args), "microfedi init", str(data_dir))
    assert not data_dir.exists(), "a refused command must not create the data dir"


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*prefix, name))
        else:
            yield (*prefix, name)


@pytest.mark.parametrize("path", list(_all_commands(main)), ids=lambda p: " ".join(p) or "microfedi")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")


def test_version_option() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and "version" in result.stdout


def test_newer_schema_is_refused_in_one_line(installed: Cli, data_dir: Path) -> None:
    with sqlite3.connect(data_dir / DATABASE_FILE) as conn:
        conn.execute("PRAGMA user_version = 999")
    assert_refused(installed("domain", "list"), "newer microfedi")


# ---------------------------------------------------------------- domains


def test_domain_add_list_remove(installed: Cli) -> None:
    assert "added domain alice.test" in ok(installed("domain", "add", "alice.test"))
    split = ok(installed("domain", "add", "carol.test", "--service-domain", "fedi.test"))
    assert "https://carol.test/.well-known/webfinger -> https://fedi.test/.well-known/webfinger" in split

    listing = ok(installed("domain", "list")).splitlines()
    assert len(listing) == 2
    assert listing[0].startswith("alice.test") and "serves itself" in listing[0] and "0 user(s)" in listing[0]
    assert listing[1].startswith("carol.test") and "served by fedi.test" in listing[1]

    assert "removed domain alice.test" in ok(installed("domain", "remove", "alice.test"))
    assert [line.split()[0] for line in ok(installed("domain", "list")).splitlines()] == ["carol.test"]


def test_domain_list_when_empty_says_how_to_add(installed: Cli) -> None:
    assert "microfedi domain add" in ok(installed("domain", "list"))


def test_domain_names_are_lower_cased(installed: Cli) -> None:
    assert "added domain alice.example" in ok(installed("domain", "add", "Alice.Example"))
    assert ok(installed("domain", "list")).split()[0] == "alice.example"


@pytest.mark.parametrize(
    "name", ["a..b", "http://x", "1.2.3.4", "x:80", "alice.test/path", "alice-.test", "alice.123", "bad_name.test"]
)
def test_bad_domain_names_are_refused(installed: Cli, name: str) -> None:
    assert_refused(installed("domain", "add", name), repr(name))
    assert "no domains yet" in ok(installed("domain", "list"))


def test_bad_service_domain_is_refused(installed: Cli) -> None:
    assert_refused(installed("domain", "add", "carol.test", "--service-domain", "https://fedi.test"), "service domain")


def test_adding_a_domain_twice_is_refused(installed: Cli) -> None:
    ok(installed("domain", "add", "alice.test"))
    assert_refused(installed("domain", "add", "ALICE.test"), "alice.test exists already")


def test_remove_refused_while_users_exist_and_forced(installed: Cli) -> None:
    ok(installed("domain", "add", "alice.test"))
    ok(installed("user", "add", "alice@alice.test"))

    assert_refused(installed("domain", "remove", "alice.test"), "alice@alice.test", "--force")
    assert "alice.test" in ok(installed("domain", "list"))

    assert "removed domain alice.test and 1 user(s)" in ok(installed("domain", "remove", "alice.test", "--force"))
    assert "no domains yet" in ok(installed("domain", "list"))
    assert "no users yet" in ok(installed("user", "list"))


def test_removing_an_unknown_domain_lists_the_known_ones(installed: Cli) -> None:
    ok(installed("domain", "add", "alice.test"))
    assert_refused(installed("domain", "remove", "nope.test"), "no domain nope.test", "alice.test")


def test_a_service_domain_in_use_cannot_be_removed(installed: Cli) -> None:
    ok(installed("domain", "add", "fedi.test"))
    ok(installed("domain", "add", "carol.test", "--service-domain", "fedi.test"))
    assert_refused(installed("domain", "remove", "fedi.test"), "carol.test")


# ---------------------------------------------------------------- users


def test_user_add_prints_a_working_password_once(installed: Cli, data_dir: Path) -> None:
    ok(installed("domain", "add", "alice.test"))
    output = ok(installed("user", "add", "alice@alice.test"))
    password = printed_password(output)
    assert output.count(password) == 1
    assert "actor: https://alice.test/@alice" in output
    assert login_works(data_dir, "alice@alice.test", password)
    assert not login_works(data_dir, "alice@alice.test", password + "x")


def test_user_add_reads_the_password_from_stdin(installed: Cli, data_dir: Path) -> None:
    ok(installed("domain", "add", "alice.test"))
    output = ok(installed("user", "add", "@alice@alice.test", "--password-stdin", input="correct horse\n"))
    assert "correct horse" not in output and "password:" not in output
    assert login_works(data_dir, "alice@alice.test", "correct horse")


def test_user_add_with_empty_stdin_is_refused(installed: Cli) -> None:
    ok(installed("domain", "add", "alice.test"))
    assert_refused(installed("user", "add", "alice@alice.test", "--password-stdin", input=""), "standard input")
    assert "no users yet" in ok(installed("user", "list"))


def test_user_add_refuses_a_short_password(installed: Cli) -> None:
    ok(installed("domain", "add", "alice.test"))
    assert_refused(installed("user", "add", "alice@alice.test", "--password-stdin", input="short\n"), "too short")


def test_user_add_admin_and_list(installed: Cli) -> None:
    ok(installed("domain", "add", "alice.test"))
    ok(installed("domain", "add", "bob.test"))
    assert "(admin)" in ok(installed("user", "add", "Alice@Alice.Test", "--admin"))
    ok(installed("user", "add", "bob@bob.test"))

    assert ok(installed("user", "list")).splitlines() == ["@alice@alice.test  (admin)", "@bob@bob.test"]
    assert ok(installed("user", "list", "--domain", "bob.test")).splitlines() == ["@bob@bob.test"]


@pytest.mark.parametrize("handle", ["alice", "alice@", "@alice.test", "al ice@alice.test", "alice!@alice.test"])
def test_bad_handles_are_refused(installed: Cli, handle: str) -> None:
    ok(installed("domain", "add", "alice.test"))
    assert_refused(installed("user", "add", handle))


def test_user_on_an_unknown_domain_lists_existing_domains(installed: Cli) -> None:
    ok(installed("domain", "add", "alice.test"))
    ok(installed("domain", "add", "bob.test"))
    assert_refused(
        installed("user", "add", "carol@carol.test"), "no domain carol.test", "alice.test, bob.test", "domain add"
    )


def test_user_on_a_fresh_install_says_how_to_add_a_domain(installed: Cli) -> None:
    assert_refused(installed("user", "add", "carol@carol.test"), "microfedi domain add")


def test_username_is_unique_per_url_host(installed: Cli) -> None:
    ok(installed("domain", "add", "fedi.test"))
    ok(installed("domain", "add", "carol.test", "--service-domain", "fedi.test"))
    ok(installed("domain", "add", "erin.test", "--service-domain", "fedi.test"))
    ok(installed("domain", "add", "alice.test"))
    assert "actor: https://fedi.test/@carol" in ok(installed("user", "add", "carol@carol.test"))

    assert_refused(installed("user", "add", "carol@erin.test"), "carol@carol.test", "fedi.test", "unique per URL host")
    assert_refused(installed("user", "add", "carol@fedi.test"), "carol@carol.test", "unique per URL host")
    assert_refused(installed("user", "add", "carol@carol.test"), "exists already")
    # The same name on another URL host is a different actor URL, so it is fine.
    ok(installed("user", "add", "carol@alice.test"))


def test_removed_usernames_are_not_reused(installed: Cli) -> None:
    ok(installed("domain", "add", "alice.test"))
    ok(installed("user", "add", "alice@alice.test"))
    assert "removed @alice@alice.test" in ok(installed("user", "remove", "alice@alice.test", "--yes"))
    assert "no users yet" in ok(installed("user", "list"))

    assert_refused(installed("user", "add", "alice@alice.test"), "not reused")


def test_removed_usernames_stay_taken_after_the_domain_is_re_added(installed: Cli) -> None:
    ok(installed("domain", "add", "alice.test"))
    ok(installed("user", "add", "alice@alice.test"))
    ok(installed("domain", "remove", "alice.test", "--force"))
    ok(installed("domain", "add", "alice.test"))
    assert_refused(installed("user", "add", "alice@alice.test"), "not reused")


def test_user_passwd_generated_and_from_stdin(installed: Cli, data_dir: Path) -> None:
    ok(installed("domain", "add", "alice.test"))
    first = printed_password(ok(installed("user", "add", "alice@alice.test")))

    second = printed_password(ok(installed("user", "passwd", "alice@alice.test")))
    assert second != first
    assert login_works(data_dir, "alice@alice.test", second)
    assert not login_works(data_dir, "alice@alice.test", first)

    output = ok(installed("user", "passwd", "alice@alice.test", "--password-stdin", input="new secret words\n"))
    assert "new secret words" not in output
    assert login_works(data_dir, "alice@alice.test", "new secret words")
    assert not login_works(data_dir, "alice@alice.test", second)


def test_user_passwd_for_an_unknown_user(installed: Cli) -> None:
    ok(installed("domain", "add", "alice.test"))
    assert_refused(installed("user", "passwd", "nobody@alice.test"), "no user nobody@alice.test")


def test_user_remove_needs_yes_without_a_terminal(installed: Cli, data_dir: Path) -> None:
    ok(installed("domain", "add", "alice.test"))
    password = printed_password(ok(installed("user", "add", "alice@alice.test")))

    assert_refused(installed("user", "remove", "alice@alice.test"), "--yes")
    assert ok(installed("user", "list")).splitlines() == ["@alice@alice.test"]

    ok(installed("user", "remove", "alice@alice.test", "--yes"))
    assert not login_works(data_dir, "alice@alice.test", password)
    assert_refused(installed("user", "remove", "alice@alice.test", "--yes"), "no user alice@alice.test")
