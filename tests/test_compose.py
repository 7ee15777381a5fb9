"""docker-compose.yml: valid per the Compose spec, and what the schema cannot check."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import PurePosixPath

import pytest
import support.dashboard_server  # noqa: F401 - query/ on the path
from support.compose import COMPOSE_FILE, ROOT, compose
from support.fluentd_conf import FLUENT_CONF, fluent_conf_defaults


def test_validates_against_the_compose_specification():
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_version_key_and_the_three_services():
    document = compose()
    assert "version" not in document
    assert set(document["services"]) == {"web", "fluentd", "localstack", "query", "dashboard", "compactor"}
    # the query tools run on demand only (./start.sh query/traffic/compact)
    assert document["services"]["query"]["profiles"] == ["tools"]
    assert "ports" not in document["services"]["query"]


def test_every_image_is_pinned():
    for name, service in compose()["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not a version"
    assert compose()["services"]["localstack"]["image"] == "localstack/localstack:4.14.0"


def test_fluentd_image_and_plugin_are_pinned():
    dockerfile = (ROOT / "fluentd" / "Dockerfile").read_text()
    assert re.search(r"^FROM fluent/fluentd:v1\.19\.\d+-debian-\S+$", dockerfile, re.M)
    assert re.search(r"gem install fluent-plugin-kinesis -v \d+\.\d+\.\d+", dockerfile)
    assert dockerfile.rstrip().endswith("USER fluent")


def test_localstack_image_and_token_are_overridable():
    document = compose({"LOCALSTACK_IMAGE": "localstack/localstack:2026.3.0", "LOCALSTACK_AUTH_TOKEN": "tok"})
    localstack = document["services"]["localstack"]
    assert localstack["image"] == "localstack/localstack:2026.3.0"
    assert localstack["environment"]["LOCALSTACK_AUTH_TOKEN"] == "tok"


def test_depends_on_targets_exist_and_wait_for_health():
    services = compose()["services"]
    for name, service in services.items():
        for target, condition in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            assert condition == {"condition": "service_healthy"}, name
    assert "localstack" in services["fluentd"]["depends_on"]


def test_every_service_has_a_healthcheck():
    for name, service in compose()["services"].items():
        check = service.get("healthcheck")
        assert check and check["test"] and not check.get("disable"), name
        assert "start_interval" not in check  # needs Compose 2.24+ and Engine 25+


def test_ports_listen_on_loopback_unless_asked():
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
    web = compose({"WEB_BIND": "0.0.0.0", "WEB_PORT": "8080"})["services"]["web"]
    assert web["ports"] == ["0.0.0.0:8080:80"]
    assert compose()["services"]["web"]["ports"] == ["127.0.0.1:80:80"]


def test_dashboard_is_published_on_loopback_only_from_the_query_image():
    services = compose()["services"]
    dashboard = services["dashboard"]
    # the same image as the query tools, built from the same folder
    assert dashboard["image"] == services["query"]["image"] and dashboard["build"] == services["query"]["build"]
    # the server listens on the container's interface (Docker's port forwarding needs that),
    # and Compose publishes that port on 127.0.0.1 only, whatever DASHBOARD_PORT says
    command = dashboard["command"]
    port = command[command.index("--port") + 1]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert dashboard["ports"] == [f"127.0.0.1:8081:{port}"]
    assert compose({"DASHBOARD_PORT": "9999"})["services"]["dashboard"]["ports"] == [f"127.0.0.1:9999:{port}"]
    assert compose({"WEB_BIND": "0.0.0.0"})["services"]["dashboard"]["ports"][0].startswith("127.0.0.1:")
    assert port in " ".join(dashboard["healthcheck"]["test"])
    assert dashboard["depends_on"] == {"localstack": {"condition": "service_healthy"}}
    # the saved logs (and the compactions' parts) are read, never written
    assert dashboard["volumes"] == ["saved-logs:/var/lib/pipeline:ro", "query-cache:/var/cache/query:ro"]
    assert dashboard["environment"]["PIPELINE_DATA_DIR"] == "/var/lib/pipeline"
    # the landing page links the port Compose publishes
    web = compose({"DASHBOARD_PORT": "9999"})["services"]["web"]["environment"]
    assert web["NGINX_DASHBOARD_PORT"] == "9999" and "DASHBOARD_PORT" in web["NGINX_ENVSUBST_FILTER"]
    assert compose()["services"]["localstack"]["ports"] == ["127.0.0.1:4566:4566"]
    # another port for LocalStack, e.g. when another LocalStack holds 4566 (or for tests)
    assert compose({"LOCALSTACK_PORT": "4567"})["services"]["localstack"]["ports"] == ["127.0.0.1:4567:4566"]


def test_the_dashboard_answers_start_sh_query_of_its_own_project_and_sources():
    import dashboard  # query/'s, on the path from support.dashboard_server

    def asked_by(env: dict[str, str]) -> dict[str, str]:
        return dashboard.asked_by(compose(env)["services"]["dashboard"]["environment"]["QUERY_ASKED_BY"])

    # what start.sh sends: its project's name (.env, else `name:`) and query/'s checksum
    assert asked_by({"QUERY_SOURCE": "123-456"}) == {
        "X-Logs-Stack": "centralized-logging-pipeline",
        "X-Logs-Source": "123-456",
    }
    assert asked_by({"QUERY_SOURCE": "1-2", "COMPOSE_PROJECT_NAME": "other"})["X-Logs-Stack"] == "other"
    # `docker compose up` by hand: no source, and no query is answered on the port
    assert asked_by({}) == {}


def test_compactor_follows_the_bucket_from_the_query_image_without_a_port():
    services = compose()["services"]
    compactor, query = services["compactor"], services["query"]
    assert compactor["image"] == query["image"] and compactor["build"] == query["build"]
    assert {k: v for k, v in query["environment"].items() if k != "PIPELINE_DATA_DIR"} == compactor["environment"]
    command = compactor["command"]
    assert command[:3] == ["python3", "/opt/query/compact_hours.py", "--follow"]
    assert command[command.index("--since") + 1] == "7d"  # closed hours of any day of the last week
    # it yields the CPU to what a user waits for (others have the default weight, 1024), and
    # the dashboard, which answers ./start.sh query, goes first
    others = [service for name, service in services.items() if name not in ("compactor", "dashboard")]
    assert compactor["cpu_shares"] < 1024 < services["dashboard"]["cpu_shares"]
    assert not any("cpu_shares" in service for service in others)
    # the healthcheck reads the age of the file the loop touches
    heartbeat = command[command.index("--heartbeat") + 1]
    assert heartbeat in " ".join(compactor["healthcheck"]["test"])
    assert "ports" not in compactor and "profiles" not in compactor
    assert compactor["volumes"] == ["query-cache:/var/cache/query"]  # no saved logs: the bucket is its truth
    assert compactor["depends_on"] == {"localstack": {"condition": "service_healthy"}}
    assert compactor["restart"] == "unless-stopped"


def _mounts(service: dict) -> dict[str, str]:
    """container path -> source, for `source:target[:mode]` volume entries."""
    return {entry.split(":")[1]: entry.split(":")[0] for entry in service.get("volumes", [])}


def test_fluentd_volumes_match_fluent_conf_defaults():
    services = compose()["services"]
    fluentd, web = services["fluentd"], services["web"]
    defaults = fluent_conf_defaults()
    env = fluentd["environment"]
    # the compose values are the defaults written in fluent.conf
    assert env["ACCESS_LOG_PATH"] == defaults["ACCESS_LOG_PATH"]
    assert env["FLUENTD_STATE_DIR"] == defaults["FLUENTD_STATE_DIR"]
    assert env["KINESIS_ENDPOINT"] == defaults["KINESIS_ENDPOINT"]
    assert env["KINESIS_STREAM"] == defaults["KINESIS_STREAM"]
    assert env["AWS_REGION"] == defaults["AWS_REGION"]
    mounts = _mounts(fluentd)
    log_dir = str(PurePosixPath(defaults["ACCESS_LOG_PATH"]).parent)
    # fluentd reads the directory nginx writes, from the same named volume
    assert mounts[log_dir] == "nginx-logs" and _mounts(web)[log_dir] == "nginx-logs"
    assert web["environment"]["NGINX_ACCESS_LOG"] == defaults["ACCESS_LOG_PATH"]
    # position file and buffer on a named volume, which survives container re-creation
    assert mounts[defaults["FLUENTD_STATE_DIR"]] == "fluentd-state"
    assert set(compose()["volumes"]) == {"nginx-logs", "fluentd-state", "localstack-data", "saved-logs", "query-cache"}
    assert mounts["/fluentd/etc"] == "./fluentd/conf"
    dockerfile = (ROOT / "fluentd" / "Dockerfile").read_text()
    assert f"chown -R fluent:fluent {defaults['FLUENTD_STATE_DIR']}" in dockerfile


def test_the_query_tools_share_one_cache_that_only_the_compacting_ones_write():
    services = compose()["services"]
    path = services["compactor"]["environment"]["QUERY_CACHE_DIR"]
    # the compactor service and the query service (./start.sh compact) write closed hours'
    # parts there; the query tool and the dashboard read them before the saved logs have them
    for name, mode in (("compactor", "rw"), ("query", "rw"), ("dashboard", "ro")):
        service = services[name]
        assert service["environment"]["QUERY_CACHE_DIR"] == path, name
        entry = next(e for e in service["volumes"] if e.split(":")[1] == path)
        assert entry.split(":")[0] == "query-cache", name
        assert [*entry.split(":"), "rw"][2] == mode, name
    # a new named volume takes the owner of the image's folder: the user `query` writes it
    dockerfile = (ROOT / "query" / "Dockerfile").read_text()
    assert f"install -d -o query -g query {path}" in dockerfile
    assert "USER query" in dockerfile
    assert "--cache-dir" not in " ".join(services["compactor"]["command"])  # from QUERY_CACHE_DIR


def test_localstack_mounts_the_docker_socket_and_the_provisioning_hook():
    localstack = compose()["services"]["localstack"]
    mounts = _mounts(localstack)
    assert mounts["/var/run/docker.sock"] == "/var/run/docker.sock"
    assert mounts["/etc/localstack/init/ready.d"] == "./init/ready.d"
    assert mounts["/opt/pipeline/init"] == "./init"
    assert localstack["healthcheck"]["test"] == ["CMD", "python3", "/opt/pipeline/init/localstack_ready.py"]
    # the image declares VOLUME /var/lib/localstack: a named volume, not a new anonymous one
    # (with kinesis-mock downloaded again) at every start
    assert mounts["/var/lib/localstack"] == "localstack-data"
    # init_resource.py's hints name ./start.sh's commands inside the stack
    assert localstack["environment"]["PIPELINE_CLI"] == "./start.sh"


def test_saved_logs_outlive_the_container_and_the_stop_leaves_time_to_save_them():
    localstack = compose()["services"]["localstack"]
    mounts = _mounts(localstack)
    environment = localstack["environment"]
    # the copy of the bucket lives where the hooks look for it, on a named volume by default
    assert mounts[environment["PIPELINE_DATA_DIR"]] == "saved-logs"
    assert "sqs" in environment["SERVICES"].split(",")  # the bucket's events reach the watcher
    assert mounts["/etc/localstack/init/shutdown.d"] == "./init/shutdown.d"
    # ... or in a folder of the user's (SAVED_LOGS in .env), bound as a folder
    custom = _mounts(compose({"SAVED_LOGS": "./my-saved-logs"})["services"]["localstack"])
    assert custom[environment["PIPELINE_DATA_DIR"]].endswith("my-saved-logs")
    # Docker stops the container after stop_grace_period: the shutdown hook's wait fits in it
    hook = (ROOT / "init" / "shutdown.d" / "10-save.sh").read_text()
    waits = [int(w) for w in re.findall(r"--timeout (\d+)", hook)]
    assert waits and sum(waits) + 10 <= _seconds(localstack["stop_grace_period"])
    # ... and so does the image's supervisor, which SIGKILLs LocalStack SHUTDOWN_TIMEOUT s
    # after SIGTERM (default 5), before Docker's own kill
    supervisor = int(environment["SHUTDOWN_TIMEOUT"])
    assert sum(waits) + 5 <= supervisor < _seconds(localstack["stop_grace_period"])
    # offline, LocalStack's analytics at shutdown would make it skip the hooks
    assert environment["DISABLE_EVENTS"] == "1"
    # fluentd flushes its buffer at stop: more than Docker's default 10 s
    assert _seconds(compose()["services"]["fluentd"]["stop_grace_period"]) >= 30


def _seconds(duration: str | int | float) -> float:
    """A compose duration (`60s`, `1m30s`, or seconds once normalised) in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(ms|h|m|s)", duration))


