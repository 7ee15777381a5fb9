"""A LocalStack Lambda runtime executor that runs functions as host processes (tests only).

Stands in for: LocalStack's `docker` executor, which starts each execution environment
as a container from `public.ecr.aws/lambda/python:3.12` with LocalStack's runtime-init
(Go) inside. No Docker engine exists where the tests run, so this executor starts
`runtime_init.py` (beside this file) with a host Python 3.12 that has boto3, as the
python3.12 runtime image has. It speaks the same runtime protocol to LocalStack
(`/_localstack_lambda/...`, reusing LocalStack's own `ExecutorEndpoint`), so everything
from the Lambda API to the event source mapping, retries and logs is LocalStack's own.

Does not reproduce: isolation (the function runs as the test's user, sees the host's
files and network), memory limits and the timeout (nothing is enforced), other runtimes
(only python3.12 functions: any other ends `Failed` with the reason), layers, container
images, SnapStart, the Lambda extensions API, the `/var/task` and `/tmp` paths (the
code runs from LocalStack's unpacked copy; LAMBDA_TASK_ROOT points at it).

Loaded by LocalStack (Python 3.13) through plux: the `*.dist-info/entry_points.txt`
beside this file registers it in `localstack.lambda.runtime_executor` once this folder is
on PYTHONPATH; select it with LAMBDA_RUNTIME_EXECUTOR=host. It needs
LAMBDA_HOST_EXECUTOR_PYTHON (the Python 3.12 that runs functions).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
from http import HTTPStatus
from pathlib import Path

from localstack import config
from localstack.http import Response
from localstack.services.lambda_.invocation.executor_endpoint import ExecutorEndpoint, StatusErrorException
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin
from localstack.services.lambda_.invocation.runtime_executor import LambdaRuntimeException, RuntimeExecutor

LOG = logging.getLogger(__name__)
RUNTIME_INIT = Path(__file__).with_name("runtime_init.py")
SUPPORTED_RUNTIMES = ("python3.12",)
STOP_GRACE_SECONDS = 3.0


class HostExecutorEndpoint(ExecutorEndpoint):
    """LocalStack's endpoint, plus: the process reports its listening port in its ready call
    (a container always listens on 9563; host processes cannot share a port)."""

    def status_ready(self, request, executor_id: str) -> Response:
        try:
            self.container_port = int(json.loads(request.data or b"{}")["port"])
        except (ValueError, KeyError, TypeError):
            LOG.warning("host executor %s: ready call without a port", executor_id)
            return Response(status=HTTPStatus.BAD_REQUEST)
        return super().status_ready(request, executor_id)


class HostRuntimeExecutor(RuntimeExecutor):
    """One execution environment = one host process running runtime_init.py."""

    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self.executor_endpoint = HostExecutorEndpoint(self.id, container_address="127.0.0.1", container_port=None)
        self.process: subprocess.Popen | None = None
        self.log_path = Path(config.dirs.tmp) / "lambda-host-executor" / f"{self.id}.log"

    def start(self, env_vars: dict[str, str]) -> None:
        self.executor_endpoint.start()
        code = self.function_version.config.code
        task_root = str(code.get_unzipped_code_location())
        # The function's environment as LocalStack computed it, not LocalStack's own
        # (no PYTHONPATH, no LocalStack settings); PATH and HOME so a process can run.
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8",
            **{key: str(value) for key, value in env_vars.items()},
            "LAMBDA_TASK_ROOT": task_root,
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        for passed in ("LAMBDA_HOST_EXECUTOR_FAULTS_DIR", "LAMBDA_HOST_EXECUTOR_JOURNAL"):
            if os.environ.get(passed):
                environment[passed] = os.environ[passed]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # Same process group as LocalStack: whoever stops LocalStack's group stops these.
            self.process = subprocess.Popen(
                [python_for_functions(), "-u", str(RUNTIME_INIT)],
                cwd=task_root,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        threading.Thread(target=self._fail_startup_if_exits, daemon=True, name=f"host-executor-{self.id}").start()
        self.executor_endpoint.wait_for_startup()

    def _fail_startup_if_exits(self) -> None:
        """A process that dies before its ready call would leave LocalStack waiting for it."""
        code = self.process.wait()
        future = self.executor_endpoint.startup_future
        if future is not None and not future.done():
            future.set_exception(StatusErrorException(f"runtime process exited with {code} before ready", payload=b""))

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        try:
            self.executor_endpoint.shutdown()
        except Exception as exc:  # as the docker executor: a failed shutdown is only logged
            LOG.debug("host executor %s: endpoint shutdown failed: %s", self.id, exc)

    def get_address(self) -> str:
        return "127.0.0.1"

    def get_endpoint_from_executor(self) -> str:
        return "127.0.0.1"

    def get_runtime_endpoint(self) -> str:
        port = config.GATEWAY_LISTEN[0].port
        return f"http://127.0.0.1:{port}{self.executor_endpoint.get_endpoint_prefix()}"

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        if self.executor_endpoint.container_port is None:
            raise LambdaRuntimeException(f"host executor {self.id}: invoked before it was ready")
        return self.executor_endpoint.invoke(payload)

    def get_logs(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "no logs"

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        """Only unpack the code (the docker executor also fetches runtime-init and the image)."""
        runtime = function_version.config.runtime
        if runtime not in SUPPORTED_RUNTIMES:
            raise LambdaRuntimeException(
                f"host executor runs {', '.join(SUPPORTED_RUNTIMES)} only, not {runtime or 'container images'}"
            )
        python_for_functions()
        if function_version.config.code:
            function_version.config.code.prepare_for_execution()

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        """Nothing to undo: the unpacked code belongs to LocalStack, as with docker."""

    @classmethod
    def validate_environment(cls) -> bool:
        try:
            python_for_functions()
        except LambdaRuntimeException as exc:
            LOG.warning("%s", exc)
            return False
        return True


def python_for_functions() -> str:
    python = os.environ.get("LAMBDA_HOST_EXECUTOR_PYTHON", "")
    if not python or not os.access(python, os.X_OK):
        raise LambdaRuntimeException(
            "LAMBDA_HOST_EXECUTOR_PYTHON must name a Python 3.12 with boto3 (set by tests/support/localstack_host.py)"
        )
    return python


class HostRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    name = "host"

    def load(self, *args, **kwargs):
        return HostRuntimeExecutor
