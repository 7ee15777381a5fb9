"""Draw image/structure.png, the architecture diagram, with the `diagrams` package.

    pip install diagrams==0.25.1 && apt-get install graphviz
    python3 image/make_structure.py

Regenerate it whenever the architecture changes.
"""

from __future__ import annotations

import os
from pathlib import Path

from diagrams import Cluster, Diagram, Edge
from diagrams.aws.analytics import KinesisDataStreams
from diagrams.aws.compute import Lambda
from diagrams.aws.security import IAMRole
from diagrams.aws.storage import S3
from diagrams.onprem.aggregator import Fluentd
from diagrams.onprem.client import User
from diagrams.onprem.network import Nginx

HERE = Path(__file__).resolve().parent


def main() -> None:
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
            shipper = Fluentd("fluentd\nin_tail -> kinesis_streams")
            with Cluster("LocalStack (or AWS)"):
                stream = KinesisDataStreams("Kinesis\nnginx-accesslog-stream")
                function = Lambda("Lambda\nKinesisAccessLogToS3")
                role = IAMRole("kinesis-lambda-role")
                bucket = S3("S3 nginx-accesslog\nYYYY/MM/DD/HH/*.json\nerrors/")
        browser >> Edge(label="HTTP") >> web
        web >> Edge(label="one line per request") >> shipper
        shipper >> Edge(label='PutRecords {"message": line}') >> stream
        stream >> Edge(label="event source mapping\nbatches of 1,000, 1 s") >> function
        function >> Edge(label="JSON Lines per hour") >> bucket
        role - Edge(style="dashed") - function


if __name__ == "__main__":
    main()
