"""The Glue table for Athena: its definition, and init_resource converging it on moto server's Glue."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import boto3
import glue_catalog
import init_resource
import pytest
from kinesis_event_to_s3 import FIELDS

DATABASE, TABLE = "nginx_accesslog", "access_log"


def test_table_has_the_record_columns_typed_and_projects_the_hour_prefixes():
    table = glue_catalog.table_input("my-logs")
    columns = {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}
    assert list(columns) == list(FIELDS)
    assert columns["status"] == "int" and columns["body_bytes_sent"] == "bigint" and columns["timestamp"] == "timestamp"
    assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == "org.apache.hive.hcatalog.data.JsonSerDe"
    assert table["PartitionKeys"] == [{"Name": "dt", "Type": "string", "Comment": "UTC hour, YYYY/MM/DD/HH"}]
    parameters = table["Parameters"]
    assert parameters["projection.enabled"] == "true" and parameters["projection.dt.type"] == "date"
    assert parameters["projection.dt.format"] == "yyyy/MM/dd/HH"
    assert (parameters["projection.dt.interval"], parameters["projection.dt.interval.unit"]) == ("1", "HOURS")
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\d\d,NOW", parameters["projection.dt.range"])
    # every partition is an hour prefix of records: errors/ is never one of them
    assert parameters["storage.location.template"] == "s3://my-logs/${dt}/"
    assert glue_catalog.database_name("My-Logs.2") == "my_logs_2"


def test_only_on_aws_unless_asked(monkeypatch):
    class Settings:
        endpoint = "http://localhost:4566"

    monkeypatch.delenv("GLUE_CATALOG", raising=False)
    assert not glue_catalog.wanted(Settings())
    Settings.endpoint = None
    assert glue_catalog.wanted(Settings())


@pytest.fixture
def glue_run(aws, capsys, monkeypatch):
    """init_resource.main against moto, with the Glue table asked for (as --aws would)."""
    monkeypatch.setenv("GLUE_CATALOG", "1")

    def _run(*args: str) -> tuple[int, str]:
        code = init_resource.main(["--endpoint-url", aws, "--wait-timeout", "10", *args])
        return code, capsys.readouterr().out

    return _run


def test_converge_creates_the_table_then_changes_nothing_and_prints_a_query(aws, glue_run):
    glue = boto3.client("glue", endpoint_url=aws, region_name="us-east-1")
    code, out = glue_run()
    assert code == 0
    assert f"database  {DATABASE}: created" in out and f"table     {DATABASE}.{TABLE}: created" in out
    assert f'Athena: SELECT status, count(*) AS requests FROM "{DATABASE}"."{TABLE}" WHERE dt >= ' in out  # noqa: S608
    deployed = glue.get_table(DatabaseName=DATABASE, Name=TABLE)["Table"]
    assert deployed["Parameters"]["storage.location.template"] == "s3://nginx-accesslog/${dt}/"
    assert glue_catalog.table_drift(deployed, "nginx-accesslog") == []
    code, out = glue_run()
    assert code == 0 and f"{DATABASE}.{TABLE}: unchanged" in out and "Nothing to change" in out
    code, out = glue_run("--status")
    assert code == 0
    assert f"table     {DATABASE}.{TABLE}: present, partition projection over YYYY/MM/DD/HH" in out
    assert "athena    SELECT status" in out


def test_a_changed_table_is_put_back(aws, glue_run):
    glue = boto3.client("glue", endpoint_url=aws, region_name="us-east-1")
    glue_run()
    changed = glue_catalog.table_input("nginx-accesslog")
    changed["Parameters"]["projection.enabled"] = "false"
    changed["StorageDescriptor"]["Columns"][8]["Type"] = "string"
    glue.update_table(DatabaseName=DATABASE, TableInput=changed)
    code, out = glue_run("--status")
    assert code == 1 and "differs (Parameters, Columns)" in out
    code, out = glue_run()
    assert code == 0 and f"{DATABASE}.{TABLE}: updated (Parameters, Columns)" in out
    assert glue_catalog.table_drift(glue.get_table(DatabaseName=DATABASE, Name=TABLE)["Table"], "nginx-accesslog") == []


def test_teardown_removes_table_and_database_and_is_idempotent(aws, glue_run):
    glue = boto3.client("glue", endpoint_url=aws, region_name="us-east-1")
    glue_run()
    code, out = glue_run("--teardown")
    assert code == 0 and f"{DATABASE}.{TABLE}: deleted" in out and f"database  {DATABASE}: deleted" in out
    assert glue.get_databases()["DatabaseList"] == []
    code, out = glue_run("--teardown")
    assert code == 0 and f"{DATABASE}.{TABLE}: absent" in out and f"database  {DATABASE}: absent" in out
    code, out = glue_run("--status")
    assert code == 1 and f"{DATABASE}.{TABLE}: missing" in out


def test_teardown_keeps_a_database_that_holds_other_tables(aws, glue_run):
    glue = boto3.client("glue", endpoint_url=aws, region_name="us-east-1")
    glue_run()
    other = glue_catalog.table_input("nginx-accesslog") | {"Name": "mine"}
    glue.create_table(DatabaseName=DATABASE, TableInput=other)
    code, out = glue_run("--teardown")
    assert code == 0 and f"database  {DATABASE}: kept (1 other table(s) in it)" in out
    assert [t["Name"] for t in glue.get_tables(DatabaseName=DATABASE)["TableList"]] == ["mine"]


def test_emulator_runs_leave_glue_alone(aws, run_plain):
    code, out = run_plain()
    assert code == 0 and "table" not in out and "Athena" not in out
    assert boto3.client("glue", endpoint_url=aws, region_name="us-east-1").get_databases()["DatabaseList"] == []


@pytest.fixture
def run_plain(aws, capsys, monkeypatch):
    monkeypatch.delenv("GLUE_CATALOG", raising=False)

    def _run(*args: str) -> tuple[int, str]:
        code = init_resource.main(["--endpoint-url", aws, "--wait-timeout", "10", *args])
        return code, capsys.readouterr().out

    return _run


def test_module_is_valid_python_3_9():
    # init_resource.py imports it, and runs on Python 3.9 (LocalStack hosts, older laptops)
    ast.parse(Path(glue_catalog.__file__).read_text(), feature_version=(3, 9))
