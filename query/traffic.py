#!/usr/bin/env python3
"""Send realistic traffic through the stack's nginx, so there is something to query.

    python3 query/traffic.py --url http://localhost:80 --rate 20 --duration 30

A mix like a small public site's: pages, query strings, an API (GET, POST, DELETE),
redirects (301), missing pages and scanners (404), server errors (500, 503), HEAD
requests, browsers, bots and curl, some behind a proxy (`X-Forwarded-For`), some with a
referer, and about 1 in 100 malformed (junk, TLS bytes, a bad method: nginx answers 400
and logs them, the pipeline keeps them). Bounded: at most --count requests (default
rate x duration) and --duration seconds. Standard library only: runs in any Python 3.11.
"""

from __future__ import annotations

import argparse
import http.client
import random
import socket
import sys
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

MAX_RATE, MAX_DURATION, MAX_COUNT = 1000.0, 3600.0, 1_000_000

AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/8.5.0",
    "python-requests/2.32.3",
]
REFERERS = ["https://www.google.com/", "https://news.ycombinator.com/", "https://example.com/blog/logs"]
WORDS = ["shoes", "red+dress", "caf%C3%A9", "laptop", "logs", "kinesis", "a%20b"]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes = b""
    raw: bytes = b""  # a malformed request, sent as these bytes


def pick(rng: random.Random) -> Request:
    """One request of the mix (the demo routes are in nginx/templates/default.conf.template)."""
    n, roll = rng.randrange(1, 500), rng.random()
    if roll < 0.01:
        return Request(
            "RAW",
            "(malformed)",
            raw=rng.choice(
                [
                    b"HELLO\r\n\r\n",
                    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(16)) + b"\r\n\r\n",
                    b"G@T /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
                ]
            ),
        )
    choices = [
        (0.22, lambda: Request("GET", "/")),
        (0.08, lambda: Request("GET", "/index.html")),
        (0.05, lambda: Request("GET", f"/?utm_source=newsletter&utm_campaign=c{n % 7}")),
        (0.04, lambda: Request("HEAD", "/")),
        (0.14, lambda: Request("GET", f"/v1/items/{n}")),
        (0.08, lambda: Request("GET", f"/v1/search?q={rng.choice(WORDS)}&page={n % 5 + 1}")),
        (0.06, lambda: Request("POST", "/v1/orders", body=f'{{"item":{n},"qty":{n % 3 + 1}}}'.encode())),
        (0.02, lambda: Request("DELETE", f"/v1/orders/{n}")),
        (0.08, lambda: Request("GET", f"/old/products/{n}")),
        (0.04, lambda: Request("GET", "/blog")),
        (0.09, lambda: Request("GET", f"/products/{n}.html")),
        (0.03, lambda: Request("GET", rng.choice(["/wp-login.php", "/.env", "/admin/config.php", "/.git/HEAD"]))),
        (0.03, lambda: Request("GET", "/favicon.ico")),
        (0.03, lambda: Request("POST", "/v1/checkout")),
        (0.01, lambda: Request("GET", "/v1/status")),
    ]
    weights = [w for w, _ in choices]
    return rng.choices([make for _, make in choices], weights)[0]()


def headers_for(rng: random.Random) -> dict[str, str]:
    headers = {"User-Agent": rng.choice(AGENTS), "Connection": "close"}
    if rng.random() < 0.3:
        headers["Referer"] = rng.choice(REFERERS)
    if rng.random() < 0.2:
        headers["X-Forwarded-For"] = f"203.0.113.{rng.randrange(1, 255)}" + (", 10.0.0.2" if rng.random() < 0.3 else "")
    return headers


@dataclass
class Tally:
    """Answers so far, by status; thread-safe."""

    statuses: Counter = field(default_factory=Counter)
    failed: int = 0
    malformed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int | None, malformed: bool) -> None:
        with self.lock:
            if status is None:
                self.failed += 1
            else:
                self.statuses[status] += 1
            self.malformed += malformed

    def done(self) -> int:
        return sum(self.statuses.values()) + self.failed

    def text(self) -> str:
        classes = Counter(f"{s // 100}xx" for s in self.statuses.elements())
        parts = [f"{name} {count}" for name, count in sorted(classes.items())]
        return ", ".join([*parts, f"malformed {self.malformed}", f"failed {self.failed}"])


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    base: str


