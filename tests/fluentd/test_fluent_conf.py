"""fluentd/conf/fluent.conf has the settings the pipeline relies on (no fluentd here)."""

from __future__ import annotations

from support.fluentd_conf import fluent_conf, fluent_conf_defaults, resolve


def test_tails_the_access_log_with_a_position_file():
    source = fluent_conf().one("source", **{"@type": "tail"})
    assert resolve(source.params["path"]) == "/var/log/nginx/pipeline/access.log"
    assert resolve(source.params["pos_file"]) == "/fluentd/state/nginx-access.pos"
    assert source.params["follow_inodes"] == "true"
    assert source.params["read_from_head"] == "true"
    assert source.one("parse").params["@type"] == "none"
    assert source.params["tag"] == "nginx.access"


def test_ships_the_tailed_tag_to_kinesis_streams_aggregated_without_dropping():
    # aggregated: one Kinesis record per flush, not per line (tests/test_speed_settings.py)
    match = fluent_conf().one("match", **{"@type": "kinesis_streams_aggregated"})
    assert match.arg == "nginx.access"
    assert match.params["drop_failed_records_after_batch_request_retries"] == "false"
    assert int(match.params["retries_on_batch_request"]) >= 1
    assert resolve(match.params["stream_name"]) == "nginx-accesslog-stream"
    assert resolve(match.params["endpoint"]) == "http://localstack:4566"
    assert resolve(match.params["region"]) == "us-east-1"
    # credentials only from the SDK chain: none written in the file
    assert not {"aws_key_id", "aws_sec_key"} & set(match.params)
    # the default json formatter: `{"message": "<line>"}\n`, what the handler expects
    assert not match.find("format")


def test_file_buffer_flushes_within_a_fraction_of_a_second_and_retries_with_backoff():
    buffer = fluent_conf().one("match", **{"@type": "kinesis_streams_aggregated"}).one("buffer")
    assert buffer.params["@type"] == "file"
    assert resolve(buffer.params["path"]).startswith("/fluentd/state/")
    # the values and their reasons: tests/test_speed_settings.py
    assert buffer.params["flush_interval"] == "0.2"
    assert buffer.params["flush_at_shutdown"] == "true"
    assert buffer.params["retry_type"] == "exponential_backoff"
    assert buffer.params["retry_forever"] == "true"
    assert buffer.params["overflow_action"] == "block"


def test_fluentd_own_logs_are_printed_once_and_not_shipped():
    root = fluent_conf()
    # an out_stdout for fluent.** (in <label @FLUENT_LOG> or not) prints each line twice
    assert root.find("label") == []
    shipped = [m.arg for m in root.find("match")]
    assert shipped == ["nginx.access"]


def test_monitor_agent_listens_on_loopback_only():
    monitor = fluent_conf().one("source", **{"@type": "monitor_agent"})
    assert monitor.params["bind"] == "127.0.0.1"


def test_every_setting_comes_from_the_environment_with_a_default():
    assert set(fluent_conf_defaults()) == {
        "ACCESS_LOG_PATH",
        "FLUENTD_STATE_DIR",
        "KINESIS_ENDPOINT",
        "KINESIS_STREAM",
        "AWS_REGION",
    }
    source = fluent_conf().one("source", **{"@type": "tail"})
    assert resolve(source.params["pos_file"], {"FLUENTD_STATE_DIR": "/tmp/x"}) == "/tmp/x/nginx-access.pos"
