"""An independent reading of nginx's `combined` and `main` formats (and the stack's
`main_timed` tail), for cross-checking.

Written as a character scanner rather than a regular expression, so that it shares no code
and no pattern with the handler: where the two agree on thousands of real lines, both are
likely right.
"""

from __future__ import annotations

from typing import Any

MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def _quoted(line: str, pos: int) -> tuple[str, int] | None:
    """A `"..."` field starting at pos, with backslash escapes; (content, end) or None."""
    if pos >= len(line) or line[pos] != '"':
        return None
    i = pos + 1
    while i < len(line):
        char = line[i]
        if char == "\\":
            if i + 1 >= len(line):
                return None
            i += 2
            continue
        if char == '"':
            return line[pos + 1 : i], i + 1
        i += 1
    return None


def _time_ok(value: str) -> bool:
    if len(value) != 26 or value[2] != "/" or value[6] != "/" or value[11] != ":" or value[20] != " ":
        return False
    if value[3:6] not in MONTHS or value[21] not in "+-":
        return False
    digits = value[0:2] + value[7:11] + value[12:14] + value[15:17] + value[18:20] + value[22:26]
    return digits.isascii() and digits.isdigit() and value[14] == ":" and value[17] == ":"


def scan(line: str) -> dict[str, Any] | None:
    """The raw fields of a combined/main line, or None. Dates are not range-checked here."""
    addr, sep, rest = line.partition(" - ")
    if not sep or not (addr == "unix:" or (addr and all(c in "0123456789abcdefABCDEF.:" for c in addr))):
        return None
    user, sep, rest = rest.partition(" [")
    if not sep or not user or any(c.isspace() or c == '"' for c in user):
        return None
    time_local, rest = rest[:26], rest[26:]
    if not _time_ok(time_local) or not rest.startswith("] "):
        return None
    got = _quoted(rest, 2)
    if got is None:
        return None
    request, pos = got
    tail = rest[pos:].split(" ", 3)
    if len(tail) != 4 or tail[0] != "":
        return None
    status, body, rest = tail[1], tail[2], " " + tail[3]
    if len(status) != 3 or not status.isdigit() or not status.isascii():
        return None
    if body != "-" and not (body.isascii() and body.isdigit() and (body == "0" or body[0] != "0")):
        return None
    fields = []
    pos = 0
    while rest.startswith(' "', pos) and len(fields) < 3:
        got = _quoted(rest, pos + 1)
        if got is None:
            return None
        fields.append(got[0])
        pos = got[1]
    timing = _timing(rest[pos:])
    if timing is None or len(fields) < 2:
        return None
    return {
        "remote_addr": addr,
        "remote_user": user,
        "time_local": time_local,
        "request": request,
        "status": status,
        "body_bytes_sent": body,
        "quoted": fields,
        "timing": timing,
    }


TIMING_KEYS = ("rt", "urt", "rl", "rid", "host")
_QUOTED_KEYS = ("urt", "host")


def _seconds_ok(value: str) -> bool:
    whole, dot, fraction = value.partition(".")
    digits_ok = whole.isascii() and whole.isdigit() and (whole == "0" or whole[0] != "0")
    return digits_ok and (not dot or (fraction.isascii() and fraction.isdigit()))


def _timing(tail: str) -> dict[str, str] | None:
    """The main_timed tail ` rt=.. urt=".." rl=.. rid=.. host=".."` as raw texts; {} for none."""
    if not tail:
        return {}
    values = {}
    pos = 0
    for key in TIMING_KEYS:
        head = f" {key}="
        if not tail.startswith(head, pos):
            return None
        pos += len(head)
        if key in _QUOTED_KEYS:
            got = _quoted(tail, pos)
            if got is None:
                return None
            values[key], pos = got
        else:
            end = tail.find(" ", pos)
            end = len(tail) if end < 0 else end
            values[key], pos = tail[pos:end], end
    if pos != len(tail):
        return None
    upstream = values["urt"].replace(" : ", ", ").split(", ")
    valid = (
        (values["rt"] == "-" or _seconds_ok(values["rt"]))
        and all(item == "-" or _seconds_ok(item) for item in upstream)
        and (values["rl"] == "-" or (values["rl"].isascii() and values["rl"].isdigit()))
        and (values["rl"] in ("-", "0") or values["rl"][0] != "0")
        and values["rid"] != ""
        and not any(c in values["rid"] for c in '"\\')
        and not any(c.isspace() for c in values["rid"])
    )
    return values if valid else None


def rebuild(record: dict[str, Any], main: bool, timed: bool = False) -> str:
    """The log line a record came from (`-` for null); `main` adds $http_x_forwarded_for,
    `timed` the main_timed tail (times with nginx's three decimals; one upstream time)."""

    def text(value: Any) -> str:
        return "-" if value is None else str(value)

    line = (
        f"{record['remote_addr']} - {text(record['remote_user'])} [{record['time_local']}] "
        f'"{text(record["request"])}" {record["status"]:03d} {text(record["body_bytes_sent"])} '
        f'"{text(record["http_referer"])}" "{text(record["http_user_agent"])}"'
    )
    if main:
        line += f' "{text(record["http_x_forwarded_for"])}"'
    if timed:
        seconds = "-" if record["request_time"] is None else f"{record['request_time']:.3f}"
        upstream = "-" if record["upstream_response_time"] is None else f"{record['upstream_response_time']:.3f}"
        line += (
            f' rt={seconds} urt="{upstream}" rl={text(record["request_length"])}'
            f' rid={text(record["request_id"])} host="{text(record["host"])}"'
        )
    return line
