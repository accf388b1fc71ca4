"""Artifacts in an S3-compatible bucket (a real S3 server on loopback: moto), through the real
SDK. On PostgreSQL an API-only process (`serve --no-workers`) and a worker-only process
(`worker`) run with different data folders, so nothing can pass through a shared disk: the
file and extension uploaded through the API are loaded by the worker, the profile the worker
saves is loaded by the next session, the recording and downloads archive the worker stores
are served (with ranges) by the API process. On SQLite one all-in-one process does the same.
Every object is in the bucket under the prefix, none in either data folder; erasing a task's
data, the retention pass, and deleting the file, extension and profile each take their
objects out of the bucket, which ends empty.
"""

import io
import os
import secrets
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from smoothd_support import (
    SITE_PAGES,
    PostgresDb,
    _free_port,
    _smoothd_bin,
    _tail,
    close_client,
    extension_zip,
    make_client,
    named,
    wait_final,
    wait_status,
)

pytestmark = [pytest.mark.timeout(420)]

BUCKET = "smoothd-conformance"
PREFIX = "deploy/one"
# The smallest retention smoothd accepts; its retention pass then runs every 15 s.
RETENTION_SECONDS = 60
READY_TIMEOUT = 60
ACCESS_KEY, SECRET_KEY = "conformance-key", "conformance-secret"


class S3Server:
    """moto's S3 server on 127.0.0.1, with one bucket."""

    def __init__(self, tmp: Path) -> None:
        import boto3

        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "moto.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=open(self.log, "wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"moto exited:\n{_tail(self.log)}"
            try:
                requests.get(self.endpoint, timeout=2)
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, f"moto did not answer:\n{_tail(self.log)}"
                time.sleep(0.2)
        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        self.s3.create_bucket(Bucket=BUCKET)

    def objects(self) -> dict[str, int]:
        """Every object in the bucket: key -> size."""
        out: dict[str, int] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for o in page.get("Contents", []):
                out[o["Key"]] = o["Size"]
        return out

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def s3(tmp_path):
    srv = S3Server(tmp_path)
    yield srv
    srv.close()


