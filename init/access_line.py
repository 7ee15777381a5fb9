"""One access-log line -> its record as JSON: nginx `combined`, `main`, and the stack's
`main_timed` (docs/request-timing.md). Pure functions, standard library only; part of the
function's package (init_resource.py PACKAGE_FILES).
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

# Seconds as nginx writes them (`%T.%03M`: `0.004`), each a valid JSON number as it stands.
_SECONDS = r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?"
# $upstream_response_time: `-` (no upstream), or one time per upstream tried, `, ` between
# servers of one group and ` : ` between groups (an internal redirect); a server not
# reached may read `-` inside the list.
_UPSTREAM = rf"(?:{_SECONDS}|-)(?:(?:, | : )(?:{_SECONDS}|-))*"


def _line_pattern(content: str, quote: str = '"', timed: bool = False) -> str:
    """nginx's `combined` format, plus `main`'s optional `"$http_x_forwarded_for"`; `timed`:
    then the tail of the stack's `main_timed` format (nginx/templates/default.conf.template):
    ` rt=$request_time urt="$upstream_response_time" rl=$request_length rid=$request_id host="$host"`.

    `content` is what may stand between the quotes of a field, `quote` what a quote is.
    `$request` is split into method, URI and protocol when it is `METHOD URI HTTP/x[.y]`
    (the URI may hold spaces: the protocol is the last word); else those groups are None.
    """
    quoted = f"{quote}({content}){quote}"
    request = rf"{quote}((?:([A-Z_-]+) (?=\S)({content}) (HTTP/[0-9]+(?:\.[0-9]+)?))|{content}){quote}"
    return (
        r'([0-9A-Fa-f.:]+|unix:) - ([^\s"]+) '  # $remote_addr - $remote_user
        r"\[([0-9]{2}/[A-Z][a-z]{2}/[0-9]{4}:[0-9]{2}:[0-5][0-9]:[0-5][0-9] [+-][0-9]{4})\] "  # [$time_local]
        + request  # "$request"
        + r" ([0-9]{3}) (0|[1-9][0-9]*|-) "  # $status $body_bytes_sent
        + quoted  # "$http_referer"
        + " "
        + quoted  # "$http_user_agent"
        + f"(?: {quoted})?"  # "$http_x_forwarded_for"
        + (
            f" rt=({_SECONDS}|-) urt={quote}({_UPSTREAM}){quote} rl=(0|[1-9][0-9]*|-)"
            + rf' rid=([^\s"\\]+) host={quoted}'  # the main_timed tail
            if timed
            else ""
        )
    )


# A field as nginx (`\xHH`) or Apache (`\"`, `\\`) escapes it: no bare quote inside.
_ESCAPED = r'[^"\\]*(?:\\.[^"\\]*)*'
LINE_RE = re.compile(_line_pattern(_ESCAPED), re.DOTALL)
# The same for a line without backslashes, where it means `[^"]*`: three times faster in `re`.
_PLAIN_LINE_RE = re.compile(_line_pattern(r'[^"]*'), re.DOTALL)
# Each again with the main_timed tail, tried first on lines that hold ` rt=` (a separate
# pattern keeps combined/main lines as fast as before: no optional tail to try).
_TIMED_MARK = " rt="
_TIMED_LINE_RE = re.compile(_line_pattern(_ESCAPED, timed=True), re.DOTALL)
_PLAIN_TIMED_RE = re.compile(_line_pattern(r'[^"]*', timed=True), re.DOTALL)
# The same again, read straight from fluentd's JSON `{"message":"<line>"}\n` of such a line,
# where each of the line's quotes is `\"`: the fields come out as valid JSON already.
_FLUENTD_HEAD, _FLUENTD_TAIL = '{"message":"', '"}\n'
_FLUENTD_PLAIN_RE = re.compile(
    re.escape(_FLUENTD_HEAD) + _line_pattern(r'[^"]*', r'\\"') + re.escape(_FLUENTD_TAIL), re.DOTALL
)
_FLUENTD_TIMED_RE = re.compile(
    re.escape(_FLUENTD_HEAD) + _line_pattern(r'[^"]*', r'\\"', timed=True) + re.escape(_FLUENTD_TAIL), re.DOTALL
)


def _fullmatch(text: str, main: re.Pattern[str], timed: re.Pattern[str]) -> re.Match[str] | None:
    """The line by the main_timed pattern when it may be one, else by combined/main's."""
    if _TIMED_MARK in text:
        match = timed.fullmatch(text)
        if match is not None:
            return match
    return main.fullmatch(text)


