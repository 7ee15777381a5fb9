"""init/init_resource.py against moto server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import boto3
import init_resource
import pytest
from support.net import free_port, serve
from support.report import outcomes

SCRIPT = Path(init_resource.__file__)
STREAM, BUCKET, ROLE, FUNCTION = (
    "nginx-accesslog-stream",
    "nginx-accesslog",
    "kinesis-lambda-role",
    "KinesisAccessLogToS3",
)


@pytest.fixture
def clients(aws):
    def make(name, region="us-east-1"):
        return boto3.client(name, endpoint_url=aws, region_name=region)

    return make


@pytest.fixture
def run(aws, capsys):
    """Run the script's main() against moto; return (exit code, stdout, stderr)."""

    def _run(*args: str) -> tuple[int, str, str]:
        code = init_resource.main(["--endpoint-url", aws, "--wait-timeout", "10", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def test_creates_everything_from_nothing_with_every_setting(run, clients, aws):
    # when the script runs against an empty account
    code, out, err = run()
    # then it reports each resource created and the next step
    assert code == 0, err
    assert outcomes(out) == dict.fromkeys(["stream", "bucket", "role", "function", "mapping"], "created")
    assert f"Next: browse the site, then: python3 init/pipeline_cli.py --endpoint-url {aws} ls" in out

    kinesis, s3, iam, lam = clients("kinesis"), clients("s3"), clients("iam"), clients("lambda")
    stream = kinesis.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]
    assert stream["StreamStatus"] == "ACTIVE" and stream["OpenShardCount"] == 1
    stream_arn = stream["StreamARN"]

    # the bucket: private and encrypted
    assert s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    rules = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"

    # the role: Lambda may assume it; one inline policy, least privilege, nothing managed
    role = iam.get_role(RoleName=ROLE)["Role"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust == {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    assert iam.list_attached_role_policies(RoleName=ROLE)["AttachedPolicies"] == []
    assert iam.list_role_policies(RoleName=ROLE)["PolicyNames"] == ["kinesis-to-s3"]
    policy = iam.get_role_policy(RoleName=ROLE, PolicyName="kinesis-to-s3")["PolicyDocument"]
    statements = {s["Sid"]: (sorted(s["Action"]), s["Resource"]) for s in policy["Statement"]}
    log_group = f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/{FUNCTION}"
    assert statements == {
        "ReadStream": (
            sorted(
                [
                    "kinesis:DescribeStream",
                    "kinesis:DescribeStreamSummary",
                    "kinesis:GetRecords",
                    "kinesis:GetShardIterator",
                    "kinesis:ListShards",
                    "kinesis:SubscribeToShard",
                ]
            ),
            stream_arn,
        ),
        "FindStreams": (["kinesis:ListStreams"], "*"),
        "WriteOwnLogs": (
            ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            [log_group, f"{log_group}:*"],
        ),
        "WriteObjects": (["s3:PutObject"], f"arn:aws:s3:::{BUCKET}/*"),
    }
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "Principal" not in statement
        assert all("*" not in action for action in statement["Action"])

    # the function: built from the handler source, configured, Active
    config = lam.get_function_configuration(FunctionName=FUNCTION)
    assert config["Runtime"] == "python3.12"
    assert config["Handler"] == "kinesis_event_to_s3.handler"
    assert config["Role"] == role["Arn"]
    assert config["Environment"]["Variables"] == {"BUCKET_NAME": BUCKET}
    assert config["Timeout"] == 60 and config["MemorySize"] == 256
    assert config["State"] == "Active"
    package = init_resource.function_zip()
    assert config["CodeSha256"] == base64.b64encode(hashlib.sha256(package).digest()).decode()

    # the mapping: exactly one, every parameter set
    (mapping,) = lam.list_event_source_mappings(EventSourceArn=stream_arn, FunctionName=FUNCTION)["EventSourceMappings"]
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["BatchSize"] == 1000
    assert mapping["MaximumBatchingWindowInSeconds"] == 0
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert 0 <= mapping["MaximumRetryAttempts"] <= 10_000 and mapping["MaximumRetryAttempts"] != -1
    assert 60 <= mapping["MaximumRecordAgeInSeconds"] <= 604_800
    assert mapping["State"] == "Enabled"


def test_mapping_is_created_only_once_stream_and_function_are_ready(aws, monkeypatch, capsys):
    # moto does not enforce this ordering (LocalStack issue 12141): check it at the call
    seen = []
    original = init_resource.Aws.__init__

    def spying_init(self, settings):
        original(self, settings)

        def check(params, **_):
            stream = self.kinesis.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]
            function = self.lambda_.get_function_configuration(FunctionName=FUNCTION)
            seen.append((stream["StreamStatus"], function["State"], params.get("StartingPosition")))

        self.lambda_.meta.events.register("provide-client-params.lambda.CreateEventSourceMapping", check)

    monkeypatch.setattr(init_resource.Aws, "__init__", spying_init)
    assert init_resource.main(["--endpoint-url", aws]) == 0
    assert seen == [("ACTIVE", "Active", "TRIM_HORIZON")]


def test_second_run_changes_nothing_and_says_so(run, clients):
    run()
    lam = clients("lambda")
    before = lam.get_function_configuration(FunctionName=FUNCTION)
    # when it runs again
    code, out, _ = run()
    # then every resource is unchanged, the code too, and there is still one mapping
    assert code == 0
    assert outcomes(out) == dict.fromkeys(["stream", "bucket", "role", "function", "mapping"], "unchanged")
    assert "Nothing to change" in out
    after = lam.get_function_configuration(FunctionName=FUNCTION)
    assert after["CodeSha256"] == before["CodeSha256"]
    assert after["LastModified"] == before["LastModified"]
    assert len(lam.list_event_source_mappings(FunctionName=FUNCTION)["EventSourceMappings"]) == 1


def test_changed_handler_source_updates_the_code(run, clients, tmp_path, monkeypatch):
    run()
    lam = clients("lambda")
    before = lam.get_function_configuration(FunctionName=FUNCTION)["CodeSha256"]
    # given the handler's source changed
    changed = tmp_path / "kinesis_event_to_s3.py"
    changed.write_text(init_resource.HANDLER_FILE.read_text() + "\n# a change\n")
    monkeypatch.setattr(init_resource, "HANDLER_FILE", changed)
    monkeypatch.setattr(init_resource.function_zip, "__defaults__", ((changed, *init_resource.PACKAGE_FILES[1:]),))
    # when the script runs
    code, out, _ = run()
    # then the function is updated to the new package, and nothing else changes
    assert code == 0
    assert outcomes(out)["function"] == "updated" and "code" in out
    after = lam.get_function_configuration(FunctionName=FUNCTION)
    assert after["CodeSha256"] != before
    assert after["CodeSha256"] == init_resource.code_sha256(
        init_resource.function_zip((changed, *init_resource.PACKAGE_FILES[1:]))
    )
    assert after["LastUpdateStatus"] == "Successful"
    assert {k for k, v in outcomes(out).items() if v != "unchanged"} == {"function"}


def test_changed_configuration_is_updated(run, clients):
    run()
    lam = clients("lambda")
    lam.update_function_configuration(FunctionName=FUNCTION, Timeout=3, Environment={"Variables": {}})
    code, out, _ = run()
    assert code == 0 and outcomes(out)["function"] == "updated"
    config = lam.get_function_configuration(FunctionName=FUNCTION)
    assert config["Timeout"] == 60 and config["Environment"]["Variables"] == {"BUCKET_NAME": BUCKET}


def test_partial_state_is_completed(run, clients):
    # given a run that stopped after the role: function and mapping missing
    run()
    lam = clients("lambda")
    for mapping in lam.list_event_source_mappings(FunctionName=FUNCTION)["EventSourceMappings"]:
        lam.delete_event_source_mapping(UUID=mapping["UUID"])
    lam.delete_function(FunctionName=FUNCTION)
    # when the script runs again
    code, out, _ = run()
    # then it creates what is missing and keeps the rest
    assert code == 0
    assert outcomes(out) == {
        "stream": "unchanged",
        "bucket": "unchanged",
        "role": "unchanged",
        "function": "created",
        "mapping": "created",
    }


def test_drifted_resources_are_repaired(run, clients):
    run()
    iam, lam, kinesis = clients("iam"), clients("lambda"), clients("kinesis")
    stream_arn = kinesis.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]["StreamARN"]
    # the old design's mistakes: a permissions policy where the trust policy belongs,
    # a managed policy attached, a duplicate mapping, default settings
    wrong_trust = {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    iam.update_assume_role_policy(
        RoleName=ROLE, PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [wrong_trust]})
    )
    iam.create_policy(
        PolicyName="Broad",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    iam.attach_role_policy(RoleName=ROLE, PolicyArn="arn:aws:iam::123456789012:policy/Broad")
    (mapping,) = lam.list_event_source_mappings(FunctionName=FUNCTION)["EventSourceMappings"]
    lam.update_event_source_mapping(UUID=mapping["UUID"], BatchSize=100, MaximumRetryAttempts=-1)
    lam.create_event_source_mapping(EventSourceArn=stream_arn, FunctionName=FUNCTION, StartingPosition="LATEST")
    # when the script runs
    code, out, _ = run()
    # then the role and the mapping are updated back
    assert code == 0
    assert outcomes(out)["role"] == "updated" and outcomes(out)["mapping"] == "updated"
    role = iam.get_role(RoleName=ROLE)["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert iam.list_attached_role_policies(RoleName=ROLE)["AttachedPolicies"] == []
    (kept,) = lam.list_event_source_mappings(FunctionName=FUNCTION)["EventSourceMappings"]
    assert kept["UUID"] == mapping["UUID"]
    assert kept["BatchSize"] == 1000 and kept["MaximumRetryAttempts"] == init_resource.MAPPING["MaximumRetryAttempts"]
    # and a third run finds nothing to do
    assert "Nothing to change" in run()[1]


def test_shard_count_follows_the_flag(run, clients):
    run("--shards", "2")
    kinesis = clients("kinesis")
    assert kinesis.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]["OpenShardCount"] == 2


def test_other_region_bucket_and_arns(run, clients):
    code, _, err = run("--region", "eu-west-1")
    assert code == 0, err
    s3 = clients("s3", "eu-west-1")
    assert s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == "eu-west-1"
    policy = clients("iam").get_role_policy(RoleName=ROLE, PolicyName="kinesis-to-s3")["PolicyDocument"]
    assert ":eu-west-1:" in json.dumps(policy)
    assert "Nothing to change" in run("--region", "eu-west-1")[1]


def test_teardown_removes_everything_and_is_idempotent(run, clients):
    run()
    code, out, _ = run("--teardown")
    assert code == 0
    assert outcomes(out) == dict.fromkeys(["mapping", "function", "role", "bucket", "stream"], "deleted")
    assert clients("kinesis").list_streams()["StreamNames"] == []
    assert clients("lambda").list_functions()["Functions"] == []
    assert clients("lambda").list_event_source_mappings()["EventSourceMappings"] == []
    assert clients("iam").list_roles()["Roles"] == []
    assert clients("s3").list_buckets()["Buckets"] == []
    code, out, _ = run("--teardown")
    assert code == 0
    assert outcomes(out) == dict.fromkeys(["mapping", "function", "role", "bucket", "stream"], "absent")


def test_teardown_refuses_a_bucket_with_objects_unless_forced(run, clients):
    run()
    clients("s3").put_object(Bucket=BUCKET, Key="2020/05/27/08/x.json", Body=b"{}\n")
    code, out, err = run("--teardown")
    assert code == 1
    assert err.count("\n") == 1 and "--force" in err and "Traceback" not in err
    assert clients("lambda").list_functions()["Functions"] != []  # nothing deleted
    code, out, _ = run("--teardown", "--force")
    assert code == 0 and "1 object(s)" in out
    assert clients("s3").list_buckets()["Buckets"] == []


def test_status_reports_each_part_and_hints(run):
    code, out, _ = run("--status")
    assert code == 1 and "missing" in out and "hint: something is missing" in out
    run()
    code, out, _ = run("--status")
    assert code == 0
    assert "stream    nginx-accesslog-stream: ACTIVE, 1 shard(s)" in out
    assert "function  KinesisAccessLogToS3: Active" in out
    assert "Enabled" in out
    assert "bucket    nginx-accesslog: 0 record object(s), 0 error object(s)" in out
    assert "hint: no records yet" in out


def test_status_counts_no_control_object_as_a_record(run, clients):
    # given a drain's acknowledgement left in the bucket (a drain that timed out)
    run()
    s3 = clients("s3")
    s3.put_object(Bucket="nginx-accesslog", Key="_pipeline/drain/x/shardId-000000000000.json", Body=b"{}\n")
    s3.put_object(Bucket="nginx-accesslog", Key="2026/11/27/10/a.json", Body=b"{}\n")
    code, out, _ = run("--status")
    assert code == 0
    assert "bucket    nginx-accesslog: 1 record object(s), 0 error object(s)" in out


def test_unreachable_endpoint_fails_clearly_within_the_timeout():
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--endpoint-url", f"http://127.0.0.1:{free_port()}", "--wait-timeout", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "did not become ready within 2s" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--no-such-flag"],
        ["--shards", "zero"],
        ["--shards", "0"],
        ["--force"],
        ["--status", "--teardown"],
        ["--aws", "--endpoint-url", "http://x"],
        ["--compression", "zip"],
    ],
)
def test_bad_flags_print_usage_and_exit_2(args):
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("usage:") and "Traceback" not in result.stderr


