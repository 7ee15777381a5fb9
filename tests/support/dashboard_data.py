"""A generated traffic sample for the dashboard's tests, written by the real handler."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from support.events import KinesisRecord, fluentd_message, kinesis_event
from support.query_data import QUERY, Writer, nginx_line, timed_line

ASSETS = QUERY / "assets"
NOW = datetime(2026, 11, 26, 17, 40, 30, tzinfo=UTC)
PATHS = ["/", "/index.html", "/v1/cart", "/v1/checkout", "/search?q=x", "/missing"]
AGENTS = ["curl/8.5.0", "Mozilla/5.0 Firefox/133.0", "Googlebot/2.1"]
CLIENTS = ["127.0.0.1", "10.0.0.7", "192.168.1.20", "203.0.113.9"]
STATUSES = [200, 200, 200, 304, 404, 500, 503, 200, 101]


@dataclass(frozen=True)
class Request:
    at: datetime
    path: str
    status: int
    agent: str
    client: str

    def line(self) -> str:
        return (
            f'{self.client} - - [{self.at:%d/%b/%Y:%H:%M:%S} +0000] "GET {self.path} HTTP/1.1" {self.status} 612 '
            f'"-" "{self.agent}" "-"'
        )


def sample(count: int = 400, span: timedelta = timedelta(hours=7)) -> list[Request]:
    """Requests spread over the `span` before NOW, deterministic, in time order."""
    step = span / count
    return [
        Request(
            NOW - span + step * (n + 0.5),
            PATHS[(n * 7) % len(PATHS)],
            STATUSES[(n * 5) % len(STATUSES)],
            AGENTS[(n * 3) % len(AGENTS)] if n % 4 else AGENTS[0],
            CLIENTS[(n * 11) % len(CLIENTS)],
        )
        for n in range(count)
    ]


class Traffic:
    """Writes requests (and unparsable lines) through the deployed handler, in batches
    that arrive a second after their last request."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.sequence = 49000000000000000000
        self.requests: list[Request] = []
        self.garbage: list[tuple[datetime, str]] = []

    def write(self, requests: list[Request], batch: int = 25) -> None:
        for first in range(0, len(requests), batch):
            chunk = requests[first : first + batch]
            self._put([r.line() for r in chunk], chunk[-1].at + timedelta(seconds=1))
        self.requests.extend(requests)

    def write_garbage(self, at: datetime, lines: list[str]) -> None:
        self._put(lines, at)
        self.garbage.extend((at, line) for line in lines)

    def _put(self, lines: list[str], arrival: datetime) -> None:
        records = []
        for line in lines:
            self.sequence += 1
            records.append(KinesisRecord(fluentd_message(line), str(self.sequence), arrival.timestamp()))
        assert self.handler.handler(kinesis_event(records)) == {"batchItemFailures": []}


def write_traffic(writer: Writer) -> None:
    """Three hours of requests with ids, a re-send of some, lines without an id, junk."""
    requests = sample(300, timedelta(hours=3))
    lines = [timed_line(r.at, r.path, f"{n:032x}", 0.001 * (n % 40)) for n, r in enumerate(requests)]
    for first in range(0, len(lines), 30):
        writer.batch(lines[first : first + 30], arrival=requests[min(first + 29, len(lines) - 1)].at)
    writer.batch(lines[100:110], arrival=requests[120].at)  # fluentd's re-send: same ids
    writer.batch([nginx_line(NOW - timedelta(minutes=5), "/no-id")] * 2, arrival=NOW - timedelta(minutes=5))
    writer.batch(["not an access log line"], arrival=NOW - timedelta(minutes=20))
