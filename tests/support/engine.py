"""A private Docker engine for the tests, and the stand-in images the stack's compose file
names (tests/engine/images: each Dockerfile says what it reproduces and what not).

The engine is Debian's `dockerd` with its own data root, exec root, socket and pid file
under the repository's ignored `.cache/engine/`, so it never meets a user's engine, stack,
images or volumes. Images and the debootstrap base stay in that data root between runs (a
second run only checks the build caches); the engine itself is stopped by its pid when the
test session ends. Where no private engine can run (not Linux, not root, dockerd,
debootstrap or Compose v2 missing) `engine_problem()` says why, and the tests skip, or
fail under CI. `CLP_TEST_ENGINE=user` runs the stack tests on the user's own engine
instead (real images, pulled), under their own project names and ports.

Install what a new machine lacks with `tests/engine/install.sh` (root; `.ci/run` runs it).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support.compose import ROOT, compose
from support.net import wait_until

CACHE = ROOT / ".cache" / "engine"
IMAGES = ROOT / "tests" / "engine" / "images"
OVERRIDE = ROOT / "tests" / "engine" / "compose.override.yml"
USER_OVERRIDE = ROOT / "tests" / "engine" / "compose.user-engine.yml"
SUPPORT = ROOT / "tests" / "support"
BASE_IMAGE = "clp-standin/debian:trixie"
SUITE = "trixie"
MIRROR = os.environ.get("CLP_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Containers get addresses from this pool, not the default 172.17.0.0/16 a user's engine uses.
ADDRESS_POOL = "base=10.213.0.0/16,size=24"
PLUGIN_FOLDERS = ("/usr/local/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins", "/usr/lib/docker/cli-plugins")


def mode() -> str:
    """`private` (default: an engine of our own), or `user` (the user's engine, when asked)."""
    return os.environ.get("CLP_TEST_ENGINE", "private")


def compose_override() -> str:
    """The compose file the stack tests add to the user's, relative to the checkout."""
    return (OVERRIDE if mode() == "private" else USER_OVERRIDE).relative_to(ROOT).as_posix()


def compose_plugin() -> Path | None:
    """Compose v2 as a CLI plugin (tests/engine/install.sh puts it in the first folder)."""
    for folder in PLUGIN_FOLDERS:
        if (Path(folder) / "docker-compose").exists():
            return Path(folder) / "docker-compose"
    return None


def engine_problem() -> str | None:
    """Why the engine tests cannot run here, or None."""
    if mode() == "user":
        if shutil.which("docker") is None:
            return "CLP_TEST_ENGINE=user but no docker client on PATH"
        if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
            return "CLP_TEST_ENGINE=user but no Docker engine answers (docker info failed)"
        return None
    if not sys.platform.startswith("linux"):
        return "a private Docker engine needs Linux (set CLP_TEST_ENGINE=user to use your own engine)"
    if os.geteuid() != 0:
        return "a private Docker engine needs root (set CLP_TEST_ENGINE=user to use your own engine)"
    missing = [tool for tool in ("docker", "dockerd", "debootstrap") if shutil.which(tool) is None]
    if compose_plugin() is None:
        missing.append("Compose v2 plugin")
    if missing:
        return f"missing for the private Docker engine: {', '.join(missing)} (run tests/engine/install.sh as root)"
    return None


def _stop_with_parent() -> None:
    """In the child before exec: the kernel SIGTERMs it when the test process dies
    (PR_SET_PDEATHSIG), and dockerd then stops its containers as at any stop."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


@dataclass
class Engine:
    """One dockerd of our own; `env` is what a client needs to talk to it."""

    home: Path = CACHE
    process: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.home / "sock"

    @property
    def pid_file(self) -> Path:
        return self.home / "dockerd.pid"

    @property
    def exec_root(self) -> Path:
        # containerd's sockets live here: a short path (108 bytes is the socket path limit)
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:10]
        return Path("/run") / f"clp-engine-{digest}"

    @property
    def env(self) -> dict[str, str]:
        # a client config of its own: never the user's contexts or credential helpers (the
        # CLI still finds Compose in the system plugin folders)
        config = self.home / "config"
        config.mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(config),
            # Compose reads the user's own settings from these: never in the test engine
            "COMPOSE_FILE": "",
            "COMPOSE_PROFILES": "",
        }

    def docker(self, *args: str, check: bool = True, **options) -> subprocess.CompletedProcess:
        options.setdefault("capture_output", True)
        options.setdefault("text", True)
        return subprocess.run(["docker", *args], env=self.env, check=check, **options)

    def answers(self) -> bool:
        return self.socket.exists() and self.docker("info", check=False).returncode == 0

    def start(self, timeout: float = 60) -> None:
        if self.answers():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / "dockerd.log").open("ab")
        self.process = subprocess.Popen(
            [
                "dockerd",
                "--data-root", str(self.home / "root"),
                "--exec-root", str(self.exec_root),
                "--host", f"unix://{self.socket}",
                "--pidfile", str(self.pid_file),
                "--default-address-pool", ADDRESS_POOL,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_stop_with_parent,  # a test run killed from outside stops its engine too
        )  # fmt: skip
        if not wait_until(self.answers, timeout, interval=0.2):
            raise RuntimeError(f"dockerd did not answer within {timeout:.0f} s: see {self.home / 'dockerd.log'}")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM by pid (dockerd stops its containers first), SIGKILL after `timeout`."""
        try:
            pid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            if not wait_until(lambda: not Path(f"/proc/{pid}").exists() or self._reaped(), timeout, interval=0.2):
                os.kill(pid, signal.SIGKILL)
        self._reaped()

    def _reaped(self) -> bool:
        """True once our own dockerd child has exited and been waited for."""
        return self.process is not None and self.process.poll() is not None

    # --- images ---------------------------------------------------------------------

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False).returncode == 0

    def base(self) -> None:
        """Debian trixie minbase from debootstrap, imported as BASE_IMAGE (kept as a tarball
        too, so a wiped data root does not debootstrap again)."""
        if self.has_image(BASE_IMAGE):
            return
        tarball = self.home / f"debian-{SUITE}-minbase.tar"
        if not tarball.exists():
            with tempfile.TemporaryDirectory(dir=self.home) as rootfs:
                subprocess.run(
                    ["debootstrap", "--variant=minbase", SUITE, rootfs, MIRROR],
                    check=True,
                    capture_output=True,
                )
                partial = tarball.with_suffix(".partial")
                subprocess.run(["tar", "-C", rootfs, "-cf", str(partial), "."], check=True)
                partial.replace(tarball)
        with tarball.open("rb") as data:
            subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=data, env=self.env, check=True,
                           capture_output=True)  # fmt: skip

    def build(self, folder: str, tag: str, extras: dict[str, Path]) -> None:
        """docker build of tests/engine/images/<folder> with `extras` copied into its context."""
        with tempfile.TemporaryDirectory() as context:
            shutil.copytree(IMAGES / folder, context, dirs_exist_ok=True)
            for name, source in extras.items():
                target = Path(context) / name
                if source.is_dir():
                    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, target)
            certificates = Path(context) / "certs"
            certificates.mkdir(exist_ok=True)
            for certificate in Path("/usr/local/share/ca-certificates").glob("*.crt"):
                shutil.copy2(certificate, certificates)
            result = subprocess.run(
                ["docker", "build", "--quiet", "--tag", tag, context],
                env={**self.env, "DOCKER_BUILDKIT": "0"},  # the legacy builder: no buildx needed
                capture_output=True,
                text=True,
            )
        if result.returncode != 0:
            raise RuntimeError(f"building the stand-in {tag} failed:\n{result.stdout}{result.stderr}")

    def stand_ins(self) -> dict[str, float]:
        """Build every stand-in under the name docker-compose.yml (or query/Dockerfile) uses;
        return the seconds each took."""
        services = compose()["services"]
        support = {f"support/{name}": SUPPORT / name for name in
                   ("__init__.py", "shipper.py", "events.py", "fluentd_conf.py")}  # fmt: skip
        builds = {
            "nginx": (services["web"]["image"], {}),
            "fluentd": (services["fluentd"]["image"], support),
            "localstack": (
                services["localstack"]["image"],
                {
                    "localstack-requirements.txt": SUPPORT / "localstack-requirements.txt",
                    "lambda-python-requirements.txt": SUPPORT / "lambda-python-requirements.txt",
                    "lambda_host_executor": SUPPORT / "lambda_host_executor",
                },
            ),
            **{folder: (image, {}) for folder, image in query_base_images().items()},
        }
        seconds = {}
        started = time.monotonic()
        self.base()
        seconds["base"] = time.monotonic() - started
        for folder, (tag, extras) in builds.items():
            started = time.monotonic()
            self.build(folder, tag, extras)
            seconds[folder] = time.monotonic() - started
        # a changed stand-in leaves its old image untagged: keep the data root from growing
        self.docker("image", "prune", "--force", check=False)
        return seconds


def query_base_images() -> dict[str, str]:
    """query/Dockerfile's base images (its FROM lines, less its own stages), by the
    stand-in folder that builds each: `python:…` by images/python, `node:…` by images/node."""
    found = re.findall(r"^FROM\s+(\S+)", (ROOT / "query" / "Dockerfile").read_text(), re.MULTILINE)
    return {image.split(":")[0]: image for image in found}


def query_base_image() -> str:
    """The Python image query/Dockerfile's final stage builds on."""
    return query_base_images()["python"]


@contextlib.contextmanager
def private_engine() -> Iterator[Engine]:
    """The private engine with every stand-in built; one test session at a time per checkout
    (a lock), stopped at the end."""
    engine = Engine()
    engine.home.mkdir(parents=True, exist_ok=True)
    with (engine.home / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        engine.start()
        try:
            engine.stand_ins()
            yield engine
        finally:
            engine.stop()
