"""Where things are in the bucket: the function writes there, the host tools read there.

Standard library only, Python 3.9+: it ships in the function's package beside
kinesis_event_to_s3.py (init_resource.py PACKAGE_FILES), and pipeline_cli.py imports it.
"""

RECORD_NAME = "nginx_access_log"  # YYYY/MM/DD/HH/nginx_access_log_<arrival>_<shard>_<first seq>.json
ERROR_PREFIX = "errors/"  # lines that are not records, under the hour of their arrival
CONTROL_PREFIX = "_pipeline/"  # control objects, never log data: `_` keeps them out of Athena
DRAIN_PREFIX = CONTROL_PREFIX + "drain/"


def drain_ack_key(drain_id: str, shard_id: str) -> str:
    """Where the function acknowledges a drain marker of one shard, and the drain looks."""
    return f"{DRAIN_PREFIX}{drain_id}/{shard_id}.json"