_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}

# Every record's keys; a main_timed line's record also has TIMING_FIELDS (the tables read
# them as null for the others).
MAIN_FIELDS = (
    "remote_addr",
    "remote_user",
    "time_local",
    "timestamp",
    "request",
    "request_method",
    "request_uri",
    "server_protocol",
    "status",
    "body_bytes_sent",
    "http_referer",
    "http_user_agent",
    "http_x_forwarded_for",
)
TIMING_FIELDS = ("request_time", "upstream_response_time", "request_length", "request_id", "host")
FIELDS = MAIN_FIELDS + TIMING_FIELDS


def _utc_hour_start(key: str) -> datetime | None:
    """`27/May/2020:10 +0330` (a local hour and offset) -> when it starts, in UTC; None
    for no such hour (31/Feb, hour 25, an offset of a day or more)."""
    month = _MONTHS.get(key[3:6])
    if month is None:
        return None
    sign = -1 if key[15] == "-" else 1
    offset = timedelta(hours=int(key[16:18]), minutes=int(key[18:20]))
    try:
        local = datetime(int(key[7:11]), month, int(key[0:2]), int(key[12:14]), tzinfo=timezone(sign * offset))
    except ValueError:
        return None
    return local.astimezone(UTC)


# Per local hour and offset: the UTC minute at which that local hour starts, and the UTC
# hour (ISO prefix, S3 prefix) of its first and of its next hour.
_Hour = tuple[int, tuple[str, str], tuple[str, str]]
_hours: dict[str, _Hour | None] = {}


def _utc_hour(key: str) -> _Hour | None:
    """For `27/May/2020:10 +0330`: (30, (`2020-05-27T06`, `2020/05/27/06`), (`...T07`, ...)).

    Cached: it is the same for every line of that hour. None when no such hour exists.
    """
    if len(_hours) >= 4096:
        _hours.clear()
    start = _utc_hour_start(key)
    if start is None:
        hour = None
    else:
        after = start + timedelta(hours=1)
        hour = (
            start.minute,
            (start.strftime("%Y-%m-%dT%H"), start.strftime("%Y/%m/%d/%H")),
            (after.strftime("%Y-%m-%dT%H"), after.strftime("%Y/%m/%d/%H")),
        )
    _hours[key] = hour
    return hour


def utc_instant(time_local: str) -> tuple[str, str] | None:
    """`27/May/2020:10:23:31 +0200` -> (`2020-05-27T08:23:31Z`, `2020/05/27/08`), or None.

    Only the local hour is converted (once per hour and offset); minute and second are
    added to it. Minutes and seconds above 59 never get here: the line pattern admits
    00-59 only.
    """
    key = time_local[:14] + time_local[20:]
    hour = _hours[key] if key in _hours else _utc_hour(key)
    if hour is None:
        return None
    if hour[0] == 0:  # an offset of whole hours: minute and second carry over as written
        return f"{hour[1][0]}{time_local[14:20]}Z", hour[1][1]
    minute = hour[0] + int(time_local[15:17])
    iso, path = hour[1] if minute < 60 else hour[2]
    return f"{iso}:{minute % 60:02d}:{time_local[18:20]}Z", path


