"""The Glue Data Catalog table over the bucket's records, so Athena can query them on AWS.

One database and one table: the record schema as columns (Hive JSON SerDe), and a single
partition column `dt` projected over the `YYYY/MM/DD/HH` prefixes (partition projection:
no crawler, no `MSCK REPAIR`, new hours are queryable at once). `errors/` lies outside the
projected locations, so it is not part of the table. Used by init_resource.py (`--aws`);
boto3 only, Python 3.9+, like it.
"""

from __future__ import annotations

import os
import re
from typing import Any

TABLE = "access_log"
# Partition projection enumerates every hour from here to now for a query without a `dt`
# filter: a fixed start keeps the definition the same on every run.
PROJECTION_START = "2024/01/01/00"
SERDE = "org.apache.hive.hcatalog.data.JsonSerDe"
INPUT_FORMAT = "org.apache.hadoop.mapred.TextInputFormat"  # reads .json and .json.gz alike
OUTPUT_FORMAT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"

# The record schema (init/kinesis_event_to_s3.py FIELDS), Hive types.
COLUMNS = [
    ("remote_addr", "string", "client address"),
    ("remote_user", "string", "null for -"),
    ("time_local", "string", "as logged, with its offset"),
    ("timestamp", "timestamp", "the same instant in UTC"),
    ("request", "string", "the request line as logged"),
    ("request_method", "string", "null when the request line is not METHOD URI HTTP/x"),
    ("request_uri", "string", ""),
    ("server_protocol", "string", ""),
    ("status", "int", ""),
    ("body_bytes_sent", "bigint", "null for -"),
    ("http_referer", "string", ""),
    ("http_user_agent", "string", ""),
    ("http_x_forwarded_for", "string", ""),
    ("request_time", "double", "seconds; null for lines without the main_timed fields"),
    ("upstream_response_time", "double", "seconds, summed over every upstream tried; null for none"),
    ("request_length", "bigint", "bytes"),
    ("request_id", "string", "nginx $request_id: a re-sent line repeats it (count distinct)"),
    ("host", "string", ""),
]


def database_name(bucket: str) -> str:
    """Glue names are lower case, digits and underscores: `nginx-accesslog` -> `nginx_accesslog`."""
    return re.sub(r"[^a-z0-9_]", "_", bucket.lower())


def wanted(settings: Any) -> bool:
    """On AWS always; on an emulator only when GLUE_CATALOG=1 (LocalStack's free image has no Glue)."""
    return settings.endpoint is None or os.environ.get("GLUE_CATALOG", "").strip().lower() in ("1", "true", "yes")


def table_input(bucket: str) -> dict[str, Any]:
    """The table, as Glue's CreateTable/UpdateTable take it."""
    location = f"s3://{bucket}/"
    return {
        "Name": TABLE,
        "Description": "nginx access-log records written by KinesisAccessLogToS3 (errors/ excluded)",
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {
            "classification": "json",
            "EXTERNAL": "TRUE",
            "projection.enabled": "true",
            "projection.dt.type": "date",
            "projection.dt.format": "yyyy/MM/dd/HH",
            "projection.dt.interval": "1",
            "projection.dt.interval.unit": "HOURS",
            "projection.dt.range": f"{PROJECTION_START},NOW",
            "storage.location.template": location + "${dt}/",
        },
        "PartitionKeys": [{"Name": "dt", "Type": "string", "Comment": "UTC hour, YYYY/MM/DD/HH"}],
        "StorageDescriptor": {
            "Columns": [
                dict({"Name": name, "Type": kind}, **({"Comment": comment} if comment else {}))
                for name, kind, comment in COLUMNS
            ],
            "Location": location,
            "InputFormat": INPUT_FORMAT,
            "OutputFormat": OUTPUT_FORMAT,
            "Compressed": False,
            "SerdeInfo": {
                "SerializationLibrary": SERDE,
                "Parameters": {"timestamp.formats": "yyyy-MM-dd'T'HH:mm:ss'Z'"},
            },
        },
    }


