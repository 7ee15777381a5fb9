#!/usr/bin/env python3
"""Provision the log pipeline on LocalStack or AWS: converge, show status, or tear down.

Resources: Kinesis stream -> Lambda (event source mapping) -> S3 bucket, and the Lambda's
IAM role. Every run converges them to the state below from nothing or from any partial
state, and says per resource whether it was created, updated or unchanged; a second run
changes nothing. Needs boto3 only and runs on Python 3.9+, from any directory, on a
user's host and inside the LocalStack container (ready.d hook).

    python3 init/init_resource.py               # LocalStack at http://localhost:4566
    python3 init/init_resource.py --status      # what is deployed, and what is wrong
    python3 init/init_resource.py --teardown    # remove it all (--force: bucket with data)
    python3 init/init_resource.py --aws         # real AWS: your credentials, after a prompt
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shlex
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import glue_catalog  # beside this file: the Athena table (--aws)
import pipeline_target  # beside this file: the names' defaults, flags, clients, error wording
from pipeline_target import DEFAULT_ENDPOINT, DEFAULTS, Failure, describe, error_code, positive

HERE = Path(__file__).resolve().parent
HANDLER_FILE = HERE / "kinesis_event_to_s3.py"
# The function's package: the handler, its parts, and the bucket layout it shares with the host tools.
PACKAGE_PARTS = ("access_line", "envelopes", "batching", "bucket_layout")
PACKAGE_FILES = (HANDLER_FILE, *(HERE / f"{part}.py" for part in PACKAGE_PARTS))
LAMBDA_RUNTIME = "python3.12"
LAMBDA_HANDLER = "kinesis_event_to_s3.handler"
LAMBDA_TIMEOUT = 60  # seconds: a 1,000-record batch takes well under one
LAMBDA_MEMORY = 256  # MB: a 6 MB batch peaks far below this
INLINE_POLICY = "kinesis-to-s3"
LOCALSTACK_SERVICES = ("kinesis", "lambda", "s3", "iam")

# The event source mapping. TRIM_HORIZON: LATEST skips records written before the first
# poll. Retries and record age are bounded (AWS's defaults are infinite: one failing
# batch would hold the shard forever); ReportBatchItemFailures lets the handler name
# where a retry starts, and bisecting isolates a failing record on AWS.
MAPPING = {
    "BatchSize": 1000,
    # 0: a batch goes to the function at the poll that finds it; LocalStack checks a window
    # only at polls, so 1 held every record about a second. Cost: one object per poll that
    # finds records, about 13,000-16,000 objects an hour (docs/performance.md).
    "MaximumBatchingWindowInSeconds": 0,
    "FunctionResponseTypes": ["ReportBatchItemFailures"],
    "BisectBatchOnFunctionError": True,
    "MaximumRetryAttempts": 100,
    "MaximumRecordAgeInSeconds": 86400,
}
STARTING_POSITION = "TRIM_HORIZON"
KINESIS_READ_ACTIONS = [
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:ListShards",
    "kinesis:SubscribeToShard",
]


@dataclass
class Settings:
    stream: str
    shards: int
    bucket: str
    role: str
    function: str
    region: str
    endpoint: str | None  # None: real AWS
    wait_timeout: float
    compression: str = ""


@dataclass
class Report:
    """One line per resource, printed as it happens."""

    lines: list[str] = field(default_factory=list)

    def say(self, resource: str, name: str, outcome: str, detail: str = "") -> None:
        line = f"{resource:<9} {name}: {outcome}" + (f" ({detail})" if detail else "")
        self.lines.append(line)
        print(line, flush=True)

    def settle(
        self,
        resource: str,
        name: str,
        created: bool,
        changes: list[str],
        created_detail: str = "",
        unchanged_detail: str = "",
    ) -> None:
        """Say created, updated (with what changed) or unchanged."""
        if created:
            self.say(resource, name, "created", created_detail)
        elif changes:
            self.say(resource, name, "updated", ", ".join(changes))
        else:
            self.say(resource, name, "unchanged", unchanged_detail)

    def changed(self) -> bool:
        return any(": unchanged" not in line for line in self.lines)


# --- pure pieces: what the resources should be ---------------------------------------


def function_zip(sources: tuple[Path, ...] = PACKAGE_FILES) -> bytes:
    """The deployment package, built in memory: the same bytes for the same sources."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for source in sources:
            info = zipfile.ZipInfo(source.name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, source.read_bytes())
    return buffer.getvalue()


