"""The real LocalStack 4.14.0 as a host process on loopback, for tests and the benchmark.

LocalStack 4.14.0 needs Python 3.13; the functions it runs need Python 3.12 with boto3
(the python3.12 runtime). Both are found as on a user's machine (PATH, then pyenv), and
two virtual environments are built once, from pinned lists, under the repository's
ignored `.cache/` folder (a lock serialises builders, a marker written last makes a
half-built one be rebuilt). Where an interpreter is missing the caller skips with one
line; under CI it fails (tests/support/tools.py).

What differs from the image, in this one place: `OVERRIDE_IN_DOCKER=0` with a private
FILESYSTEM_ROOT, a free port instead of 4566, Lambda's executor `host`
(tests/support/lambda_host_executor) instead of `docker`, and the hook's PIPELINE_*
variables. LocalStack and every process it starts (kinesis-mock, hooks, functions) share
one process group, which stop() ends: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from support.compose import compose
from support.net import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"
LOCALSTACK_REQUIREMENTS = SUPPORT / "localstack-requirements.txt"
FUNCTION_REQUIREMENTS = SUPPORT / "lambda-python-requirements.txt"
EXECUTOR_PATH = SUPPORT / "lambda_host_executor"
HOOK = ROOT / "init" / "ready.d" / "10-provision.sh"
SHUTDOWN_HOOK = ROOT / "init" / "shutdown.d" / "10-save.sh"
SERVICES = compose()["services"]["localstack"]["environment"]["SERVICES"]
REGION = "us-east-1"
INHERIT_NOT = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "PYTHON",
    "VIRTUAL_ENV",
    "LOCALSTACK_",
    "PIPELINE_",
    "LAMBDA_",
    "KINESIS_",
    "GATEWAY_",
    "PYTEST_",
)


# Starts LocalStack as `python -m localstack.runtime.main` does; on Linux it first asks the
# kernel to SIGTERM it when its parent dies, so a test run killed from outside (no fixture
# teardown) does not leave it behind.
LAUNCH = """
import ctypes, runpy, signal, sys
if sys.platform == "linux":
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
sys.argv = ["localstack.runtime.main"]
runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
"""


def stack_tuning() -> dict[str, str]:
    """docker-compose.yml's LocalStack settings that change its speed (the mapping's poll
    interval, kinesis-mock's persistence)."""
    environment = compose()["services"]["localstack"]["environment"]
    prefixes = ("LAMBDA_EVENT_SOURCE_", "KINESIS_PERSISTENCE")
    return {name: str(value) for name, value in environment.items() if name.startswith(prefixes)}


class Missing(Exception):
    """Something this machine lacks to run LocalStack; the message is one line."""


def find_python(version: str) -> str:
    """A Python `version` (e.g. "3.13") as a user's machine has it: PATH, then pyenv."""
    home = Path.home()
    candidates = [shutil.which(f"python{version}"), f"/usr/local/bin/python{version}", f"/usr/bin/python{version}"]
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or home / ".pyenv")
    candidates += [str(p / "bin" / "python3") for p in sorted(pyenv_root.glob(f"versions/{version}.*"), reverse=True)]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and _reports(candidate, version):
            return candidate
    raise Missing(f"Python {version} not found (python{version} on PATH, {pyenv_root}/versions/{version}.*)")


