"""Where the pipeline is and what it is called: one place for the host tools of init/.

The stack's names and their defaults (each overridable by the environment variable that
.env and docker-compose.yml use), the target flags every tool shares, the boto3 client
builder, and the one-line wording of every failure. init_resource.py, pipeline_cli.py,
bucket_mirror.py and localstack_ready.py import it from beside them. Standard library
only, Python 3.9+ (LocalStack hosts and older laptops run these tools).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Callable

# name -> (environment variable, default). docker-compose.yml repeats these defaults in
# its ${VAR:-default} lines; tests/test_target_defaults.py keeps the two in agreement.
DEFAULTS = {
    "stream": ("KINESIS_STREAM", "nginx-accesslog-stream"),
    "shards": ("KINESIS_SHARDS", "1"),
    "bucket": ("BUCKET_NAME", "nginx-accesslog"),
    "region": ("AWS_REGION", "us-east-1"),
    "role": ("LAMBDA_ROLE_NAME", "kinesis-lambda-role"),
    "function": ("LAMBDA_FUNCTION_NAME", "KinesisAccessLogToS3"),
    "compression": ("COMPRESSION", "none"),
}
DEFAULT_ENDPOINT = "http://localhost:4566"  # LocalStack's port on this machine
# the provisioning hook's folder in the container: its state, log and the watcher's pid
DEFAULT_STATE_DIR = "/tmp/pipeline"  # noqa: S108 - a path in the LocalStack container
# LocalStack accepts any credentials; these are not secrets
EMULATOR_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
DURATION = re.compile(r"^(\d+)([smhd])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Failure(Exception):
    """An error to report as one line, without a traceback."""


def default(name: str) -> str:
    """A setting's value: its environment variable when set and not empty, else the default."""
    variable, value = DEFAULTS[name]
    if name == "region":
        return os.environ.get(variable) or os.environ.get("AWS_DEFAULT_REGION") or value
    return os.environ.get(variable) or value


def default_endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL") or DEFAULT_ENDPOINT


# --- flags and number types ------------------------------------------------------------


def add_target_arguments(parser: argparse.ArgumentParser, aws: bool = True) -> None:
    """--endpoint-url | --aws, and --region: where the pipeline is. aws=False: an emulator only."""
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--endpoint-url",
        default=default_endpoint(),
        help=f"emulator endpoint (default: $AWS_ENDPOINT_URL, else {DEFAULT_ENDPOINT})",
    )
    if aws:
        target.add_argument("--aws", action="store_true", help="real AWS: no endpoint, your credential chain")
    parser.add_argument(
        "--region",
        default=default("region"),
        help=f"default: $AWS_REGION, else $AWS_DEFAULT_REGION, else {DEFAULTS['region'][1]}",
    )


def add_name_argument(parser: argparse.ArgumentParser, name: str, **extra: Any) -> None:
    """--<name> with its environment variable and default, e.g. --bucket ($BUCKET_NAME)."""
    variable = DEFAULTS[name][0]
    extra.setdefault("help", f"${variable} (default {DEFAULTS[name][1]})")
    parser.add_argument(f"--{name}", default=default(name), **extra)


def positive(kind: type) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` (int or float) above 0."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not {'a whole number' if kind is int else 'a number'}: {text!r}"
            ) from None
        if value <= 0:
            raise argparse.ArgumentTypeError("must be more than 0")
        return value

    return parse


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds above 0: {text!r}")
    return value


def duration(text: str) -> int:
    """argparse type: `90s`, `10m`, `2h`, `1d` in seconds."""
    match = DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"not a duration like 10m, 2h or 1d: {text!r}")
    return int(match.group(1)) * SECONDS[match.group(2)]


# --- clients ---------------------------------------------------------------------------


def boto3_module() -> Any:
    """boto3, or a one-line Failure saying how to get it (tools import it only when needed)."""
    try:
        import boto3
    except ImportError:
        raise Failure(
            f"this needs boto3, which {sys.executable} lacks: {sys.executable} -m pip install boto3 "
            "(or use ./start.sh ls|cat|logs|status, which need nothing but Docker)"
        ) from None
    return boto3


def session(region: str) -> Any:
    return boto3_module().session.Session(region_name=region)


def clients(region: str, endpoint: str | None, services: tuple[str, ...], **config: Any) -> list[Any]:
    """boto3 clients for one target; endpoint None is real AWS. An emulator gets test
    credentials when the machine has none. `config`: botocore Config options."""
    current = session(region)  # first: a missing boto3 is one line
    from botocore.config import Config

    credentials: dict[str, str] = {}
    if endpoint and current.get_credentials() is None:
        credentials = dict(EMULATOR_CREDENTIALS)
    options = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 5, "mode": "standard"}}
    options.update(config)
    made = [current.client(name, endpoint_url=endpoint, config=Config(**options), **credentials) for name in services]
    for client in made:
        client.meta.events.register("after-call", _refuse_web_pages)
    return made


def _refuse_web_pages(http_response: Any, **_: Any) -> None:
    """An HTML answer is a web server, not an AWS API: botocore would read a 200 page as an
    empty listing and put an error page into the message."""
    if "text/html" not in http_response.headers.get("content-type", "").lower():
        return
    start = (http_response.content or b"")[:256].lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html")):  # moto labels some API answers text/html
        raise Failure(not_aws_message(http_response.status_code))


def not_aws_message(status: int | None = None) -> str:
    code = f" (HTTP {status})" if status else ""
    return (
        f"the endpoint answered with a web page, not an AWS API{code}: is --endpoint-url "
        f"(or $AWS_ENDPOINT_URL) LocalStack's address, e.g. {DEFAULT_ENDPOINT}?"
    )


# --- failures in one line --------------------------------------------------------------


def error_code(exc: BaseException) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def _not_aws_answer(exc: BaseException) -> str | None:
    """An answer that is not an AWS API's (a web page, a proxy's error): one line, not the page."""
    text = str(exc).lower()
    if type(exc).__name__ == "ResponseParserError" or "<html" in text or "<!doctype" in text:
        return not_aws_message(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode"))
    return None


def describe(exc: BaseException) -> str:
    """One line for any failure, naming what went wrong and, where we know it, what to do."""
    if isinstance(exc, Failure):
        return str(exc)
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return "no AWS credentials found: configure them (aws configure, AWS_PROFILE) or use an emulator"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"):
        return f"cannot reach the endpoint: {exc}"
    if name == "WaiterError":
        return f"timed out waiting: {exc} (raise --wait-timeout?)"
    not_aws = _not_aws_answer(exc)
    if not_aws:
        return not_aws
    code = error_code(exc)
    if code == "NoSuchBucket":
        return "the bucket does not exist: is the pipeline provisioned? (status shows what is missing)"
    if code:
        message = getattr(exc, "response", {}).get("Error", {}).get("Message", "")
        return f"{code}: {message}" if message else f"{code}: {exc}"
    first = str(exc).strip().splitlines()
    return f"{name}: {first[0] if first else ''}".rstrip(": ")