def code_sha256(package: bytes) -> str:
    """Lambda's CodeSha256: base64 of the package's SHA-256."""
    return b64encode(hashlib.sha256(package).digest()).decode("ascii")


def trust_policy() -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }


def permissions_policy(settings: Settings, account: str, stream_arn: str) -> dict[str, Any]:
    """Least privilege: read this stream, write this function's logs, put into this bucket."""
    partition = stream_arn.split(":")[1]
    log_group = f"arn:{partition}:logs:{settings.region}:{account}:log-group:/aws/lambda/{settings.function}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadStream", "Effect": "Allow", "Action": KINESIS_READ_ACTIONS, "Resource": stream_arn},
            {"Sid": "FindStreams", "Effect": "Allow", "Action": ["kinesis:ListStreams"], "Resource": "*"},
            {
                "Sid": "WriteOwnLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [log_group, f"{log_group}:*"],
            },
            {
                "Sid": "WriteObjects",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": f"arn:{partition}:s3:::{settings.bucket}/*",
            },
        ],
    }


def function_configuration(settings: Settings, role_arn: str) -> dict[str, Any]:
    variables = {"BUCKET_NAME": settings.bucket}
    if settings.compression:
        variables["COMPRESSION"] = settings.compression
    return {
        "Runtime": LAMBDA_RUNTIME,
        "Handler": LAMBDA_HANDLER,
        "Role": role_arn,
        "Timeout": LAMBDA_TIMEOUT,
        "MemorySize": LAMBDA_MEMORY,
        "Environment": {"Variables": variables},
    }


def configuration_drift(deployed: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Names of the settings whose deployed value differs from the wanted one."""
    drift = []
    for key, value in wanted.items():
        current = deployed.get(key)
        if key == "Environment":
            current = (current or {}).get("Variables", {})
            value = value["Variables"]
        if current != value:
            drift.append(key)
    return drift


def canonical(document: Any) -> str:
    """Policy documents compare equal whatever their key order or encoding."""
    if isinstance(document, str):
        document = json.loads(urllib.parse.unquote(document))
    return json.dumps(document, sort_keys=True)


# --- the target ----------------------------------------------------------------------


class Aws:
    """The clients for one target, with the account and region they act in."""

    def __init__(self, settings: Settings) -> None:
        services = ("kinesis", "s3", "iam", "lambda", "sts", "glue")
        clients = pipeline_target.clients(settings.region, settings.endpoint, services)
        self.kinesis, self.s3, self.iam, self.lambda_, self.sts, self.glue = clients
        self.region = settings.region
        self._account: str | None = None

    @property
    def account(self) -> str:
        if self._account is None:
            self._account = self.sts.get_caller_identity()["Account"]
        return self._account


def waiter_config(settings: Settings) -> dict[str, int]:
    delay = 1 if settings.endpoint else 5
    return {"Delay": delay, "MaxAttempts": max(1, int(settings.wait_timeout // delay) + 1)}


def wait_for_endpoint(settings: Settings) -> None:
    """Until the emulator answers (LocalStack: until our four services are available)."""
    if not settings.endpoint:
        return
    url = settings.endpoint.rstrip("/") + "/_localstack/health"
    deadline = time.monotonic() + settings.wait_timeout
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - http(s) endpoint of the user's choice
                health = json.loads(response.read().decode("utf-8") or "{}")
            services = health.get("services", {})
            missing = [s for s in LOCALSTACK_SERVICES if services.get(s) not in ("available", "running")]
            if not missing:
                return
            last = "LocalStack services not ready: " + ", ".join(missing)
        except (urllib.error.HTTPError, ValueError):
            return  # answers HTTP but is not LocalStack (moto, other emulators): the API calls tell
        except OSError as exc:
            last = str(getattr(exc, "reason", exc))
        if time.monotonic() >= deadline:
            raise Failure(
                f"{settings.endpoint} did not become ready within {settings.wait_timeout:g}s ({last}); "
                "is LocalStack running? (./start.sh, or docker compose ps)"
            )
        time.sleep(1)


# --- converge ------------------------------------------------------------------------


def ensure_stream(aws: Aws, settings: Settings, report: Report) -> str:
    waiter = aws.kinesis.get_waiter("stream_exists")
    try:
        summary = aws.kinesis.describe_stream_summary(StreamName=settings.stream)["StreamDescriptionSummary"]
    except aws.kinesis.exceptions.ResourceNotFoundException:
        aws.kinesis.create_stream(StreamName=settings.stream, ShardCount=settings.shards)
        waiter.wait(StreamName=settings.stream, WaiterConfig=waiter_config(settings))
        summary = aws.kinesis.describe_stream_summary(StreamName=settings.stream)["StreamDescriptionSummary"]
        report.say("stream", settings.stream, "created", f"{settings.shards} shard(s), {summary['StreamStatus']}")
        return summary["StreamARN"]
    if summary["StreamStatus"] != "ACTIVE":
        waiter.wait(StreamName=settings.stream, WaiterConfig=waiter_config(settings))
    shards = summary.get("OpenShardCount")
    if shards is not None and shards != settings.shards:
        aws.kinesis.update_shard_count(
            StreamName=settings.stream, TargetShardCount=settings.shards, ScalingType="UNIFORM_SCALING"
        )
        waiter.wait(StreamName=settings.stream, WaiterConfig=waiter_config(settings))
        report.say("stream", settings.stream, "updated", f"{shards} -> {settings.shards} shard(s)")
    else:
        report.say("stream", settings.stream, "unchanged", f"{shards} shard(s), ACTIVE")
    return summary["StreamARN"]


PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
ENCRYPTION = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


def _bucket_exists(aws: Aws, bucket: str) -> bool:
    try:
        aws.s3.head_bucket(Bucket=bucket)
    except aws.s3.exceptions.ClientError as exc:
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return False
        if error_code(exc) in ("403", "AccessDenied"):
            raise Failure(f"bucket {bucket} exists but belongs to another account; choose another --bucket") from exc
        raise
    return True


def ensure_bucket(aws: Aws, settings: Settings, report: Report) -> None:
    created = not _bucket_exists(aws, settings.bucket)
    if created:
        kwargs: dict[str, Any] = {"Bucket": settings.bucket}
        if settings.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.region}
        aws.s3.create_bucket(**kwargs)
        aws.s3.get_waiter("bucket_exists").wait(Bucket=settings.bucket, WaiterConfig=waiter_config(settings))
    changes = []
    try:
        current = aws.s3.get_public_access_block(Bucket=settings.bucket)["PublicAccessBlockConfiguration"]
    except aws.s3.exceptions.ClientError as exc:
        if error_code(exc) != "NoSuchPublicAccessBlockConfiguration":
            raise
        current = {}
    if current != PUBLIC_ACCESS_BLOCK:
        aws.s3.put_public_access_block(Bucket=settings.bucket, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
        changes.append("public access blocked")
    try:
        rules = aws.s3.get_bucket_encryption(Bucket=settings.bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        algorithms = [r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules]
    except aws.s3.exceptions.ClientError as exc:
        if error_code(exc) != "ServerSideEncryptionConfigurationNotFoundError":
            raise
        algorithms = []
    if not algorithms or algorithms[0] not in ("AES256", "aws:kms", "aws:kms:dsse"):
        aws.s3.put_bucket_encryption(Bucket=settings.bucket, ServerSideEncryptionConfiguration=ENCRYPTION)
        changes.append("SSE-S3 encryption")
    report.settle("bucket", settings.bucket, created, changes, "private, SSE-S3")


def ensure_role(aws: Aws, settings: Settings, stream_arn: str, report: Report) -> str:
    iam = aws.iam
    wanted_policy = permissions_policy(settings, aws.account, stream_arn)
    changes = []
    try:
        role = iam.get_role(RoleName=settings.role)["Role"]
        created = False
    except iam.exceptions.NoSuchEntityException:
        role = iam.create_role(
            RoleName=settings.role,
            AssumeRolePolicyDocument=json.dumps(trust_policy()),
            Description="KinesisAccessLogToS3: read the access-log stream, write the bucket",
        )["Role"]
        iam.get_waiter("role_exists").wait(RoleName=settings.role, WaiterConfig=waiter_config(settings))
        created = True
    if not created and canonical(role["AssumeRolePolicyDocument"]) != canonical(trust_policy()):
        iam.update_assume_role_policy(RoleName=settings.role, PolicyDocument=json.dumps(trust_policy()))
        changes.append("trust policy")
    for attached in iam.list_attached_role_policies(RoleName=settings.role)["AttachedPolicies"]:
        iam.detach_role_policy(RoleName=settings.role, PolicyArn=attached["PolicyArn"])
        changes.append(f"detached {attached['PolicyName']}")
    for name in iam.list_role_policies(RoleName=settings.role)["PolicyNames"]:
        if name != INLINE_POLICY:
            iam.delete_role_policy(RoleName=settings.role, PolicyName=name)
            changes.append(f"removed policy {name}")
    try:
        current = iam.get_role_policy(RoleName=settings.role, PolicyName=INLINE_POLICY)["PolicyDocument"]
    except iam.exceptions.NoSuchEntityException:
        current = None
    if current is None or canonical(current) != canonical(wanted_policy):
        iam.put_role_policy(RoleName=settings.role, PolicyName=INLINE_POLICY, PolicyDocument=json.dumps(wanted_policy))
        if not created:
            changes.append("permissions")
    report.settle("role", settings.role, created, changes, "trust lambda.amazonaws.com, least-privilege inline policy")
    return role["Arn"]


def _retry_while_role_propagates(call: Callable[[], Any], settings: Settings) -> Any:
    """IAM is eventually consistent: a new role can be refused by Lambda for some seconds."""
    deadline = time.monotonic() + max(settings.wait_timeout, 30)
    delay = 1.0
    while True:
        try:
            return call()
        except Exception as exc:
            if error_code(exc) != "InvalidParameterValueException" or "assume" not in str(exc).lower():
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)  # no waiter exists for IAM propagation
            delay = min(delay * 2, 8)


def function_failure(config: dict[str, Any]) -> str | None:
    """Why a function cannot run (its State or last update Failed), or None when it can."""
    if config.get("State") == "Failed":
        return f"State Failed: {config.get('StateReason') or 'no reason given'}"
    if config.get("LastUpdateStatus") == "Failed":
        return f"last update Failed: {config.get('LastUpdateStatusReason') or 'no reason given'}"
    return None


def _wait_for_function(aws: Aws, settings: Settings, waiter: str) -> None:
    """Wait until the function is Active / updated; a Failed function is an error, not a timeout."""
    lam = aws.lambda_
    try:
        lam.get_waiter(waiter).wait(FunctionName=settings.function, WaiterConfig=waiter_config(settings))
    except Exception as exc:
        if type(exc).__name__ != "WaiterError":
            raise
        failure = function_failure(lam.get_function_configuration(FunctionName=settings.function))
        if failure:
            raise Failure(f"function {settings.function} cannot run: {failure}") from None
        raise


def _create_function(aws: Aws, settings: Settings, package: bytes, wanted: dict[str, Any]) -> str:
    created = _retry_while_role_propagates(
        lambda: aws.lambda_.create_function(
            FunctionName=settings.function,
            Code={"ZipFile": package},
            Description="nginx access-log lines from Kinesis to S3 as JSON Lines",
            **wanted,
        ),
        settings,
    )
    _wait_for_function(aws, settings, "function_active_v2")
    return created["FunctionArn"]


def ensure_function(aws: Aws, settings: Settings, role_arn: str, report: Report) -> str:
    lam = aws.lambda_
    package = function_zip()
    wanted = function_configuration(settings, role_arn)
    try:
        deployed = lam.get_function_configuration(FunctionName=settings.function)
    except lam.exceptions.ResourceNotFoundException:
        arn = _create_function(aws, settings, package, wanted)
        report.say("function", settings.function, "created", f"{LAMBDA_RUNTIME}, Active")
        return arn
    if deployed.get("State") == "Pending":
        _wait_for_function(aws, settings, "function_active_v2")
    if deployed.get("LastUpdateStatus") == "InProgress":
        _wait_for_function(aws, settings, "function_updated_v2")
    deployed = lam.get_function_configuration(FunctionName=settings.function)
    failure = function_failure(deployed)
    if failure:
        # A Failed function never runs again by itself: create it anew once (its mapping
        # is converged below); if it fails again, the cause is outside this script.
        try:
            lam.delete_function(FunctionName=settings.function)
        except lam.exceptions.ClientError as exc:  # LocalStack 4.14.0 cannot delete a Failed one
            raise Failure(
                f"function {settings.function} cannot run: {failure}; deleting it to create it anew "
                f"failed ({describe(exc)}): on LocalStack, restart it"
            ) from None
        arn = _create_function(aws, settings, package, wanted)
        report.say("function", settings.function, "recreated", f"it was {failure}")
        return arn
    changes = []
    if deployed.get("CodeSha256") != code_sha256(package):
        lam.update_function_code(FunctionName=settings.function, ZipFile=package)
        _wait_for_function(aws, settings, "function_updated_v2")
        changes.append("code")
    drift = configuration_drift(deployed, wanted)
    if drift:
        _retry_while_role_propagates(
            lambda: lam.update_function_configuration(FunctionName=settings.function, **wanted), settings
        )
        _wait_for_function(aws, settings, "function_updated_v2")
        changes.extend(drift)
    report.settle("function", settings.function, False, changes)
    return deployed["FunctionArn"]


def _mappings(aws: Aws, stream_arn: str, function: str) -> list[dict[str, Any]]:
    paginator = aws.lambda_.get_paginator("list_event_source_mappings")
    pages = paginator.paginate(EventSourceArn=stream_arn, FunctionName=function)
    return [m for page in pages for m in page["EventSourceMappings"]]


def mapping_drift(mapping: dict[str, Any]) -> dict[str, Any]:
    """The settings of a deployed mapping that differ from MAPPING, with wanted values."""
    return {key: value for key, value in MAPPING.items() if mapping.get(key) != value}


def ensure_mapping(aws: Aws, settings: Settings, stream_arn: str, report: Report) -> None:
    """Exactly one mapping from the stream to the function, with our settings."""
    lam = aws.lambda_
    name = f"{settings.stream} -> {settings.function}"
    existing = _mappings(aws, stream_arn, settings.function)
    for extra in existing[1:]:  # duplicates left by an older script or a race: keep one
        lam.delete_event_source_mapping(UUID=extra["UUID"])
    if not existing:
        mapping = lam.create_event_source_mapping(
            EventSourceArn=stream_arn,
            FunctionName=settings.function,
            StartingPosition=STARTING_POSITION,
            Enabled=True,
            **MAPPING,
        )
        report.say("mapping", name, "created", f"{STARTING_POSITION}, batch {MAPPING['BatchSize']}, {mapping['UUID']}")
        return
    mapping = existing[0]
    drift = mapping_drift(mapping)
    if mapping.get("State") == "Disabled":
        drift["Enabled"] = True
    if drift:
        lam.update_event_source_mapping(UUID=mapping["UUID"], **drift)
    removed = f"removed {len(existing) - 1} duplicate(s)" if len(existing) > 1 else ""
    changes = [*sorted(drift), removed] if removed else sorted(drift)
    report.settle("mapping", name, False, changes, unchanged_detail=mapping["UUID"])


def converge(aws: Aws, settings: Settings) -> Report:
    report = Report()
    stream_arn = ensure_stream(aws, settings, report)
    ensure_bucket(aws, settings, report)
    role_arn = ensure_role(aws, settings, stream_arn, report)
    ensure_function(aws, settings, role_arn, report)
    ensure_mapping(aws, settings, stream_arn, report)
    if glue_catalog.wanted(settings):
        glue_catalog.ensure_catalog(aws, settings, report)
    if not report.changed():
        print("Nothing to change: everything is as it should be.")
    print(f"Next: browse the site, then: {hint_commands(settings)['list']}")
    return report


# --- teardown ------------------------------------------------------------------------


def _stream_arn(aws: Aws, settings: Settings) -> str | None:
    try:
        return aws.kinesis.describe_stream_summary(StreamName=settings.stream)["StreamDescriptionSummary"]["StreamARN"]
    except aws.kinesis.exceptions.ResourceNotFoundException:
        return None


def _empty_bucket(aws: Aws, bucket: str) -> int:
    deleted = 0
    paginator = aws.s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket):
        entries = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        for start in range(0, len(entries), 1000):
            aws.s3.delete_objects(Bucket=bucket, Delete={"Objects": entries[start : start + 1000], "Quiet": True})
        deleted += len(page.get("Versions", []))
    return deleted


def teardown(aws: Aws, settings: Settings, force: bool) -> Report:
    """Remove everything converge creates, in reverse order; absent parts are fine."""
    report = Report()
    has_objects = _bucket_exists(aws, settings.bucket) and aws.s3.list_objects_v2(
        Bucket=settings.bucket, MaxKeys=1
    ).get("KeyCount", 0)
    if has_objects and not force:
        raise Failure(
            f"bucket {settings.bucket} holds objects; nothing was deleted. "
            "Copy what you need, then run again with --force to delete them too."
        )
    if glue_catalog.wanted(settings):
        glue_catalog.teardown_catalog(aws, settings, report)
    stream_arn = _stream_arn(aws, settings)
    lam = aws.lambda_
    name = f"{settings.stream} -> {settings.function}"
    mappings = _mappings(aws, stream_arn, settings.function) if stream_arn else []
    for mapping in mappings:
        lam.delete_event_source_mapping(UUID=mapping["UUID"])
    report.say("mapping", name, "deleted" if mappings else "absent")
    left: list[str] = []
    try:
        lam.delete_function(FunctionName=settings.function)
        report.say("function", settings.function, "deleted")
    except lam.exceptions.ResourceNotFoundException:
        report.say("function", settings.function, "absent")
    except lam.exceptions.ClientError as exc:  # e.g. a Failed function on LocalStack 4.14.0
        report.say("function", settings.function, "left in place", describe(exc))
        left.append(f"function {settings.function}")
    iam = aws.iam
    try:
        for policy in iam.list_role_policies(RoleName=settings.role)["PolicyNames"]:
            iam.delete_role_policy(RoleName=settings.role, PolicyName=policy)
        for attached in iam.list_attached_role_policies(RoleName=settings.role)["AttachedPolicies"]:
            iam.detach_role_policy(RoleName=settings.role, PolicyArn=attached["PolicyArn"])
        iam.delete_role(RoleName=settings.role)
        report.say("role", settings.role, "deleted")
    except iam.exceptions.NoSuchEntityException:
        report.say("role", settings.role, "absent")
    if _bucket_exists(aws, settings.bucket):
        removed = _empty_bucket(aws, settings.bucket)
        aws.s3.delete_bucket(Bucket=settings.bucket)
        report.say("bucket", settings.bucket, "deleted", f"{removed} object(s)" if removed else "")
    else:
        report.say("bucket", settings.bucket, "absent")
    if stream_arn:
        aws.kinesis.delete_stream(StreamName=settings.stream, EnforceConsumerDeletion=True)
        aws.kinesis.get_waiter("stream_not_exists").wait(
            StreamName=settings.stream, WaiterConfig=waiter_config(settings)
        )
        report.say("stream", settings.stream, "deleted")
    else:
        report.say("stream", settings.stream, "absent")
    if left:
        raise Failure(f"teardown incomplete: {', '.join(left)} could not be deleted (see above); the rest is gone")
    return report


# --- status --------------------------------------------------------------------------


def _count_keys(aws: Aws, bucket: str, prefix: str) -> int:
    paginator = aws.s3.get_paginator("list_objects_v2")
    return sum(page.get("KeyCount", 0) for page in paginator.paginate(Bucket=bucket, Prefix=prefix))


def _target_flags(settings: Settings, names: tuple[str, ...]) -> list[str]:
    """The flags that point a tool at exactly these settings (defaults left out)."""
    flags = ["--aws"] if settings.endpoint is None else []
    if settings.endpoint not in (None, DEFAULT_ENDPOINT):
        flags += ["--endpoint-url", settings.endpoint]
    for name in names:
        value = str(getattr(settings, name) or "none")  # compression "" is the default none
        if value != DEFAULTS[name][1]:
            flags += [f"--{name}", value]
    return flags


def rerun_command(settings: Settings) -> str:
    """This script with exactly these settings, so a hint never targets other resources."""
    flags = _target_flags(settings, ("region", "stream", "shards", "bucket", "role", "function", "compression"))
    return " ".join(["python3", "init/init_resource.py", *(shlex.quote(flag) for flag in flags)])


def cli_command(settings: Settings, *words: str) -> str:
    """init/pipeline_cli.py with the same target: it needs only boto3, like this script."""
    flags = _target_flags(settings, ("region", "stream", "bucket", "function"))
    return " ".join(["python3", "init/pipeline_cli.py", *(shlex.quote(flag) for flag in flags), *words])


def hint_commands(settings: Settings) -> dict[str, str]:
    """What hints tell a user to run: the stack's own commands when this runs inside the
    compose stack ($PIPELINE_CLI, set by docker-compose.yml), else this script and
    pipeline_cli.py with the same settings (no AWS CLI needed)."""
    cli = os.environ.get("PIPELINE_CLI")
    if cli:
        return {
            "provision": f"{cli} provision",
            "function logs": f"{cli} logs",
            "list": f"{cli} ls",
            "fluentd": "docker compose logs fluentd",
        }
    return {
        "provision": rerun_command(settings),
        "function logs": cli_command(settings, "logs", "--follow"),
        "list": cli_command(settings, "ls"),
        "fluentd": "the log of the fluentd that ships your access log",
    }


def status(aws: Aws, settings: Settings) -> bool:
    """What a user runs when nothing arrives in S3: each part's state, and hints.

    True when every resource exists and none has failed (data hints aside).
    """
    run = hint_commands(settings)
    missing_hint = f"something is missing: run {run['provision']} (it creates only what is missing)"
    hints: list[str] = []
    broken = False
    try:
        stream = aws.kinesis.describe_stream_summary(StreamName=settings.stream)["StreamDescriptionSummary"]
        stream_arn = stream["StreamARN"]
        print(f"stream    {settings.stream}: {stream['StreamStatus']}, {stream.get('OpenShardCount', '?')} shard(s)")
        if stream["StreamStatus"] != "ACTIVE":
            hints.append("the stream is not ACTIVE yet: wait, then check again")
    except aws.kinesis.exceptions.ResourceNotFoundException:
        stream_arn = None
        broken = True
        print(f"stream    {settings.stream}: missing")
        hints.append(missing_hint)
    try:
        config = aws.lambda_.get_function_configuration(FunctionName=settings.function)
        print(
            f"function  {settings.function}: {config.get('State', '?')}, last update "
            f"{config.get('LastUpdateStatus', '?')}"
        )
        failure = function_failure(config)
        if failure:
            broken = True
            hints.append(f"the function cannot run ({failure}): fix the cause, then run {run['provision']}")
    except aws.lambda_.exceptions.ResourceNotFoundException:
        broken = True
        print(f"function  {settings.function}: missing")
        hints.append(missing_hint)
    mappings = _mappings(aws, stream_arn, settings.function) if stream_arn else []
    if not mappings:
        broken = True
        print(f"mapping   {settings.stream} -> {settings.function}: missing")
        hints.append(missing_hint)
    for mapping in mappings:
        result = mapping.get("LastProcessingResult", "none yet")
        print(f"mapping   {mapping['UUID']}: {mapping.get('State', '?')}, last processing result: {result}")
        if mapping.get("State") not in ("Enabled", "Enabling", "Creating", "Updating"):
            hints.append(f"the mapping is not enabled: run {run['provision']} to enable it")
        if "PROBLEM" in str(result).upper():
            hints.append(f"the function fails on batches: read its logs ({run['function logs']})")
    if _bucket_exists(aws, settings.bucket):
        errors = _count_keys(aws, settings.bucket, "errors/")
        # `_pipeline/` holds control objects (drain acknowledgements), never records
        records = _count_keys(aws, settings.bucket, "") - errors - _count_keys(aws, settings.bucket, "_pipeline/")
        print(f"bucket    {settings.bucket}: {records} record object(s), {errors} error object(s)")
        if records == 0 and not hints:
            hints.append(
                "no records yet: browse the site, wait a few seconds, "
                f"and check fluentd ({run['fluentd']}) and the function ({run['function logs']})"
            )
        if errors:
            hints.append(f"unparsable lines are kept under s3://{settings.bucket}/errors/")
    else:
        broken = True
        print(f"bucket    {settings.bucket}: missing")
        hints.append(missing_hint)
    if glue_catalog.wanted(settings):
        fine, more = glue_catalog.catalog_status(aws, settings)
        broken, hints = broken or not fine, hints + more
    for hint in dict.fromkeys(hints):
        print(f"hint: {hint}")
    return not broken


# --- command line --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="init_resource.py",
        description="Create or update (default), show (--status) or remove (--teardown) the log pipeline.",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--status", action="store_true", help="show each resource's state and hints")
    action.add_argument("--teardown", action="store_true", help="delete mapping, function, role, bucket, stream")
    parser.add_argument("--force", action="store_true", help="with --teardown: delete a bucket that holds objects")
    pipeline_target.add_target_arguments(parser)
    parser.add_argument("--yes", action="store_true", help="with --aws: do not ask for confirmation")
    for name in ("stream", "bucket", "role", "function"):
        pipeline_target.add_name_argument(parser, name)
    pipeline_target.add_name_argument(parser, "shards", type=positive(int))
    pipeline_target.add_name_argument(
        parser, "compression", choices=["none", "gzip"], help="objects as .json (none) or .json.gz (gzip); $COMPRESSION"
    )
    parser.add_argument(
        "--wait-timeout",
        type=positive(float),
        default=60.0,
        help="seconds to wait for the endpoint and each resource (default %(default)s)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.force and not args.teardown:
        parser.error("--force goes with --teardown")
    if args.yes and not args.aws:
        parser.error("--yes goes with --aws")
    return args


def confirm_real_aws(aws: Aws, settings: Settings, args: argparse.Namespace) -> None:
    verb = "DELETE the pipeline from" if args.teardown else "deploy the pipeline to"
    identity = aws.sts.get_caller_identity()
    print(f"AWS account {identity['Account']} ({identity['Arn']}), region {settings.region}")
    if args.yes or args.status:
        return
    try:
        answer = input(f"About to {verb} this account. Continue? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise Failure("cancelled: nothing was changed (pass --yes to skip this question)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(
        stream=args.stream,
        shards=int(args.shards),
        bucket=args.bucket,
        role=args.role,
        function=args.function,
        region=args.region,
        endpoint=None if args.aws else args.endpoint_url,
        wait_timeout=args.wait_timeout,
        compression="" if args.compression == "none" else args.compression,
    )
    try:
        if not HANDLER_FILE.is_file():
            raise Failure(f"the handler's source is missing: {HANDLER_FILE}")
        pipeline_target.boto3_module()  # before any wait: a missing boto3 is said at once
        if settings.endpoint:
            wait_for_endpoint(settings)
        aws = Aws(settings)
        if args.aws:
            confirm_real_aws(aws, settings, args)
        if args.status:
            return 0 if status(aws, settings) else 1
        if args.teardown:
            teardown(aws, settings, args.force)
        else:
            converge(aws, settings)
        return 0
    except KeyboardInterrupt:
        print("init_resource.py: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"init_resource.py: error: {describe(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