def line_to_json(line: str) -> tuple[str, str] | None:
    """One nginx `combined`/`main` line -> (hour prefix, its record as a JSON object); None
    for any other line. Strings need JSON escaping only when the line holds a backslash or
    a control character; otherwise quoting them is enough.
    """
    plain = "\\" not in line and line.isprintable()
    match = _fullmatch(line, _PLAIN_LINE_RE, _PLAIN_TIMED_RE) if plain else _fullmatch(line, LINE_RE, _TIMED_LINE_RE)
    return None if match is None else _record_json(match.groups(), _quote if plain else encode_basestring)


def _record_json(groups: tuple[str | None, ...], quote: Callable[[str], str]) -> tuple[str, str] | None:
    """(hour prefix, JSON object) from a line pattern's groups: keys in schema order, UTF-8
    kept readable, written straight from the strings (the hot path: no dict, no dumps)."""
    addr, user, time_local, request, method, uri, protocol, status, body, referer, agent, forwarded = groups[:12]
    instant = utc_instant(time_local)
    if instant is None:
        return None
    if method is None:
        request_parts = '"request_method":null,"request_uri":null,"server_protocol":null'
    else:
        request_parts = f'"request_method":"{method}","request_uri":{quote(uri)},"server_protocol":"{protocol}"'
    if len(groups) == 12:  # combined/main: the record as it always was, without the timing keys
        tail = "}"
    else:  # times in seconds (JSON numbers as logged), `-` as null
        request_time, upstream, length, request_id, host = groups[12:]
        if not upstream.replace(".", "").isdigit():  # type: ignore[union-attr]
            upstream = upstream_seconds(upstream)  # type: ignore[arg-type]  # `-`, or a list
        tail = (
            f',"request_time":{"null" if request_time == "-" else request_time},'
            f'"upstream_response_time":{upstream},'
            f'"request_length":{"null" if length == "-" else length},'
            f'"request_id":{"null" if request_id == "-" else quote(request_id)},'  # type: ignore[arg-type]
            f'"host":{"null" if host == "-" else quote(host)}}}'  # type: ignore[arg-type]
        )
    return instant[1], (
        f'{{"remote_addr":"{addr}",'
        f'"remote_user":{"null" if user == "-" else quote(user)},'
        f'"time_local":"{time_local}",'
        f'"timestamp":"{instant[0]}",'
        f'"request":{"null" if request == "-" else quote(request)},'
        f"{request_parts},"
        f'"status":{int(status)},'
        f'"body_bytes_sent":{"null" if body == "-" else body},'
        f'"http_referer":{"null" if referer == "-" else quote(referer)},'
        f'"http_user_agent":{"null" if agent == "-" else quote(agent)},'
        f'"http_x_forwarded_for":{"null" if forwarded is None or forwarded == "-" else quote(forwarded)}'
        f"{tail}"
    )


def upstream_seconds(value: str) -> str:
    """$upstream_response_time as one JSON number: the seconds spent on every upstream
    tried (retries `, ` and internal redirects ` : ` add up), `null` when none was reached."""
    if value == "-":
        return "null"
    if "," not in value and ":" not in value:
        return value  # one upstream: already a JSON number
    times = [Decimal(part) for part in re.split(r", | : ", value) if part != "-"]
    return "null" if not times else str(sum(times, Decimal(0)))


_quote = '"{}"'.format


def parse_line(line: str) -> dict[str, Any] | None:
    """One nginx `combined` or `main` line -> its record (a dict); None for any other line."""
    parsed = line_to_json(line)
    return None if parsed is None else json.loads(parsed[1])


def fluentd_record_json(data: str) -> tuple[str, str] | None:
    """The hot path: a record holding fluentd's JSON of one plain combined/main line
    (no backslash or control character in the line, so each backslash in the JSON
    escapes one of its quotes) -> (hour prefix, its record as JSON), read without
    decoding the line first. None for any other record: the general path takes it.
    """
    try:
        text = binascii.a2b_base64(data, strict_mode=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if text.count("\\") != text.count('\\"'):
        return None
    match = _fullmatch(text, _FLUENTD_PLAIN_RE, _FLUENTD_TIMED_RE)
    return None if match is None else _record_json(match.groups(), _quote)
