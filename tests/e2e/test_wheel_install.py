"""End to end: build the wheel, install it into a fresh venv, and run the installed
`microfedi` command as a real server on loopback, outside the source tree."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
AS_ACCEPT = "application/activity+json"


def _run(args: list[str | Path], *, timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the assertion shows its output."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def _clean_environment(data_dir: Path) -> dict[str, str]:
    """Our environment without anything that would let the source tree leak in."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not name.startswith("MICROFEDI_")
    }
    env["MICROFEDI_DATA_DIR"] = str(data_dir)
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ of a fresh venv with the freshly built wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, REPO_ROOT], timeout=180)
    (wheel,) = dist.glob("microfedi-*.whl")
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", venv], timeout=120)
    _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel], timeout=300)
    return venv / "bin"


def test_the_venv_runs_the_installed_package_with_its_templates(venv_bin: Path, tmp_path: Path) -> None:
    probe = (
        "import microfedi, pathlib; from microfedi.web.templates import templates_dir; "
        "print(pathlib.Path(microfedi.__file__).resolve()); print(templates_dir().resolve())"
    )
    done = _run([venv_bin / "python", "-c", probe], timeout=30, cwd=tmp_path, env=_clean_environment(tmp_path))
    package_file, templates = (Path(line) for line in done.stdout.splitlines())
    venv = venv_bin.parent.resolve()
    assert package_file.is_relative_to(venv), f"imported {package_file}, not the installed wheel"
    assert templates.is_relative_to(venv) and (templates / "profile.html").is_file()
    assert (templates / "static" / "style.css").is_file()


def test_installed_command_serves_discovery_over_http(venv_bin: Path, tmp_path: Path) -> None:
    env = _clean_environment(tmp_path / "data")
    microfedi = venv_bin / "microfedi"
    elsewhere = tmp_path / "cwd"  # not the source tree
    elsewhere.mkdir()

    def command(*args: str, stdin: str | None = None) -> str:
        return _run([microfedi, *args], timeout=60, cwd=elsewhere, env=env, input=stdin).stdout

    assert "created" in command("init")
    assert "added domain alice.test" in command("domain", "add", "alice.test")
    assert "created @alice@alice.test" in command("user", "add", "alice@alice.test", "--password-stdin", stdin="e2e password\n")

    port = _free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [microfedi, "run", "--port", str(port)], cwd=elsewhere, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False) as http:
            _wait_until_healthy(http, server, log_path)
            host = {"Host": "alice.test"}

            finger = http.get("/.well-known/webfinger", params={"resource": "acct:alice@alice.test"}, headers=host)
            assert finger.status_code == 200, finger.text
            assert finger.json()["subject"] == "acct:alice@alice.test"
            self_links = [link["href"] for link in finger.json()["links"] if link["rel"] == "self"]
            assert self_links == ["https://alice.test/@alice"]

            actor = http.get("/@alice", headers={**host, "Accept": AS_ACCEPT})
            assert actor.status_code == 200
            assert actor.headers["content-type"] == AS_ACCEPT
            assert actor.json()["id"] == "https://alice.test/@alice"
            assert "BEGIN PUBLIC KEY" in actor.json()["publicKey"]["publicKeyPem"]

            page = http.get("/@alice", headers={**host, "Accept": "text/html"})
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "@alice@alice.test" in page.text
            assert http.get("/static/style.css", headers=host).status_code == 200

            assert http.get("/@alice", headers={"Host": "nope.test"}).status_code == 404

        server.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down gracefully, so the
        # process may end "killed by SIGTERM", which systemd also counts as clean.
        assert server.wait(timeout=20) in (0, -signal.SIGTERM), log_path.read_text()
        log_text = log_path.read_text()
        assert "Application shutdown complete" in log_text and "Traceback" not in log_text, log_text
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _wait_until_healthy(http: httpx.Client, server: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, f"server exited early:\n{log_path.read_text()}"
        try:
            response = http.get("/health")
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        assert (response.status_code, response.text) == (200, "OK")
        return
    pytest.fail(f"server not healthy after 30 s:\n{log_path.read_text()}")