def test_the_landing_page_names_the_stacks_stream_and_bucket():
    web = compose({"KINESIS_STREAM": "my-stream", "BUCKET_NAME": "my-logs"})["services"]["web"]["environment"]
    assert web["NGINX_KINESIS_STREAM"] == "my-stream" and web["NGINX_BUCKET_NAME"] == "my-logs"


def test_provisioning_hook_is_executable_with_a_shebang_and_runs_our_script():
    hooks = sorted((ROOT / "init" / "ready.d").iterdir())
    assert [h.name for h in hooks] == ["10-provision.sh"]
    hook = hooks[0]
    assert os.access(hook, os.X_OK)
    text = hook.read_text()
    assert text.startswith("#!/bin/bash\n")
    # the image's path by default; PIPELINE_INIT_DIR is the one place a host process differs
    assert "init_dir=${PIPELINE_INIT_DIR:-/opt/pipeline/init}" in text
    assert 'python3 "$init_dir/init_resource.py"' in text
    # git records the exec bit too (a clone must keep it)
    mode = subprocess.run(
        ["git", "ls-files", "-s", "init/ready.d/10-provision.sh"], capture_output=True, text=True, cwd=ROOT
    ).stdout
    if mode:
        assert mode.startswith("100755")


@pytest.mark.parametrize(
    "path",
    [
        "init/localstack_ready.py",
        "init/init_resource.py",
        "init/pipeline_cli.py",
        "init/bucket_mirror.py",
        "init/shutdown.d/10-save.sh",
        "start.sh",
        "test.sh",
    ],
)
def test_entry_points_are_executable(path):
    assert os.access(ROOT / path, os.X_OK)


