"""Records for the query tools' tests, written by the deployed handler as in the stack."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from support.events import KinesisRecord, fluentd_message, kinesis_event

QUERY = Path(__file__).resolve().parents[2] / "query"


def nginx_line(at: datetime, path: str = "/", status: int = 200, agent: str = "curl/8.5.0", method: str = "GET") -> str:
    """One line in nginx's `main` format, logged at `at` (UTC)."""
    return (
        f'127.0.0.1 - - [{at.astimezone(UTC):%d/%b/%Y:%H:%M:%S} +0000] "{method} {path} HTTP/1.1" {status} 612 '
        f'"-" "{agent}" "-"'
    )


def timed_line(at: datetime, path: str, request_id: str, request_time: float = 0.004, upstream: str = "-") -> str:
    """One line in the stack's `main_timed` format (nginx/templates/default.conf.template)."""
    return f'{nginx_line(at, path)} rt={request_time:.3f} urt="{upstream}" rl=80 rid={request_id} host="localhost"'


class Writer:
    """Sends lines through the deployed handler, as one Kinesis batch per call."""

    def __init__(self, handler_module) -> None:
        self.handler = handler_module
        self.sequence = 1000

    def batch(self, lines: list[str], arrival: datetime, compression: str = "") -> None:
        records = []
        for line in lines:
            self.sequence += 1
            records.append(KinesisRecord(fluentd_message(line), str(self.sequence), arrival.timestamp()))
        self.handler.COMPRESSION = compression
        answer = self.handler.handler(kinesis_event(records))
        assert answer == {"batchItemFailures": []}
