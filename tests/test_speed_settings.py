"""The settings chosen for speed, each pinned with its reason, so none drifts.

Measured on the real LocalStack 4.14.0 (docs/performance.md, the pipeline benchmark):
- fluentd's `kinesis_streams_aggregated`: one Kinesis record per flush instead of one per
  line. LocalStack's Kinesis (kinesis-mock) slows down with every record stored on a
  shard, and keeps them 24 h: per line, 100 req/s fell behind within minutes.
- flush_interval 0.2 with flush_thread_interval 0.1, as bare numbers: fluentd's flush
  thread otherwise checks once a second, and `0.2s` would mean 2 s.
- the mapping's batching window 0 and LocalStack's poll interval 0.1 s: each 1 s timer
  otherwise adds up to a second to every line.
"""

from __future__ import annotations

import re
from pathlib import Path

import init_resource
from support import shipper
from support.compose import compose
from support.fluentd_conf import FLUENT_CONF, fluent_conf, parse_size
from support.localstack_host import Interpreters, LocalStack, stack_tuning

POLL = "LAMBDA_EVENT_SOURCE_MAPPING_POLL_INTERVAL_SEC"
# kinesis_streams_aggregated's limit for one aggregated record: 1 MiB less 25 bytes and
# twice the 32-character partition key (out_kinesis_streams_aggregated.rb, `offset`)
AGGREGATED_LIMIT = 1024 * 1024 - (25 + 2 * 32)


def _output():
    (match,) = fluent_conf().find("match")
    return match


def test_fluentd_packs_each_flush_into_one_aggregated_record():
    # fewer stored Kinesis records, which is what keeps LocalStack's Kinesis fast
    assert _output().params["@type"] == "kinesis_streams_aggregated"
    # the key stays random per record (no fixed_partition_key): records spread over shards
    assert "fixed_partition_key" not in _output().params


def test_flush_timers_are_sub_second_bare_numbers():
    buffer = _output().one("buffer").params
    assert buffer["flush_mode"] == "interval"
    assert buffer["flush_interval"] == "0.2"
    assert buffer["flush_thread_interval"] == "0.1"
    # fluentd 1.19.3 reads durations with /([0-9]+)s/: "0.2s" is 2 s. No unit, no trap.
    for name in ("flush_interval", "flush_thread_interval"):
        assert re.fullmatch(r"[0-9.]+", buffer[name]), f"{name} {buffer[name]!r}: write a bare number"
    # the flush thread must look at least as often as a chunk is due
    assert float(buffer["flush_thread_interval"]) <= float(buffer["flush_interval"])


def test_a_chunk_fits_in_one_aggregated_record():
    # a flush is then one PutRecords call with one record: chunk + 10 bytes a line (nginx
    # lines are over 100 bytes, so at most 10 % more) stays within the record's limit
    chunk = parse_size(_output().one("buffer").params["chunk_limit_size"])
    assert chunk * 1.1 <= AGGREGATED_LIMIT


def test_every_speed_setting_says_why_and_what_it_costs_where_it_is_set():
    conf = FLUENT_CONF.read_text()
    assert "kinesis-mock" in conf and "Cost:" in conf
    assert "reads `0.2s` as 2 s" in conf
    source = Path(init_resource.__file__).read_text()
    window = source[
        source.index('"MaximumBatchingWindowInSeconds"') - 600 : source.index('"MaximumBatchingWindowInSeconds"')
    ]
    assert "Cost:" in window
    compose_text = (Path(__file__).resolve().parent.parent / "docker-compose.yml").read_text()
    before = compose_text[: compose_text.index(POLL)]
    assert "Cost:" in before[-500:]


def test_the_mapping_hands_records_over_at_the_poll_that_finds_them():
    # LocalStack counts the window from its last flush: 1 held every record ~1 s
    assert init_resource.MAPPING["MaximumBatchingWindowInSeconds"] == 0


def test_localstack_polls_every_tenth_of_a_second_in_the_stack_and_in_the_tests(tmp_path):
    environment = compose()["services"]["localstack"]["environment"]
    assert environment[POLL] == "0.1"
    # the tests' LocalStack reads it from the compose file: one place, same value
    assert stack_tuning() == {POLL: "0.1", "KINESIS_PERSISTENCE": "0"}
    tests_localstack = LocalStack(Interpreters(Path("python3.13"), Path("python3.12")), tmp_path)
    assert tests_localstack._env(tests_localstack.workdir)[POLL] == "0.1"


def test_kinesis_mock_does_not_write_what_nobody_reads(tmp_path):
    # its 5 s snapshots of every stream stall Kinesis more as the shard fills, and the free
    # image deletes them unread; the tests' LocalStack runs the same way
    assert compose()["services"]["localstack"]["environment"]["KINESIS_PERSISTENCE"] == "0"
    tests_localstack = LocalStack(Interpreters(Path("python3.13"), Path("python3.12")), tmp_path)
    assert tests_localstack._env(tests_localstack.workdir)["KINESIS_PERSISTENCE"] == "0"
    compose_text = (Path(__file__).resolve().parent.parent / "docker-compose.yml").read_text()
    assert "Cost:" in compose_text[: compose_text.index("KINESIS_PERSISTENCE")][-600:]


def test_the_fluentd_stand_in_ships_with_fluent_conf_settings():
    buffer = _output().one("buffer").params
    assert _output().params["@type"] == shipper.OUTPUT
    assert float(buffer["flush_interval"]) == shipper.FLUSH_INTERVAL
    assert float(buffer["flush_thread_interval"]) == shipper.FLUSH_THREAD_INTERVAL
    assert parse_size(buffer["chunk_limit_size"]) == shipper.CHUNK_LIMIT_SIZE


def test_every_objects_an_hour_figure_agrees_with_the_measured_ones():
    # one object per poll that finds records: docs/performance.md holds the measured
    # "objects N (X per hour)" (bench/live_query_bench.py --rates 0,100,200 and the
    # pipeline bench); every description of the rate, the cost model in docs/aws.md and
    # the query bench's model must stay within what was measured under traffic
    root = FLUENT_CONF.parents[2]
    measured = [
        int(x.replace(",", ""))
        for x in re.findall(r"objects \d+ \(([\d,]+) per hour\)", (root / "docs/performance.md").read_text())
    ]
    # idle, the stack writes nothing: no poll finds records
    assert 0 in measured
    measured = [figure for figure in measured if figure]
    assert len(measured) >= 4
    low, high = min(measured) * 0.95, max(measured) * 1.05
    stated = []
    paths = ("docs/performance.md", "docs/aws.md", "query/README.md", "query/compact_hours.py", "init/init_resource.py")
    for path in paths:
        text = re.sub(r"\s*\n\s*#?\s*", " ", (root / path).read_text())  # lines joined, comment marks dropped
        for first, second in re.findall(r"([\d,]{5,})(?:[-\u2013]([\d,]{5,}))? objects an hour", text):
            stated += [(path, int(n.replace(",", ""))) for n in (first, second) if n]
    assert {path for path, _ in stated} >= {
        "docs/performance.md",
        "docs/aws.md",
        "query/README.md",
        "query/compact_hours.py",
    }
    for path, figure in stated:
        assert low <= figure <= high, (path, figure)
    source = (root / "bench" / "query_bench.py").read_text()
    per_second = int(re.search(r"^OBJECTS_PER_SECOND = (\d+)$", source, re.M).group(1))
    assert low <= per_second * 3600 <= high