# set by start.sh for every compose call, not a setting of the user's
SET_BY_START_SH = {"QUERY_SOURCE"}


def test_env_example_names_every_variable_the_compose_file_reads():
    variables = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE_FILE.read_text()))
    example = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"^([A-Z_]+)=", example, re.M))
    given = SET_BY_START_SH | {"COMPOSE_PROJECT_NAME"}  # and the project's name, by Compose
    assert variables - given <= named, variables - named - given
    exported = set(re.findall(r"^export ([A-Z_]+)$", (ROOT / "start.sh").read_text(), re.M))
    assert exported >= SET_BY_START_SH


def test_every_dollar_is_an_interpolation_or_escaped():
    # Compose rejects a lone `$`; `$$` stands for one
    for number, line in enumerate(COMPOSE_FILE.read_text().splitlines(), 1):
        code = line.split(" #", 1)[0]
        stripped = re.sub(r"\$\$|\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-[^}]*)?\}", "", code)
        assert "$" not in stripped, f"docker-compose.yml:{number}: {line.strip()}"


def test_nginx_envsubst_filter_selects_only_our_variables():
    web = compose()["services"]["web"]["environment"]
    pattern = re.compile(web["NGINX_ENVSUBST_FILTER"])
    ours = {name for name in web if name.startswith("NGINX_") and name != "NGINX_ENVSUBST_FILTER"}
    assert ours == {name for name in ours if pattern.search(name)}
    assert not pattern.search("PATH") and not pattern.search("NGINX_VERSION")
    template = (ROOT / "nginx" / "templates" / "default.conf.template").read_text()
    assert set(re.findall(r"\$\{([A-Z_]+)\}", template)) == ours


