"""Stand-in for LocalStack's runtime-init inside a python3.12 Lambda container (tests only).

Started by lambda_host_executor.py with a host Python 3.12 that has boto3, cwd = the
function's unpacked code, the environment LocalStack computed for the function. Like the
real one it imports the handler (`_HANDLER`) once, reports ready (or the import error) to
LocalStack, then runs one invocation at a time: POST /invoke is answered at once, then
the logs and the result (or the error) are posted back to LocalStack.

Test instrumentation, off unless LocalStack's environment sets it (the executor passes
these two through; the real runtime has neither):
- LAMBDA_HOST_EXECUTOR_JOURNAL: a file that gets one JSON line per invocation (function,
  shard, sequence numbers, result or error), so tests can see what the mapping sent.
- LAMBDA_HOST_EXECUTOR_FAULTS_DIR: one-shot faults in `<dir>/<function name>/`: a file
  `raise-*.json` makes the next invocation raise before the handler runs; a file
  `put-object-*.json` holding {"key_prefix": "..."} makes the next S3 PutObject of a key
  with that prefix fail with InternalError. Each file is used once (claimed by rename).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import queue
import sys
import threading
import time
import traceback
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

ENDPOINT = os.environ["LOCALSTACK_RUNTIME_ENDPOINT"]
RUNTIME_ID = os.environ["LOCALSTACK_RUNTIME_ID"]
FUNCTION_NAME = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
FAULTS_DIR = os.environ.get("LAMBDA_HOST_EXECUTOR_FAULTS_DIR")
JOURNAL = os.environ.get("LAMBDA_HOST_EXECUTOR_JOURNAL")


def post(path: str, body: Any) -> None:
    """POST JSON (or raw bytes) to LocalStack's runtime endpoint."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(
        ENDPOINT + path, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def claim_fault(kind: str) -> dict[str, Any] | None:
    """Take one fault file of this kind for this function, or None. Rename makes it once-only."""
    if not FAULTS_DIR:
        return None
    folder = Path(FAULTS_DIR) / FUNCTION_NAME
    for path in sorted(folder.glob(f"{kind}-*.json")) if folder.is_dir() else []:
        claimed = path.with_name(f"{path.name}.claimed-{os.getpid()}")
        try:
            path.rename(claimed)
        except FileNotFoundError:
            continue  # another environment of this function took it
        return json.loads(claimed.read_text() or "{}")
    return None


def install_put_object_faults() -> None:
    """Register, before the handler builds its client, a hook that fails chosen PutObjects."""
    if not FAULTS_DIR:
        return
    import boto3
    from botocore.exceptions import ClientError

    def maybe_fail(params: dict[str, Any], **_: Any) -> None:
        folder = Path(FAULTS_DIR) / FUNCTION_NAME
        for path in sorted(folder.glob("put-object-*.json")) if folder.is_dir() else []:
            wanted = json.loads(path.read_text() or "{}").get("key_prefix", "")
            if str(params.get("Key", "")).startswith(wanted):
                try:
                    path.rename(path.with_name(f"{path.name}.claimed-{os.getpid()}"))
                except FileNotFoundError:
                    continue
                error = {"Error": {"Code": "InternalError", "Message": "injected by the test"}}
                raise ClientError(error, "PutObject")

    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("before-parameter-build.s3.PutObject", maybe_fail)


class Context:
    """The handler's context object, as the python3.12 runtime builds it."""

    def __init__(self, request_id: str, function_arn: str) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self.function_name = FUNCTION_NAME
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self._deadline = time.monotonic() + float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "3"))

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class Tee(io.TextIOBase):
    """Keeps what the function prints for LocalStack's logs, and still shows it."""

    def __init__(self, echo: Any) -> None:
        self.echo = echo
        self.buffer_text = io.StringIO()

    def write(self, text: str) -> int:
        self.buffer_text.write(text)
        self.echo.write(text)
        return len(text)

    def flush(self) -> None:
        self.echo.flush()


def error_body(exc: BaseException, request_id: str) -> dict[str, Any]:
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def journal(entry: dict[str, Any]) -> None:
    if JOURNAL:
        with open(JOURNAL, "a", encoding="utf-8") as handle:  # noqa: PTH123 - one appended line
            handle.write(json.dumps(entry) + "\n")


def run_one(handler: Any, invoke: dict[str, Any]) -> None:
    request_id = invoke["invoke-id"]
    event = json.loads(invoke.get("payload") or "null")
    records = event.get("Records", []) if isinstance(event, dict) else []
    entry: dict[str, Any] = {
        "function": FUNCTION_NAME,
        "requestId": request_id,
        "shards": sorted({r.get("eventID", ":").split(":")[0] for r in records}),
        "sequenceNumbers": [r.get("kinesis", {}).get("sequenceNumber") for r in records],
    }
    tee = Tee(sys.stdout)
    result: Any = None
    failure: BaseException | None = None
    with contextlib.redirect_stdout(tee):
        print(f"START RequestId: {request_id} Version: {os.environ.get('AWS_LAMBDA_FUNCTION_VERSION', '$LATEST')}")
        try:
            if claim_fault("raise") is not None:
                raise RuntimeError("injected function error")
            result = handler(event, Context(request_id, invoke.get("invoked-function-arn", "")))
            json.dumps(result)
        except Exception as exc:  # the function failed: LocalStack gets the error
            failure = exc
            traceback.print_exc(file=tee)
        print(f"END RequestId: {request_id}")
    entry.update({"result": result, "error": None if failure is None else type(failure).__name__})
    journal(entry)
    post(f"/invocations/{request_id}/logs", {"logs": tee.buffer_text.getvalue()})
    if failure is None:
        post(f"/invocations/{request_id}/response", json.dumps(result).encode("utf-8"))
    else:
        post(f"/invocations/{request_id}/error", error_body(failure, request_id))


def main() -> int:
    invocations: queue.Queue[dict[str, Any]] = queue.Queue()

    class Invoke(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/invoke":
                self.send_response(404)
                self.end_headers()
                return
            invocations.put(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    sys.path.insert(0, str(Path.cwd()))
    try:
        install_put_object_faults()
        module_name, _, function_name = os.environ["_HANDLER"].rpartition(".")
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception as exc:  # Runtime.ImportModuleError on AWS
        traceback.print_exc()
        post(f"/status/{RUNTIME_ID}/error", error_body(exc, ""))
        return 1
    server = HTTPServer(("127.0.0.1", 0), Invoke)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    post(f"/status/{RUNTIME_ID}/ready", {"port": server.server_address[1]})
    while True:
        run_one(handler, invocations.get())


if __name__ == "__main__":
    sys.exit(main())