def _reports(python: str, version: str) -> bool:
    """True when `python` runs and is `version` (a pyenv shim for another version is not)."""
    try:
        result = subprocess.run(
            [python, "-c", "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == version


def _venv(python: str, requirements: Path, name: str) -> Path:
    """A cached venv with exactly `requirements` installed; rebuilt when the list changes."""
    CACHE.mkdir(exist_ok=True)
    target = CACHE / name
    wanted = hashlib.sha256(requirements.read_bytes() + python.encode()).hexdigest()
    marker = target / ".installed"
    with (CACHE / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == wanted:
            return target / "bin" / "python"
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(target)], check=True, capture_output=True, timeout=300)
        pip = [str(target / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
        log = CACHE / f"{name}.install.log"
        with log.open("w") as out:
            result = subprocess.run(
                [*pip, "install", "--no-deps", "-r", str(requirements)],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=900,
            )
            if result.returncode == 0:
                result = subprocess.run([*pip, "check"], stdout=out, stderr=subprocess.STDOUT, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"installing {requirements.name} into {target} failed: see {log}")
        marker.write_text(wanted)  # last: a half-built venv has no marker and is rebuilt
        return target / "bin" / "python"


@dataclass(frozen=True)
class Interpreters:
    localstack: Path  # LocalStack's venv python (3.13)
    functions: Path  # the functions' python (3.12 with boto3)


def install() -> Interpreters:
    """Both venvs, built on first use (about 1.5 min), then taken from the cache."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise Missing("Node.js/npm not found (LocalStack installs kinesis-mock with npm)")
    python313, python312 = find_python("3.13"), find_python("3.12")  # both found before any install
    return Interpreters(
        _venv(python313, LOCALSTACK_REQUIREMENTS, "localstack-4.14.0"),
        _venv(python312, FUNCTION_REQUIREMENTS, "lambda-python3.12"),
    )


@dataclass
class LocalStack:
    """One LocalStack process group; use start()/stop(), or `running()`."""

    interpreters: Interpreters
    workdir: Path
    environment: dict[str, str] = field(default_factory=dict)
    executor: bool = True
    provision_hook: bool = True
    extra_hooks: dict[str, str] = field(default_factory=dict)  # file name -> script text
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    survivors: set[int] = field(default_factory=set)  # processes of the last stop still alive after it
    _family: set[int] = field(default_factory=set)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state_dir(self) -> Path:
        """PIPELINE_STATE_DIR: where the provisioning hook writes provision.state/.log."""
        return self.workdir / "pipeline-state"

    @property
    def journal(self) -> Path:
        return self.workdir / "invocations.jsonl"

    @property
    def faults_dir(self) -> Path:
        return self.workdir / "faults"

    @property
    def log_path(self) -> Path:
        return self.workdir / "localstack.log"

    @property
    def data_dir(self) -> Path:
        """PIPELINE_DATA_DIR: the saved copy of the bucket (the compose volume saved-logs);
        it outlives a stop, as the volume does, so a second start() restores from it."""
        return self.workdir / "saved-logs"

    def _prepare_filesystem(self) -> Path:
        """The image's layout; idempotent, so the same workdir can be started again."""
        root = self.workdir / "filesystem"
        init = root / "etc" / "localstack" / "init"
        ready_d, shutdown_d = init / "ready.d", init / "shutdown.d"
        ready_d.mkdir(parents=True, exist_ok=True)
        shutdown_d.mkdir(parents=True, exist_ok=True)
        if self.provision_hook:  # the project's hooks, as the compose file mounts them
            for folder, hook in ((ready_d, HOOK), (shutdown_d, SHUTDOWN_HOOK)):
                if not (folder / hook.name).is_symlink():
                    (folder / hook.name).symlink_to(hook)
        for name, text in self.extra_hooks.items():
            script = ready_d / name
            script.write_text(text)
            script.chmod(0o755)
        # kinesis-mock (npm) is installed under var/lib/localstack/lib: share it between runs
        libs = root / "var" / "lib" / "localstack"
        libs.mkdir(parents=True, exist_ok=True)
        shared = CACHE / "localstack-4.14.0-lib"
        shared.mkdir(parents=True, exist_ok=True)
        if not (libs / "lib").is_symlink():
            (libs / "lib").symlink_to(shared)
        return root

    def _env(self, root: Path) -> dict[str, str]:
        venv_bin = str(self.interpreters.localstack.parent)
        # The machine's environment (npm needs its CA and proxy settings to fetch kinesis-mock),
        # less anything that would configure LocalStack, the pipeline or AWS behind our back.
        base = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(INHERIT_NOT) and name not in ("DEBUG", "PERSISTENCE", "SERVICES", "PATH")
        }
        tmp = self.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        env = {
            **base,
            # the hook's python3 is LocalStack's, which has boto3, as in the image
            "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
            "TMPDIR": str(tmp),
            "GATEWAY_LISTEN": f"127.0.0.1:{self.port}",
            "SERVICES": SERVICES,
            "OVERRIDE_IN_DOCKER": "0",
            "FILESYSTEM_ROOT": str(root),
            "DNS_ADDRESS": "0",
            "DISABLE_EVENTS": "1",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "KINESIS_LATENCY": "0",
            # npm (kinesis-mock) keeps its cache and logs in the repository's .cache, not ~/.npm
            "npm_config_cache": str(CACHE / "npm"),
            # plux (LocalStack's plugin loader) caches entry points in $XDG_CACHE_HOME/plux
            "XDG_CACHE_HOME": str(CACHE / "xdg"),
            # everything here is on loopback: never through a proxy the machine may set
            "NO_PROXY": ",".join(filter(None, ["127.0.0.1,localhost", os.environ.get("NO_PROXY")])),
            "no_proxy": ",".join(filter(None, ["127.0.0.1,localhost", os.environ.get("no_proxy")])),
            # the stack's settings (docker-compose.yml passes these from .env)
            "KINESIS_STREAM": "nginx-accesslog-stream",
            "BUCKET_NAME": "nginx-accesslog",
            "COMPRESSION": "none",
            "AWS_DEFAULT_REGION": REGION,
            # the stack's LocalStack tuning, from the one place it is set: docker-compose.yml
            **stack_tuning(),
            # the hook's variables: where a host process differs from the image
            "PIPELINE_INIT_DIR": str(ROOT / "init"),
            "PIPELINE_ENDPOINT": self.endpoint,
            "PIPELINE_STATE_DIR": str(self.state_dir),
            "PIPELINE_DATA_DIR": str(self.data_dir),
        }
        if self.executor:
            env.update(
                {
                    "PYTHONPATH": str(EXECUTOR_PATH),
                    "LAMBDA_RUNTIME_EXECUTOR": "host",
                    "LAMBDA_HOST_EXECUTOR_PYTHON": str(self.interpreters.functions),
                    "LAMBDA_HOST_EXECUTOR_JOURNAL": str(self.journal),
                    "LAMBDA_HOST_EXECUTOR_FAULTS_DIR": str(self.faults_dir),
                }
            )
        env.update(self.environment)
        return env

    def start(self, wait_ready: bool = True, timeout: float = 120) -> LocalStack:
        """Start; wait until its services answer and, with `wait_ready`, its ready.d stage ended."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.faults_dir.mkdir(exist_ok=True)
        root = self._prepare_filesystem()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.interpreters.localstack), "-c", LAUNCH],
                cwd=self.workdir,
                env=self._env(root),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends everything in it
            )
        try:
            self.wait(self.services_available, timeout, "its services to be available")
            if wait_ready:
                self.wait(lambda: (self.init_report() or {}).get("completed"), timeout, "its ready.d stage")
        except BaseException:
            self.stop()
            raise
        return self

    def wait(self, condition, timeout: float, what: str) -> None:
        def check() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"LocalStack exited ({self.process.returncode}):\n{self.log_tail()}")
            return bool(condition())

        if not wait_until(check, timeout, interval=0.2):
            raise TimeoutError(f"LocalStack: no {what} within {timeout:g} s:\n{self.log_tail()}")

    def _get_json(self, path: str) -> dict | None:
        try:
            with urllib.request.urlopen(self.endpoint + path, timeout=5) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def services_available(self) -> bool:
        health = self._get_json("/_localstack/health") or {}
        services = health.get("services", {})
        return all(services.get(s) in ("available", "running") for s in SERVICES.split(","))

    def init_report(self) -> dict | None:
        """`/_localstack/init/ready`: the ready stage's scripts and their states."""
        return self._get_json("/_localstack/init/ready")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def invocations(self, function: str | None = None) -> list[dict]:
        """What the executor's runtime journaled, oldest first."""
        if not self.journal.exists():
            return []
        entries = [json.loads(line) for line in self.journal.read_text().splitlines() if line]
        return [e for e in entries if function is None or e["function"] == function]

    def inject_fault(self, function: str, kind: str, **content: str) -> Path:
        """A one-shot fault for `function` (runtime_init.py): kind "raise" or "put-object"."""
        folder = self.faults_dir / function
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{kind}-{time.monotonic_ns()}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(content))
        temporary.replace(path)
        return path

    def terminate(self, grace: float = 60) -> None:
        """Stop as `docker stop` does: SIGTERM to LocalStack alone (the container's main
        process), which runs its shutdown hooks and stops its services; after `grace` s
        (compose's stop_grace_period), or once it has exited, SIGKILL to whatever is left
        (Docker ends every process of the container with its main one)."""
        process = self.process
        if process is None:
            return
        self._family = family(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
        self.kill()

    def kill(self) -> None:
        """A crash: SIGKILL to LocalStack and everything it started, at once."""
        process = self.process
        if process is None:
            return
        members = self._family | family(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        _kill_all(members)
        process.wait(timeout=30)
        wait_until(lambda: not group_alive(process.pid) and not alive(members), 10, interval=0.1)
        self.survivors = alive(members)
        self.process, self._family = None, set()

    def stop(self, grace: float = 15) -> None:
        """SIGTERM to the whole process group, SIGKILL to whatever is left after `grace` s.

        kinesis-mock runs in a session of its own (LocalStack starts it so): it is found as
        LocalStack's child before the signals, and killed if it outlives LocalStack."""
        process = self.process
        if process is None:
            return
        members = family(process.pid)
        pgid = process.pid  # start_new_session: the group's id is LocalStack's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
        # what it started may outlive it for a moment; whatever is left then gets SIGKILL
        if not wait_until(lambda: not group_alive(pgid) and not alive(members), 3, interval=0.1):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            _kill_all(members)
            process.wait(timeout=30)
            wait_until(lambda: not group_alive(pgid) and not alive(members), 10, interval=0.1)
        self.survivors = alive(members)


def family(pid: int) -> set[int]:
    """`pid` and every process it started, as `ps` sees them now (Linux and macOS)."""
    listing = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True, check=False)
    children: dict[int, list[int]] = {}
    for line in listing.stdout.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(fields[0]))
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(children.get(current, ()))
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` that still run (a zombie does not)."""
    running = set()
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        stat = Path(f"/proc/{pid}/stat")
        with contextlib.suppress(OSError, IndexError):
            if stat.read_text().rsplit(") ", 1)[1].startswith("Z"):
                continue
        running.add(pid)
    return running


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    """True while any process of the group exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def running(interpreters: Interpreters, workdir: Path, wait_ready: bool = True, **options) -> Iterator[LocalStack]:
    """A started LocalStack that is stopped, with all it started, whatever happens."""
    localstack = LocalStack(interpreters, workdir, **options)
    try:
        yield localstack.start(wait_ready=wait_ready)
    finally:
        localstack.stop()


@dataclass(frozen=True)
class PipelineNames:
    """One pipeline's resource names, so tests can share one LocalStack."""

    stream: str
    bucket: str
    role: str
    function: str

    @classmethod
    def for_test(cls, test_name: str) -> PipelineNames:
        tag = hashlib.sha256(f"{test_name}{time.time_ns()}".encode()).hexdigest()[:10]
        return cls(f"s-{tag}", f"b-{tag}", f"r-{tag}", f"f-{tag}")

    def args(self) -> list[str]:
        """init_resource.py's flags for these names."""
        return ["--stream", self.stream, "--bucket", self.bucket, "--role", self.role, "--function", self.function]