def example_query(bucket: str) -> str:
    """An Athena query to print (never run here); `dt` limits what it scans."""
    table = f'"{database_name(bucket)}"."{TABLE}"'
    where = "WHERE dt >= date_format(current_timestamp - interval '1' hour, '%Y/%m/%d/%H')"
    return " ".join(("SELECT status, count(*) AS requests FROM", table, where, "GROUP BY status ORDER BY status"))


def _comparable(table: dict[str, Any]) -> dict[str, Any]:
    """The parts of a table that we set, as Glue returns them, for drift checks."""
    descriptor = table.get("StorageDescriptor", {})
    return {
        "TableType": table.get("TableType"),
        "Parameters": {k: v for k, v in table.get("Parameters", {}).items() if k in table_input("x")["Parameters"]},
        "PartitionKeys": [(k["Name"], k["Type"]) for k in table.get("PartitionKeys", [])],
        "Columns": [(c["Name"], c["Type"]) for c in descriptor.get("Columns", [])],
        "Location": descriptor.get("Location"),
        "Formats": (descriptor.get("InputFormat"), descriptor.get("OutputFormat")),
        "SerDe": (
            descriptor.get("SerdeInfo", {}).get("SerializationLibrary"),
            descriptor.get("SerdeInfo", {}).get("Parameters", {}),
        ),
    }


def table_drift(deployed: dict[str, Any], bucket: str) -> list[str]:
    """Names of the parts of the deployed table that differ from ours."""
    have, want = _comparable(deployed), _comparable(table_input(bucket))
    return [name for name in want if have[name] != want[name]]


def ensure_catalog(aws: Any, settings: Any, report: Any) -> None:
    """Create or update the database and the table; say what happened, then how to query."""
    glue, database = aws.glue, database_name(settings.bucket)
    try:
        glue.get_database(Name=database)
        report.say("database", database, "unchanged")
    except glue.exceptions.EntityNotFoundException:
        glue.create_database(DatabaseInput={"Name": database, "Description": f"access logs in s3://{settings.bucket}"})
        report.say("database", database, "created")
    name = f"{database}.{TABLE}"
    try:
        deployed = glue.get_table(DatabaseName=database, Name=TABLE)["Table"]
    except glue.exceptions.EntityNotFoundException:
        glue.create_table(DatabaseName=database, TableInput=table_input(settings.bucket))
        report.settle("table", name, True, [], "partition projection over YYYY/MM/DD/HH")
    else:
        drift = table_drift(deployed, settings.bucket)
        if drift:
            glue.update_table(DatabaseName=database, TableInput=table_input(settings.bucket))
        report.settle("table", name, False, drift)
    print(f"Athena: {example_query(settings.bucket)}")


def catalog_status(aws: Any, settings: Any) -> tuple[bool, list[str]]:
    """Print the table's state; (fine, hints)."""
    glue, database = aws.glue, database_name(settings.bucket)
    try:
        deployed = glue.get_table(DatabaseName=database, Name=TABLE)["Table"]
    except glue.exceptions.EntityNotFoundException:
        print(f"table     {database}.{TABLE}: missing")
        return False, ["the Glue table is missing: run init/init_resource.py --aws"]
    drift = table_drift(deployed, settings.bucket)
    state = f"differs ({', '.join(drift)})" if drift else "present, partition projection over YYYY/MM/DD/HH"
    print(f"table     {database}.{TABLE}: {state}")
    print(f"athena    {example_query(settings.bucket)}")
    return not drift, ["the Glue table differs: run init/init_resource.py --aws to update it"] if drift else []


def teardown_catalog(aws: Any, settings: Any, report: Any) -> None:
    """Delete our table, then the database if nothing else is left in it."""
    glue, database = aws.glue, database_name(settings.bucket)
    try:
        glue.delete_table(DatabaseName=database, Name=TABLE)
        report.say("table", f"{database}.{TABLE}", "deleted")
    except glue.exceptions.EntityNotFoundException:
        report.say("table", f"{database}.{TABLE}", "absent")
    try:
        others = glue.get_tables(DatabaseName=database).get("TableList", [])
    except glue.exceptions.EntityNotFoundException:
        report.say("database", database, "absent")
        return
    if others:
        report.say("database", database, "kept", f"{len(others)} other table(s) in it")
    else:
        glue.delete_database(Name=database)
        report.say("database", database, "deleted")