class Proc:
    """One smoothd process with its own data folder."""

    def __init__(self, tmp: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp / f"data-{name}"
        self.stderr_path = tmp / f"{name}.stderr"
        env = {
            **env,
            "SMOOTHD_LISTEN": f"127.0.0.1:{self.port}",
            "SMOOTHD_PUBLIC_URL": self.base,
            "SMOOTHD_DATA_DIR": str(self.data_dir),
        }
        self.proc = subprocess.Popen(
            [_smoothd_bin(), *args],
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.stderr_path, "wb"),
        )

    def wait_ready(self, url: str | None) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited:\n{_tail(self.stderr_path)}"
            if url is None:
                if "workers started" in self.stderr_path.read_text(errors="replace"):
                    return
            else:
                try:
                    if requests.get(url, timeout=2).status_code == 200:
                        return
                except requests.RequestException:
                    pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready:\n{_tail(self.stderr_path)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def base_env(db_url: str, key: str, s3: S3Server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMOOTHD_", "AWS_")) and k != "RUST_LOG"}
    env.update(
        SMOOTHD_DATABASE_URL=db_url,
        SMOOTHD_API_KEY=key,
        SMOOTHD_WORKERS="2",
        SMOOTHD_LOG="info",
        SMOOTHD_CLOSE_GRACE_SECONDS="2",
        SMOOTHD_ARTIFACT_RETENTION_SECONDS=str(RETENTION_SECONDS),
        SMOOTHD_S3_BUCKET=BUCKET,
        SMOOTHD_S3_ENDPOINT=s3.endpoint,
        SMOOTHD_S3_REGION="us-east-1",
        SMOOTHD_S3_ACCESS_KEY_ID=ACCESS_KEY,
        SMOOTHD_S3_SECRET_ACCESS_KEY=SECRET_KEY,
        SMOOTHD_S3_PREFIX=PREFIX,
        SMOOTHD_CHROMIUM_ARGS='["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"]',
    )
    if os.environ.get("SMOOTHD_CHROMIUM"):
        env["SMOOTHD_CHROMIUM"] = os.environ["SMOOTHD_CHROMIUM"]
    return env


class Api:
    """What smoothd_support.wait_status needs: `request`."""

    def __init__(self, base: str, key: str) -> None:
        self.base, self.key = base, key

    def request(self, method: str, path: str, key: str | None = "default", **kw) -> requests.Response:
        kw.setdefault("timeout", 30)
        return requests.request(method, self.base + path, headers={"apikey": self.key}, **kw)


STORE = "document.cookie = 's3probe=kept; max-age=3600; path=/'; localStorage.setItem('s3probe', 'kept'); return true"
READ = "({cookie: document.cookie, ls: localStorage.getItem('s3probe')})"


def files_under(d: Path) -> list[str]:
    return [str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()] if d.exists() else []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_artifacts_in_s3_across_processes(backend, s3, tmp_path, site, browser):
    key = "smd_s3_" + secrets.token_hex(16)
    pg = PostgresDb() if backend == "postgres" else None
    db_url = pg.url if pg else f"sqlite://{tmp_path / 'smoothd.db'}"
    env = base_env(db_url, key, s3)
    procs: list[Proc] = []
    client = None
    try:
        if pg:
            api = Proc(tmp_path, "api", ["serve", "--no-workers"], env)
            procs.append(api)
            api.wait_ready(api.base + "/readyz")
            worker = Proc(tmp_path, "worker", ["worker"], env)
            procs.append(worker)
            worker.wait_ready(None)
        else:
            api = Proc(tmp_path, "all", ["serve"], env)
            procs.append(api)
            api.wait_ready(api.base + "/readyz")
        raw = Api(api.base, key)
        client = make_client(api.base + "/", key)

        # An upload through the API; the worker places it for the session (it fails to start
        # if it cannot read the bytes).
        payload = b"uploaded through the API process " + secrets.token_bytes(16)
        fid = client.upload_file(named(payload, "note.txt")).id
        ext = client.upload_extension(named(extension_zip(), "ext.zip")).id
        pid = "s3-" + secrets.token_hex(4)
        client.create_profile(pid)

        # The worker reads the file, the extension and the profile from the bucket.
        s = client.session(files=[fid], extensions=[ext], profile_id=pid)
        wait_status(raw, s.id(), "running", timeout=60)
        s.goto(site.url("/media.html"))
        assert s.evaluate_js(STORE).output is True
        s.evaluate_js("document.getElementById('dl').click()")
        time.sleep(2)
        assert s.close(force=False) is True
        final = wait_final(raw, s.id(), timeout=60)
        assert final["status"] == "done", final

        # The recording, through the API process's signed link, with ranges.
        rec = s.recording_url(timeout=60)
        assert rec.startswith(api.base + "/artifacts/"), rec
        r = requests.get(rec, timeout=60)
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4", (r.status_code, r.headers)
        video = r.content
        assert len(video) > 1000 and video[4:8] == b"ftyp", video[:16]
        part = requests.get(rec, headers={"Range": "bytes=100-199"}, timeout=30)
        assert part.status_code == 206, part.status_code
        assert part.content == video[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(video)}", part.headers
        tail = requests.get(rec, headers={"Range": "bytes=-10"}, timeout=30)
        assert tail.status_code == 206 and tail.content == video[-10:]

        # The downloads archive, through the API process.
        dl = s.downloads_url(timeout=60)
        archive = requests.get(dl, timeout=60)
        assert archive.status_code == 200, archive.status_code
        z = zipfile.ZipFile(io.BytesIO(archive.content))
        assert z.namelist() == ["quarterly report.csv"], z.namelist()
        assert z.read("quarterly report.csv") == SITE_PAGES["/report.csv"].encode()

        # The profile the worker saved is in the bucket and the next session starts from it.
        saved = {p.id: p for p in client.list_profiles()}[pid]
        assert saved.profile_size_bytes and saved.profile_size_bytes > 0, saved
        again = client.session(profile_id=pid, profile_read_only=True)
        again.goto(site.url("/index.html"))
        assert again.evaluate_js(READ).output == {"cookie": "s3probe=kept", "ls": "kept"}
        assert again.close(force=False) is True
        assert wait_final(raw, again.id(), timeout=60)["status"] == "done"

        # Every byte is in the bucket under the prefix, none in a data folder.
        objects = s3.objects()
        assert all(k.startswith(PREFIX + "/") for k in objects), sorted(objects)
        rel = {k[len(PREFIX) + 1 :]: size for k, size in objects.items()}
        task_objects = {k: v for k, v in rel.items() if k.startswith(f"tasks/{s.id()}/")}
        names = sorted(k.rsplit("/", 1)[1] for k in task_objects)
        assert names == ["downloads.zip", "recording.mp4"], sorted(rel)
        sizes = {k.rsplit("/", 1)[1]: v for k, v in task_objects.items()}
        assert sizes["recording.mp4"] == len(video) and sizes["downloads.zip"] == len(archive.content)
        assert [v for k, v in rel.items() if k.startswith("files/")] == [len(payload)], sorted(rel)
        assert [v for k, v in rel.items() if k.startswith("extensions/")] == [len(extension_zip())], sorted(rel)
        profile_objects = [k for k in rel if k.startswith("profiles/") and k.endswith(f"/{pid}.tar")]
        assert len(profile_objects) == 1 and rel[profile_objects[0]] == saved.profile_size_bytes, sorted(rel)
        for p in procs:
            assert files_under(p.data_dir / "artifacts") == [], f"{p.name} wrote artifacts to its data folder"

        # Erasing a task's data takes its recording out of the bucket at once.
        assert any(k.startswith(f"tasks/{again.id()}/") for k in rel), sorted(rel)
        r = raw.request("DELETE", f"/v1/task/{again.id()}/data")
        assert r.status_code == 200, r.text
        assert not any(k.startswith(f"{PREFIX}/tasks/{again.id()}/") for k in s3.objects()), sorted(s3.objects())

        # Retention: the recording and the archive leave the bucket; the task reads "".
        deadline = time.monotonic() + RETENTION_SECONDS + 60
        while any(k.startswith(f"tasks/{s.id()}/") for k in (x[len(PREFIX) + 1 :] for x in s3.objects())):
            assert time.monotonic() < deadline, f"expired artifacts still in the bucket: {sorted(s3.objects())}"
            time.sleep(2)
        assert requests.get(rec, timeout=30).status_code == 404
        after = raw.request("GET", f"/v1/task/{s.id()}", params={"downloads": "true"}).json()["r"]
        assert (after["recording_url"], after["downloads_url"]) == ("", ""), after
        # Uploads, extensions and profiles are not task artifacts: they stay until deleted.
        rest = {k[len(PREFIX) + 1 :].split("/", 1)[0] for k in s3.objects()}
        assert rest == {"files", "extensions", "profiles"}, rest
        client.delete_file(fid)
        client.delete_extension(ext)
        client.delete_profile(pid)
        assert s3.objects() == {}, sorted(s3.objects())
        for p in procs:
            assert p.proc.poll() is None, f"{p.name} died:\n{_tail(p.stderr_path)}"
    finally:
        if client is not None:
            close_client(client)
        for p in procs:
            p.stop()
        if pg:
            pg.close()


def test_unreachable_bucket_stops_the_start_naming_the_setting(tmp_path):
    """A bucket that does not answer is a configuration error at start, not a failure later."""
    dead = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMOOTHD_", "AWS_")) and k != "RUST_LOG"}
    env.update(
        SMOOTHD_DATA_DIR=str(tmp_path / "data"),
        SMOOTHD_LISTEN=f"127.0.0.1:{_free_port()}",
        SMOOTHD_S3_BUCKET=BUCKET,
        SMOOTHD_S3_ENDPOINT=f"http://127.0.0.1:{dead}",
        SMOOTHD_S3_ACCESS_KEY_ID=ACCESS_KEY,
        SMOOTHD_S3_SECRET_ACCESS_KEY=SECRET_KEY,
        SMOOTHD_WORKERS="0",
    )
    r = subprocess.run([_smoothd_bin(), "serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "s3_bucket (SMOOTHD_S3_BUCKET)" in r.stderr, r.stderr[-2000:]