def test_runs_from_any_directory(aws, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "AWS_ENDPOINT_URL": aws, "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    # no credentials configured at all: the emulator gets dummy ones
    assert result.returncode == 0, result.stderr
    assert "function  KinesisAccessLogToS3: created" in result.stdout


def test_debug_shows_the_traceback(aws, clients):
    clients("s3").create_bucket(Bucket=BUCKET)
    clients("s3").put_object(Bucket=BUCKET, Key="k", Body=b"x")
    args = [sys.executable, str(SCRIPT), "--endpoint-url", aws, "--teardown"]
    plain = subprocess.run(args, capture_output=True, text=True, timeout=60)
    debug = subprocess.run([*args, "--debug"], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in plain.stderr and "Traceback" in debug.stderr


def test_real_aws_asks_before_changing_anything(aws, monkeypatch, capsys):
    settings = init_resource.Settings(STREAM, 1, BUCKET, ROLE, FUNCTION, "us-east-1", aws, 5)
    target = init_resource.Aws(settings)
    args = init_resource.parse_args(["--aws"])
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    with pytest.raises(init_resource.Failure, match="cancelled: nothing was changed"):
        init_resource.confirm_real_aws(target, settings, args)
    assert "AWS account 123456789012" in capsys.readouterr().out
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    init_resource.confirm_real_aws(target, settings, args)
    init_resource.confirm_real_aws(target, settings, init_resource.parse_args(["--aws", "--yes"]))


def test_package_is_reproducible_and_holds_the_handler_and_what_it_imports():
    first, second = init_resource.function_zip(), init_resource.function_zip()
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert archive.namelist()[0] == "kinesis_event_to_s3.py"
        assert archive.namelist() == [source.name for source in init_resource.PACKAGE_FILES]
        for source in init_resource.PACKAGE_FILES:
            assert archive.read(source.name) == source.read_bytes()
    # every module of this folder that a packaged module imports is in the package
    local = {path.stem for path in init_resource.HERE.glob("*.py")}
    packaged = {source.stem for source in init_resource.PACKAGE_FILES}
    for source in init_resource.PACKAGE_FILES:
        tree = ast.parse(source.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert imported & local <= packaged, (source.name, imported & local - packaged)


def test_script_is_valid_python_3_9():
    ast.parse(SCRIPT.read_text(), feature_version=(3, 9))


class FakeLocalStack:
    """/_localstack/health answering as LocalStack does while its services come up."""

    def __init__(self, ready_after: int | None):
        self.calls = 0
        self.ready_after = ready_after
        self.server = serve(self.health)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def health(self, path: str) -> tuple[int, bytes]:
        self.calls += 1
        ready = self.ready_after is not None and self.calls > self.ready_after
        state = "available" if ready else "initializing"
        services = {"kinesis": "running", "lambda": state, "s3": "available", "iam": "available"}
        return 200, json.dumps({"services": services, "edition": "community"}).encode()

    def close(self):
        self.server.shutdown()


def test_waits_until_localstack_services_are_available():
    fake = FakeLocalStack(ready_after=2)
    try:
        settings = init_resource.Settings(STREAM, 1, BUCKET, ROLE, FUNCTION, "us-east-1", fake.url, 10)
        init_resource.wait_for_endpoint(settings)
    finally:
        fake.close()
    assert fake.calls == 3


def test_localstack_never_ready_fails_naming_the_service():
    fake = FakeLocalStack(ready_after=None)
    try:
        settings = init_resource.Settings(STREAM, 1, BUCKET, ROLE, FUNCTION, "us-east-1", fake.url, 2)
        with pytest.raises(init_resource.Failure, match="LocalStack services not ready: lambda"):
            init_resource.wait_for_endpoint(settings)
    finally:
        fake.close()


# --- hints lead to the same resources; a Failed function is an error ------------------


def test_status_hint_reruns_with_the_same_settings(aws, run, clients):
    # given a stack configured with another bucket (BUCKET_NAME=my-logs in .env) and
    # nothing provisioned yet
    code, out, _ = run("--bucket", "my-logs", "--status")
    assert code == 1
    (hint,) = [line for line in out.splitlines() if line.startswith("hint: something is missing")]
    command = hint.split("run ", 1)[1].split(" (it creates", 1)[0]
    assert command == f"python3 init/init_resource.py --endpoint-url {aws} --bucket my-logs"
    # when the user runs exactly the hinted command
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *command.split()[2:], "--wait-timeout", "10"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # then it provisions that bucket, and no second one
    assert result.returncode == 0, result.stderr
    assert [b["Name"] for b in clients("s3").list_buckets()["Buckets"]] == ["my-logs"]
    env = clients("lambda").get_function_configuration(FunctionName=FUNCTION)["Environment"]["Variables"]
    assert env["BUCKET_NAME"] == "my-logs"


def test_hints_inside_the_stack_name_the_stacks_commands(run, monkeypatch):
    # given the script runs inside the compose stack (docker-compose.yml sets PIPELINE_CLI)
    monkeypatch.setenv("PIPELINE_CLI", "./start.sh")
    code, out, _ = run("--status")
    assert code == 1 and "hint: something is missing: run ./start.sh provision" in out
    run()
    _, out, _ = run("--status")
    assert "./start.sh logs" in out and "init_resource.py" not in out


LOCALSTACK_REASON = "Error while creating lambda: Installation of lambda-runtime v0.1.41-pre failed"


@pytest.fixture
def functions_fail(monkeypatch):
    """Functions end State Failed, as LocalStack reports one whose runtime could not be
    prepared: a function created while the cause lasts stays Failed; calling the returned
    function removes the cause for functions created after. moto serves everything; only
    Lambda's answers are rewritten, at the botocore edge. (tests/localstack shows the same
    against the real LocalStack.)"""
    cause = {"present": True, "function_failed": False}

    def on_create(parsed, **_):
        cause["function_failed"] = cause["present"]

    def report_state(parsed, **_):
        config = parsed.get("Configuration", parsed)
        if "State" in config and cause["function_failed"]:
            config.update(State="Failed", StateReason=LOCALSTACK_REASON, StateReasonCode="InternalError")

    class FailingAws(init_resource.Aws):
        def __init__(self, settings):
            super().__init__(settings)
            events = self.lambda_.meta.events
            events.register("after-call.lambda.CreateFunction", on_create)
            for operation in ("GetFunction", "GetFunctionConfiguration", "CreateFunction"):
                events.register(f"after-call.lambda.{operation}", report_state)

    monkeypatch.setattr(init_resource, "Aws", FailingAws)
    return lambda: cause.update(present=False)


@pytest.fixture
def failed_functions_cannot_be_deleted(functions_fail, monkeypatch):
    """...and DeleteFunction refuses them, as LocalStack 4.14.0 does (tests/localstack)."""
    from botocore.exceptions import ClientError

    failing = init_resource.Aws

    class UndeletableAws(failing):
        def __init__(self, settings):
            super().__init__(settings)
            delete = self.lambda_.delete_function

            def refuse(**kwargs):
                configuration = self.lambda_.get_function_configuration(FunctionName=kwargs["FunctionName"])
                if configuration.get("State") == "Failed":
                    error = {"Code": "InternalError", "Message": "Unable to find version manager"}
                    raise ClientError({"Error": error}, "DeleteFunction")
                return delete(**kwargs)

            self.lambda_.delete_function = refuse

    monkeypatch.setattr(init_resource, "Aws", UndeletableAws)
    return functions_fail


def test_a_function_that_ends_failed_is_an_error_not_a_timeout(run, functions_fail):
    # when the function ends Failed right after it is created
    code, out, err = run()
    # then the run fails at once, naming the state and LocalStack's reason
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "State Failed" in err and LOCALSTACK_REASON in err and "timed out" not in err
    # and a second run does not call the Failed function unchanged
    code, out, err = run()
    assert code == 1 and LOCALSTACK_REASON in err
    assert "function  KinesisAccessLogToS3: unchanged" not in out


def test_status_of_a_failed_function_says_why(run, functions_fail):
    run()
    code, out, _ = run("--status")
    assert code == 1
    assert "function  KinesisAccessLogToS3: Failed" in out
    assert f"hint: the function cannot run (State Failed: {LOCALSTACK_REASON})" in out


def test_a_failed_function_is_recreated_once_the_cause_is_gone(run, functions_fail, clients):
    # given a run that left the function Failed
    assert run()[0] == 1
    # when the cause goes away and provisioning runs again
    functions_fail()
    code, out, err = run()
    # then the function is created anew and the mapping points at it
    assert code == 0, err
    assert outcomes(out)["function"] == "recreated" and "it was State Failed" in out
    (mapping,) = clients("lambda").list_event_source_mappings(FunctionName=FUNCTION)["EventSourceMappings"]
    assert mapping["FunctionArn"].endswith(f":function:{FUNCTION}")
    assert run("--status")[0] == 0


def test_a_failed_function_that_cannot_be_deleted_is_named_with_its_reason(
    run, failed_functions_cannot_be_deleted, clients
):
    # given a Failed function the emulator refuses to delete
    assert run()[0] == 1
    # when provisioning runs again, it says why the function cannot run and why it stays
    code, out, err = run()
    assert code == 1 and err.count("\n") == 1
    assert LOCALSTACK_REASON in err and "Unable to find version manager" in err
    # and teardown removes everything else, then says what it left
    code, out, err = run("--teardown", "--force")
    assert code == 1 and "teardown incomplete: function KinesisAccessLogToS3" in err
    assert "function  KinesisAccessLogToS3: left in place" in out
    assert outcomes(out)["stream"] == "deleted" and outcomes(out)["bucket"] == "deleted"
    assert clients("s3").list_buckets()["Buckets"] == []


def test_shard_count_comes_from_KINESIS_SHARDS_and_a_new_count_says_what_it_did(aws, clients, monkeypatch, capsys):
    # given the stack's setting (docker-compose.yml passes KINESIS_SHARDS to the hook)
    monkeypatch.setenv("KINESIS_SHARDS", "2")
    assert init_resource.main(["--endpoint-url", aws]) == 0
    assert "stream    nginx-accesslog-stream: created (2 shard(s), ACTIVE)" in capsys.readouterr().out
    kinesis = clients("kinesis")
    assert kinesis.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]["OpenShardCount"] == 2
    # when provisioning runs again with another count, it reshards and says so
    monkeypatch.setenv("KINESIS_SHARDS", "3")
    assert init_resource.main(["--endpoint-url", aws]) == 0
    assert "stream    nginx-accesslog-stream: updated (2 -> 3 shard(s))" in capsys.readouterr().out
    assert kinesis.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]["OpenShardCount"] == 3
