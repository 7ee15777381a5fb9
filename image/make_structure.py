"""Draw image/structure.png, the architecture diagram, with the `diagrams` package.

    pip install diagrams==0.25.1 && apt-get install graphviz
    python3 image/make_structure.py

The labels come from where each fact is set (fluentd/conf/fluent.conf, init_resource.py's
mapping and names) and are stored in the PNG (a tEXt chunk): tests/test_structure.py
fails when a setting changed and the picture was not drawn again.
"""

from __future__ import annotations

import json
import os
import re
import struct
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PICTURE = HERE / "structure.png"
LABELS_KEY = "pipeline-labels"  # the PNG tEXt keyword holding the labels it was drawn with


def fluent_output() -> dict[str, str]:
    """The output's @type and buffer timers, as fluent.conf sets them."""
    text = (ROOT / "fluentd" / "conf" / "fluent.conf").read_text()
    match = text[text.index("<match nginx.access>") :]
    found = {}
    for name in ("@type", "flush_interval"):
        found[name] = re.search(rf"^\s*{name}\s+(\S+)", match, re.M).group(1)
    return found


def labels() -> dict[str, str]:
    """Every label of the diagram that states a setting."""
    sys.path.insert(0, str(ROOT / "init"))
    try:
        import init_resource
        import pipeline_target
    finally:
        sys.path.pop(0)
    output = fluent_output()
    aggregated = output["@type"] == "kinesis_streams_aggregated"
    mapping = init_resource.MAPPING
    window = mapping["MaximumBatchingWindowInSeconds"]
    names = {name: value for name, (_, value) in pipeline_target.DEFAULTS.items()}
    return {
        "fluentd": f"fluentd\nin_tail -> {output['@type']}",
        "put": (
            f"PutRecords every {output['flush_interval']} s:\none record per flush (KPL aggregated)"
            if aggregated
            else f'PutRecords every {output["flush_interval"]} s:\none record per line {{"message": line}}'
        ),
        "stream": f"Kinesis\n{names['stream']}",
        "function": f"Lambda\n{names['function']}",
        "role": names["role"],
        "bucket": f"S3 {names['bucket']}\nYYYY/MM/DD/HH/*.json\nerrors/",
        "mapping": (
            f"event source mapping\nbatches of up to {mapping['BatchSize']:,}, "
            + ("at each poll" if window == 0 else f"window {window} s")
        ),
        "write": "one object per batch and hour\n(JSON Lines)",
    }


def drawn_labels(png: bytes) -> dict[str, str] | None:
    """The labels stored in a picture this script drew, or None."""
    at = 8
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at : at + 8])
        data = png[at + 8 : at + 8 + length]
        if kind == b"tEXt" and data.startswith(LABELS_KEY.encode() + b"\0"):
            return json.loads(data.split(b"\0", 1)[1].decode("latin-1"))
        at += 12 + length
    return None


def with_labels(png: bytes, found: dict[str, str]) -> bytes:
    """The PNG with a tEXt chunk after IHDR holding the labels (JSON, ASCII)."""
    data = LABELS_KEY.encode() + b"\0" + json.dumps(found, sort_keys=True).encode("ascii")
    chunk = struct.pack(">I4s", len(data), b"tEXt") + data
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + data) & 0xFFFFFFFF)
    header_end = 8 + 12 + struct.unpack(">I", png[8:12])[0]
    return png[:header_end] + chunk + png[header_end:]


def main() -> None:
    from diagrams import Cluster, Diagram, Edge
    from diagrams.aws.analytics import KinesisDataStreams
    from diagrams.aws.compute import Lambda
    from diagrams.aws.security import IAMRole
    from diagrams.aws.storage import S3
    from diagrams.onprem.aggregator import Fluentd
    from diagrams.onprem.client import User
    from diagrams.onprem.network import Nginx

    found = labels()
    os.chdir(HERE)  # diagrams writes next to the working directory
    graph = {"fontsize": "20", "pad": "0.4", "nodesep": "0.7", "ranksep": "0.9"}
    with Diagram(
        "centralized-logging-pipeline",
        filename="structure",
        outformat="png",
        show=False,
        direction="LR",
        graph_attr=graph,
    ):
        browser = User("browser\nhttp://localhost")
        with Cluster("docker compose"):
            web = Nginx("nginx\naccess.log (main)")
            shipper = Fluentd(found["fluentd"])
            with Cluster("LocalStack (or AWS)"):
                stream = KinesisDataStreams(found["stream"])
                function = Lambda(found["function"])
                role = IAMRole(found["role"])
                bucket = S3(found["bucket"])
        browser >> Edge(label="HTTP") >> web
        web >> Edge(label="one line per request") >> shipper
        shipper >> Edge(label=found["put"]) >> stream
        stream >> Edge(label=found["mapping"]) >> function
        function >> Edge(label=found["write"]) >> bucket
        role - Edge(style="dashed") - function
    PICTURE.write_bytes(with_labels(PICTURE.read_bytes(), found))


if __name__ == "__main__":
    main()
