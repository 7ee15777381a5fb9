"""A stack of the tests' own on a Docker engine: a copy of the checkout run by ./start.sh
exactly as a user runs it, under its own project name and free ports on 127.0.0.1.

It never touches a user's stack: no .env is copied, the project name is new, the ports are
never 80 or 4566, and close() removes only this project's containers and volumes. On the
private test engine (tests/support/engine.py) Compose also reads
tests/engine/compose.override.yml, which says line by line what that host lacks.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3

from support.compose import ROOT
from support.engine import compose_override
from support.net import free_port, wait_until
from support.query_data import QUERY
from support.s3 import json_lines

if str(QUERY) not in sys.path:
    sys.path.insert(0, str(QUERY))
import bucket_reader  # query/ is on the path only from here

BUCKET = "nginx-accesslog"


def isolated_checkout(destination: Path) -> Path:
    """The tracked files of this checkout, as in a fresh clone: no .env, no local state."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def isolated_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Settings of a stack of the test's own: project name, ports (never 80 or 4566)."""
    return {
        **(base if base is not None else os.environ),
        "COMPOSE_PROJECT_NAME": f"clp-test-{uuid.uuid4().hex[:8]}",
        "WEB_PORT": str(free_port()),
        "LOCALSTACK_PORT": str(free_port()),
        "DASHBOARD_PORT": str(free_port()),
    }


@dataclass
class Stack:
    """One copy of the checkout and its compose project on `engine_env`'s engine."""

    folder: Path
    engine_env: dict[str, str]
    # the engine's compose file, added to docker-compose.yml (support/engine.py)
    override: str | None = field(default_factory=compose_override)
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        isolated_checkout(self.folder)
        self.env = isolated_env(self.engine_env)
        if self.override:
            self.env["COMPOSE_FILE"] = f"docker-compose.yml:{self.override}"
        self.env.update(self.settings)

    @property
    def project(self) -> str:
        return self.env["COMPOSE_PROJECT_NAME"]

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.env['WEB_PORT']}"

    def run(self, *args: str, timeout: float = 900, **options) -> subprocess.CompletedProcess:
        """./start.sh ARGS in the copy, as a user types it."""
        options.setdefault("capture_output", True)
        options.setdefault("text", True)
        options.setdefault("env", self.env)
        return subprocess.run([str(self.folder / "start.sh"), *args], cwd=self.folder, timeout=timeout, **options)

    def compose(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", "compose", *args],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, check=check)

    def container(self, service: str) -> str:
        return self.compose("ps", "--all", "--quiet", service).stdout.strip()

    def s3(self):
        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.env['LOCALSTACK_PORT']}",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def request(self, path: str, agent: str = "engine-test") -> int:
        request = urllib.request.Request(self.web + path, headers={"User-Agent": agent})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status
        except urllib.error.HTTPError as error:
            return error.code

    def objects(self) -> dict[str, bytes]:
        """Every object's bytes, key -> body; one the compactor deleted meanwhile is left out."""
        bucket = bucket_reader.Bucket(self.s3(), BUCKET)
        found = {}
        for key in bucket.list(""):
            with contextlib.suppress(bucket_reader.Missing):
                found[key] = bucket.get(key)
        return found

    def lines(self, errors: bool = False) -> list[dict]:
        """Every record (or with `errors`, every error line) as the query tool reads the
        bucket while the compactor runs: through the hours' manifests (query/bucket_reader.py),
        each object once, gzip or not."""
        bucket = bucket_reader.Bucket(self.s3(), BUCKET)
        hours = {key.rsplit("/", 1)[0] + "/" for key in bucket.list("errors/" if errors else "") if "/" in key}
        hours = {h for h in hours if errors or not h.startswith(("errors/", "_pipeline/"))}
        plain, packed = io.BytesIO(), io.BytesIO()
        bucket_reader.fetch_prefixes(bucket, sorted(hours), bucket_reader.Sink(plain, packed))
        data = plain.getvalue() + (bucket_reader.plain(packed.getvalue()) if packed.getvalue() else b"")
        # a gzip object is followed by a gzip newline (bucket_reader.Sink): blank lines between
        kept = b"".join(line + b"\n" for line in data.splitlines() if line.strip())
        return json_lines(kept) if kept else []

    def records(self) -> list[dict]:
        """Every request record in the bucket (not errors/ or _pipeline/), each once."""
        return self.lines()

    def wait_for_paths(self, paths: set[str], timeout: float) -> dict[str, int]:
        """Poll the bucket until every path has a record (no waiter matches an object's
        contents); return how many records each path has."""
        counts: dict[str, int] = {}

        def all_there() -> bool:
            counts.clear()
            for record in self.records():
                if record["request_uri"] in paths:
                    counts[record["request_uri"]] = counts.get(record["request_uri"], 0) + 1
            return set(counts) == paths

        wait_until(all_there, timeout, interval=0.5)
        return dict(counts)

    def close(self) -> None:
        """Remove this project's containers, networks and volumes, whatever state it is in."""
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.compose("--profile", "tools", "down", "--volumes", "--remove-orphans", "--timeout", "5",
                         check=False, timeout=180)  # fmt: skip


def plain_bytes(path: Path) -> bytes:
    """A saved or exported file's JSON Lines: gunzipped when the compactor wrote it gzip."""
    return bucket_reader.plain(path.read_bytes())


@contextlib.contextmanager
def started_stack(
    folder: Path, engine_env: dict[str, str], prepare: Callable[[Stack], None] | None = None
) -> Iterator[tuple[Stack, subprocess.CompletedProcess, float]]:
    """A stack `prepare`d (files added to its copy), started by ./start.sh, which must
    succeed: the stack, what start.sh printed, and its seconds; removed at the end."""
    stack = Stack(folder, engine_env)
    try:
        if prepare is not None:
            prepare(stack)
        began = time.monotonic()
        result = stack.run(timeout=1200)
        assert result.returncode == 0, result.stdout + result.stderr
        yield stack, result, time.monotonic() - began
    finally:
        stack.close()


class Traffic:
    """Requests with unique paths to a stack's published port, one every `interval` s, in a
    thread; `sent` maps each path to the time it was answered."""

    def __init__(self, stack: Stack, interval: float = 0.05, prefix: str = "traffic") -> None:
        import threading

        self.stack, self.interval, self.prefix = stack, interval, prefix
        self.sent: dict[str, float] = {}
        self.failed: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        number = 0
        while not self._stop.wait(self.interval):
            number += 1
            path = f"/{self.prefix}-{uuid.uuid4().hex[:12]}-{number}"
            try:
                self.stack.request(path)
            except OSError:  # nginx not answering: that request never made a line
                self.failed[path] = time.time()
                continue
            self.sent[path] = time.time()

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