@pytest.mark.parametrize(
    "path",
    ["start.sh", "init/ready.d/10-provision.sh", "init/shutdown.d/10-save.sh", ".ci/run", "init/init_resource.py"],
)
def test_scripts_keep_lf_line_endings_on_every_checkout(path):
    # a CRLF shebang ("/bin/bash\r") breaks the hook and start.sh on Windows/WSL checkouts
    result = subprocess.run(["git", "check-attr", "eol", "--", path], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip().endswith("eol: lf"), result.stdout


def test_start_sh_knows_the_images_compose_builds():
    # start.sh checks for these to say that a first start takes minutes
    services = compose()["services"]
    start = (ROOT / "start.sh").read_text()
    assert f"FLUENTD_IMAGE={services['fluentd']['image']}\n" in start
    assert f"QUERY_IMAGE={services['query']['image']}\n" in start


def test_start_sh_names_every_image_the_stack_pulls_for_its_uninstall():
    # ./start.sh uninstall keeps the pulled images (other projects may share them) and
    # prints the command that removes them: it must name each one
    import init_resource

    start = (ROOT / "start.sh").read_text()
    pulled = re.search(r"^PULLED_IMAGES=\(([^)]*)\)$", start, re.M).group(1).split()
    bases = [
        base
        for folder in ("fluentd", "query")
        for base in re.findall(r"^FROM (\S+)", (ROOT / folder / "Dockerfile").read_text(), re.M)
    ]
    runtime = init_resource.LAMBDA_RUNTIME.removeprefix("python")
    expected = [compose()["services"]["web"]["image"], *bases, f"public.ecr.aws/lambda/python:{runtime}"]
    assert sorted(pulled) == sorted(expected)


def test_reboot_and_memory_decisions_hold():
    # docs/operations.md: every long-running service comes back after a reboot (the hook's
    # restore-then-provision order, fluentd's retry_forever and the healthcheck's fresh
    # verdict are pinned in their own tests), and no service has a memory limit (a limit
    # would kill LocalStack with the stream's undelivered records in it)
    services = compose()["services"]
    operations = (ROOT / "docs" / "operations.md").read_text()
    for name, service in services.items():
        if "tools" in service.get("profiles", []):
            continue
        assert service.get("restart") == "unless-stopped", name
        assert "mem_limit" not in service and "limits" not in service.get("deploy", {}).get("resources", {}), name
    assert "restart: unless-stopped" in operations and "no `mem_limit`" in operations
    assert "retry_forever true" in operations and "retry_forever true" in FLUENT_CONF.read_text()


def test_start_sh_defaults_agree_with_compose_and_env_example():
    # start.sh reads settings itself (ports, image, timeouts): its defaults are the same
    # facts as docker-compose.yml's ${VAR:-default} and .env.example's values
    start = (ROOT / "start.sh").read_text()
    defaults = dict(re.findall(r"\bsetting ([A-Z_]+) ([^\s)\"$]+)", start))
    assert {"WEB_PORT", "LOCALSTACK_IMAGE", "LOCALSTACK_PORT", "SAVED_LOGS", "START_TIMEOUT"} <= set(defaults)
    in_compose = dict(re.findall(r"\$\{([A-Z_]+):-([^}]*)\}", COMPOSE_FILE.read_text()))
    example = dict(re.findall(r"^([A-Z_]+)=(.*)$", (ROOT / ".env.example").read_text(), re.M))
    for name, value in defaults.items():
        if name in in_compose:
            assert in_compose[name] == value, name
        assert example.get(name) == value, name
