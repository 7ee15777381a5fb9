"""Listing a prefix (Bucket.listed, which the query tool, dashboard, compactor and tail all
use): every page of S3's, in key order, from a key on."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import boto3
import bucket_reader

HOUR = "2026/11/26/17/"


def requests_of(client) -> list[str]:
    """The ListObjectsV2 requests the client sends from now on (their URLs)."""
    sent: list[str] = []
    client.meta.events.register("before-call.s3.ListObjectsV2", lambda params, **_: sent.append(params["url"]))
    return sent


def fill(client, bucket: str, count: int) -> dict[str, str]:
    """`count` small objects in HOUR, and one outside it; {key: ETag} of HOUR's."""
    client.create_bucket(Bucket=bucket)
    keys = [f"{HOUR}nginx_access_log_{n:05d}.json" for n in range(count)]

    def put(key: str) -> tuple[str, str]:
        return key, client.put_object(Bucket=bucket, Key=key, Body=key.encode())["ETag"]

    with ThreadPoolExecutor(16) as pool:
        written = dict(pool.map(put, keys))
    client.put_object(Bucket=bucket, Key="2026/11/26/18/other.json", Body=b"{}")
    return written


def test_an_hour_longer_than_a_page_is_listed_whole_and_from_a_key_on(aws):
    client = boto3.client("s3", endpoint_url=aws, region_name="us-east-1")
    written = fill(client, "nginx-accesslog", 1200)
    sent = requests_of(client)
    bucket = bucket_reader.Bucket(client, "nginx-accesslog")
    assert bucket.etags(HOUR) == written
    assert list(bucket.etags(HOUR)) == sorted(written)
    assert len(sent) == 4  # S3's pages are 1,000 keys: two a listing
    # after a key, as the dashboard and tail list an hour's newest objects
    after = f"{HOUR}nginx_access_log_00999.json"
    assert [i["Key"] for i in bucket.listed(HOUR, after)] == sorted(k for k in written if k > after)
