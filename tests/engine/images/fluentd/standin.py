"""Stand-in fluentd process for the test engine's fluentd image (see the Dockerfile).

Reads the mounted /fluentd/etc/$FLUENTD_CONF as fluentd does (in_tail's path and pos_file,
the Kinesis output's stream, region and endpoint, `#{ENV['X'] || 'default'}` resolved from
the container's environment), ships with tests/support/shipper.py (the plugin's documented
behaviour, its timers from the same file), keeps the position file in fluentd's format so
fluentd/tools/drain_status.sh reads it, answers monitor_agent's /api/plugins.json for the
healthcheck, and flushes at SIGTERM (flush_at_shutdown).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CONF = Path("/fluentd/etc") / os.environ.get("FLUENTD_CONF", "fluent.conf")
os.environ.setdefault("CLP_FLUENT_CONF", str(CONF))

import boto3  # noqa: E402
from support.fluentd_conf import fluent_conf  # noqa: E402
from support.shipper import Position, Shipper  # noqa: E402

ENV_EXPRESSION = re.compile(r"""#\{ENV\['([A-Z_]+)'\] \|\| '([^']*)'\}""")


def resolve(value: str) -> str:
    return ENV_EXPRESSION.sub(lambda m: os.environ.get(m.group(1)) or m.group(2), value).strip('"')


class FluentdShipper(Shipper):
    """The shipper with in_tail's pos_file format: "<path>\\t<pos %016x>\\t<inode %016x>"."""

    def _load_position(self) -> Position | None:
        try:
            _path, pos, inode = self.pos_file.read_text().splitlines()[-1].split("\t")
        except (FileNotFoundError, IndexError, ValueError):
            return None
        return Position(int(inode, 16), int(pos, 16))

    def _save_position(self, position: Position) -> None:
        temporary = self.pos_file.with_suffix(".tmp")
        temporary.write_text(f"{self.path}\t{position.offset:016x}\t{position.inode:016x}\n")
        temporary.replace(self.pos_file)


class Monitor(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path == "/api/plugins.json"
        body = json.dumps({"plugins": [{"plugin_id": "out_kinesis", "type": "kinesis_streams_aggregated"}]})
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode() if ok else b"{}")

    def log_message(self, *args: object) -> None:
        pass


def main() -> int:
    conf = fluent_conf()
    tail = conf.one("source", **{"@type": "tail"}).params
    monitor = conf.one("source", **{"@type": "monitor_agent"}).params
    (match,) = conf.find("match")
    out = {key: resolve(value) for key, value in match.params.items()}
    kinesis = boto3.client("kinesis", endpoint_url=out["endpoint"], region_name=out["region"])
    shipper = FluentdShipper(kinesis, out["stream_name"], Path(resolve(tail["path"])), Path(resolve(tail["pos_file"])))
    server = ThreadingHTTPServer((monitor["bind"], int(monitor["port"])), Monitor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    print(f"fluentd stand-in: tailing {shipper.path} into {shipper.stream} at {out['endpoint']}", flush=True)
    shipper.start()
    stopping.wait()
    shipper.stop()
    flushed = shipper.ship_once()  # flush_at_shutdown true
    print(f"fluentd stand-in: stopped, {flushed} lines flushed at shutdown, {shipper.shipped} shipped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
