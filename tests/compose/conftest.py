"""Fixtures of the compose test: the images (images.sh: stand-ins built from Debian packages, then
smoothd from docker/Dockerfile), one compose project from the repository's compose.yaml shared by
the scenarios, and the host-side servers the containers reach through host.docker.internal (the
scripted model and the test site, bound to the Docker bridge's gateway address only).

Skipped, with the reason printed, where no Docker engine or no Compose answers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

os.environ["SMOOTH_TELEMETRY"] = "off"

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "conformance"))

from scripted_llm import ScriptedLLM  # noqa: E402
from smoothd_support import Site  # noqa: E402

PROJECT = "smoothd-composetest"
KEY_RE = re.compile(r"export CIRCLEMIND_API_KEY=(smd_[A-Za-z0-9]+)")
UP_TIMEOUT = 240


def _run(args: list[str], timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check:
        assert r.returncode == 0, f"{' '.join(args)} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _compose_cmd() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        try:
            if subprocess.run([*cmd, "version"], capture_output=True, timeout=30).returncode == 0:
                return cmd
        except (OSError, subprocess.TimeoutExpired):
            pass
    return None


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    if not _docker_answers():
        pytest.skip("no Docker engine answers (docker info failed): the compose test needs one")
    if _compose_cmd() is None:
        pytest.skip("neither `docker compose` nor `docker-compose` works")
    keys = ("SMOOTHD_IMAGE", "SMOOTHD_POSTGRES_IMAGE")
    if all(os.environ.get(k) for k in keys):
        return {k: os.environ[k] for k in keys}
    r = subprocess.run([str(HERE / "images.sh")], stdout=subprocess.PIPE, text=True, timeout=3000)
    assert r.returncode == 0, f"tests/compose/images.sh failed ({r.returncode}); its log is above"
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


class Stack:
    """One compose project of compose.yaml (+ compose.test.yaml), with its `.env` file."""

    def __init__(self, tmp: Path, images: dict[str, str], gateway: str, llm: ScriptedLLM) -> None:
        self.cmd = _compose_cmd()
        assert self.cmd is not None
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env_file = tmp / ".env"
        # What a user writes in .env (README, "Docker Compose"), plus the test's images and port.
        self.env_file.write_text(
            f"SMOOTHD_LLM_BASE_URL=http://host.docker.internal:{llm.port}/v1\n"
            "SMOOTHD_LLM_API_KEY=scripted-key\n"
            f"SMOOTHD_LLM_MODEL={llm.MODEL}\n"
            f"SMOOTHD_IMAGE={images['SMOOTHD_IMAGE']}\n"
            f"SMOOTHD_POSTGRES_IMAGE={images['SMOOTHD_POSTGRES_IMAGE']}\n"
            f"SMOOTHD_PUBLISH=127.0.0.1:{self.port}\n"
            f"SMOOTHD_PUBLIC_URL={self.base}\n"
        )
        self.key: str | None = None

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMOOTHD_")}
        base = [
            *self.cmd,
            "--env-file",
            str(self.env_file),
            "-p",
            PROJECT,
            "-f",
            str(REPO / "compose.yaml"),
            "-f",
            str(HERE / "compose.test.yaml"),
        ]
        return _run([*base, *args], timeout=timeout, check=check, env=env, cwd=REPO)

    def up(self) -> None:
        # --no-build: the images exist (images.sh); a build here would use the real base images.
        self.compose("up", "-d", "--no-build", timeout=UP_TIMEOUT)
        self.wait_ready()

    def wait_ready(self, timeout: float = UP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                r = requests.get(self.base + "/readyz", timeout=5)
                if r.status_code == 200 and all(self.health(c) == "healthy" for c in self.containers("worker")):
                    return
                last = f"readyz {r.status_code}"
            except requests.RequestException as e:
                last = str(e)
            restarts = [self.inspect(c)["RestartCount"] for c in self.compose("ps", "-q").stdout.split()]
            assert max(restarts, default=0) < 3, f"a container keeps restarting:\n{self.logs()}"
            time.sleep(1)
        raise AssertionError(f"the stack is not ready in {timeout}s ({last}):\n{self.logs()}")

    def containers(self, service: str) -> list[str]:
        out = self.compose("ps", "-q", service).stdout.split()
        return [c for c in out if self.state(c) == "running"]

    def inspect(self, cid: str) -> dict:
        return json.loads(_run(["docker", "inspect", cid]).stdout)[0]

    def state(self, cid: str) -> str:
        return self.inspect(cid)["State"]["Status"]

    def health(self, cid: str) -> str:
        return (self.inspect(cid)["State"].get("Health") or {}).get("Status", "none")

    def logs(self, service: str | None = None) -> str:
        r = self.compose("logs", "--no-color", *([service] if service else []), check=False)
        return (r.stdout + r.stderr)[-20000:]

    def sql(self, query: str) -> list[list[str]]:
        (pg,) = self.containers("postgres")
        r = _run(
            ["docker", "exec", pg, "psql", "-U", "postgres", "-d", "smoothd", "-X", "-q", "-At", "-F", "\t", "-c", query]
        )
        return [line.split("\t") for line in r.stdout.splitlines() if line]

    def worker_id(self, cid: str) -> str:
        """The worker id a worker container's process logs when it starts."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = _run(["docker", "logs", cid], check=False)
            ids = re.findall(r'"worker\.id":"(wrk_[A-Za-z0-9]+)"', out.stdout + out.stderr)
            if ids:
                return ids[-1]
            time.sleep(0.5)
        raise AssertionError(f"no worker id in the logs of {cid}")

    def request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 30)
        return requests.request(method, self.base + path, headers={"apikey": self.key or ""}, **kw)

    def network(self) -> str:
        return f"{PROJECT}_default"


def host_gateway(image: str) -> str:
    """The address `host-gateway` (host.docker.internal) stands for, as a container sees it."""
    r = _run(["docker", "run", "--rm", "--add-host", "probe:host-gateway", "--entrypoint", "getent", image, "hosts", "probe"])
    addr = r.stdout.split()[0] if r.stdout.split() else ""
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", addr), f"host-gateway resolved to {r.stdout!r}"
    return addr


@pytest.fixture(scope="session")
def gateway(images) -> str:
    return host_gateway(images["SMOOTHD_IMAGE"])


@pytest.fixture(scope="session")
def llm(gateway):
    m = ScriptedLLM(host=gateway, url_host="host.docker.internal")
    yield m
    m.close()


@pytest.fixture(scope="session")
def site(gateway):
    s = Site(host=gateway, url_host="host.docker.internal")
    yield s
    s.close()


@pytest.fixture(scope="session")
def stack(tmp_path_factory, images, gateway, llm):
    st = Stack(tmp_path_factory.mktemp("compose"), images, gateway, llm)
    st.compose("down", "-v", "--remove-orphans", check=False)
    try:
        yield st
    finally:
        st.compose("down", "-v", "--remove-orphans", check=False)