def parse_url(text: str) -> Target:
    """`http://host[:port][/base]` -> where to send; ValueError for anything else."""
    url = urllib.parse.urlsplit(text)
    if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
        raise ValueError(f"not an http(s) base URL: {text!r} (example: http://localhost:80)")
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    return Target(url.scheme, url.hostname, port, url.path.rstrip("/"))


def send(target: Target, request: Request, headers: dict[str, str], timeout: float = 5.0) -> int | None:
    """One request on its own connection; its status, or None when it got no answer."""
    try:
        if request.raw:
            with socket.create_connection((target.host, target.port), timeout=timeout) as sock:
                sock.sendall(request.raw)
                head = sock.recv(64).split(b" ", 2)
            return int(head[1]) if len(head) > 1 and head[1].isdigit() else None
        kind = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
        connection = kind(target.host, target.port, timeout=timeout)
        try:
            connection.request(request.method, target.base + request.path, request.body or None, headers)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()
    except (OSError, http.client.HTTPException):
        return None


def run(target: Target, rate: float, duration: float, count: int, seed: int | None, out=sys.stdout) -> Tally:
    """Open loop: request i leaves at start + i/rate, until `count` or `duration`."""
    rng = random.Random(seed)  # noqa: S311 - a traffic mix, not a secret
    tally = Tally()
    live = out.isatty()
    start = time.monotonic()
    next_note = start + (1 if live else 5)
    sent = 0
    with ThreadPoolExecutor(max_workers=min(64, 4 + int(rate // 20))) as pool:
        while sent < count:
            due = start + sent / rate
            now = time.monotonic()
            if due - start >= duration or now - start >= duration:
                break
            if due > now:
                time.sleep(min(due - now, 0.05))
                continue
            request = pick(rng)
            headers = headers_for(rng)
            future = pool.submit(send, target, request, headers)
            future.add_done_callback(lambda f, raw=bool(request.raw): tally.add(f.result(), raw))
            sent += 1
            if now >= next_note:
                note = f"traffic: {sent} sent, {tally.done()} answered, {sent / (now - start):.0f}/s ({tally.text()})"
                print(("\r" + note) if live else note, end="" if live else "\n", file=out, flush=True)
                next_note = now + (1 if live else 5)
    elapsed = time.monotonic() - start
    if live:
        print(file=out)
    print(
        f"traffic: sent {sent} requests in {elapsed:.1f} s to {target.scheme}://{target.host}:{target.port}"
        f"{target.base} ({tally.text()})",
        file=out,
        flush=True,
    )
    return tally


def _bounded(kind: type, low: float, high: float):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low:g} to {high:g}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="traffic.py", description="Send realistic requests through nginx.")
    parser.add_argument("--url", default="http://localhost:80", help="nginx's base URL (default %(default)s)")
    parser.add_argument("--rate", type=_bounded(float, 0.1, MAX_RATE), default=20.0, help="requests a second (20)")
    parser.add_argument(
        "--duration", type=_bounded(float, 0.1, MAX_DURATION), default=30.0, help="seconds, at most (30)"
    )
    parser.add_argument("--count", type=_bounded(int, 1, MAX_COUNT), help="requests, at most (rate x duration)")
    parser.add_argument("--seed", type=int, help="the same mix again")
    args = parser.parse_args(argv)
    try:
        target = parse_url(args.url)
    except ValueError as exc:
        parser.error(str(exc))
    count = args.count or max(1, round(args.rate * args.duration))
    try:
        tally = run(target, args.rate, args.duration, count, args.seed)
    except KeyboardInterrupt:
        print("\ntraffic: interrupted", file=sys.stderr)
        return 130
    if tally.failed and not tally.statuses:
        print(f"traffic: error: no answer from {args.url}: is the stack running? (./start.sh)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
