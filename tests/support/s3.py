"""Reading what the handler wrote to a bucket."""

from __future__ import annotations

import json


def bucket_objects(s3, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under `prefix`, key -> body, in key order."""
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


def json_lines(body: bytes) -> list[dict]:
    """A JSON Lines object's records; it must end with a newline."""
    assert body.endswith(b"\n")
    return [json.loads(line) for line in body.decode("utf-8").splitlines()]
