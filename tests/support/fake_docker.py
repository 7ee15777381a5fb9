"""A stand-in for the `docker` CLI (with Compose v2) that plays a scripted machine.

It stands in for Docker where start.sh meets it: `docker info`, `compose version`,
`compose up --detach --build`, `compose ps`, `ps` (the query's quick look), `inspect`, `image inspect` (the query
image's id and source label), `compose build` (records that label), `compose logs`,
`compose exec` (LocalStack's commands), `exec` (the query tool in the dashboard's container),
`compose run` (the query tools, and one-off localstack containers),
`compose stop`, `compose down`, `cp` and `rm`. It plays Compose's real behaviours,
as docker/compose and moby document them (shared/facts, "Docker Compose v2"):
`up --detach` blocks until each `service_healthy` dependency is healthy and then fails
with "dependency failed to start"; a container that exited keeps its last health status;
a restart loop shows as `restarting` and a growing RestartCount; pulls and port binds
fail inside `up`. It does not reproduce containers, images or networks.

Time is fake: `sleep` (also a stand-in, see `install`) advances a clock file and `date
+%s` reads it, so a test asserts *when* start.sh gave up without waiting for it.

A scenario (JSON) describes the machine:
  {"engine": true, "images_present": false,
   "up": {"at": 5, "exit": 0, "output": "...",           # when `compose up` returns
          "progress": [[1, " web Pulling"]]},             # its lines before that, as they come
   "services": {"localstack": [[0, {"status": "running", "health": "starting",
                                    "verdict": "provisioning still running: 10-provision.sh"}]]},
   "after_provision": {"localstack": [[0, {...}]]},       # timelines once a re-run succeeds
   "provision": {"exit": 0, "output": "..."},             # `exec ... 10-provision.sh`
   "logs": {"localstack": "..."}, "provision_log": "...", "init_ready": "{...}",
   "exec_endpoint": "http://127.0.0.1:PORT",              # run init/, query/ tools against it
   "web_url": "http://127.0.0.1:PORT",                    # nginx, for traffic
   "stop_seconds": {"fluentd": 3},                        # how long `compose stop X` takes
   "drain_status": [[0, "unread=10 buffered=0"], [4, {"exit": 1, "output": "..."}]],
   "fluentd_env": {"ACCESS_LOG_PATH": "...", "FLUENTD_STATE_DIR": "..."},
   "scripted": {"pipeline_cli.py drain": {"exit": 0, "output": "...", "seconds": 5},
                "bucket_mirror.py export": {"output": "...", "files": {"a/b.json": "..."}}}}
A timeline is [[from_second, state], ...]; before its first entry the container does not
exist. `compose stop` leaves a service exited from then on, `compose down` removes them all.
In fluentd, `bash /fluentd/tools/drain_status.sh` runs the real script on the files that
fluentd_env names, or answers from the drain_status timeline. An init/ command in
localstack (exec, or a one-off `run --entrypoint python3`) answers as "scripted" says for
"<script> <subcommand>" when it is there (for scripts other branches write), and otherwise
runs the real script on the host. A one-off container's files live under the state folder
until `rm`; `cp NAME:/path/. DIR` copies them out. Unknown calls exit 0 and are recorded,
like every call, in the calls file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

# os.path, not pathlib, and subprocess only where needed: start.sh runs this many times a
# second, so it starts in about 20 ms
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVICES = ("localstack", "fluentd", "web")


def install(bin_dir: Path, scenario: dict[str, Any], state_dir: Path) -> dict[str, str]:
    """Write docker, date and sleep stand-ins into bin_dir; return the env they read."""
    state_dir.mkdir(parents=True, exist_ok=True)
    for leftover in ("calls.jsonl", "stopped.json", "provisioned_at"):  # a new machine each time
        (state_dir / leftover).unlink(missing_ok=True)
    shutil.rmtree(state_dir / "containers", ignore_errors=True)
    (state_dir / "scenario.json").write_text(json.dumps(scenario))
    (state_dir / "clock").write_text("0")
    scripts = {
        # -S: no site-packages, a faster start (start.sh polls it many times a second)
        "docker": f"#!{sys.executable} -S\nimport sys\nsys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "import fake_docker\nsys.exit(fake_docker.main(sys.argv[1:]))\n",
        # date +%s: the fake clock (whole seconds, as date prints them)
        "date": '#!/bin/bash\nclock=$(<"$FAKE_DOCKER_STATE/clock")\necho "${clock%.*}"\n',
        # sleep N: advance the fake clock at once
        "sleep": f"#!{sys.executable}\nimport os, sys\n"
        "path = os.path.join(os.environ['FAKE_DOCKER_STATE'], 'clock')\n"
        "now = float(open(path).read() or 0) + float(sys.argv[1])\n"
        "open(path + '.tmp', 'w').write(str(now)); os.replace(path + '.tmp', path)\n",
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    return {"FAKE_DOCKER_STATE": str(state_dir)}


def clock(state: Path | str) -> float:
    with open(os.path.join(state, "clock")) as file:
        return float(file.read() or 0)


def calls(state_dir: Path) -> list[tuple[float, list[str]]]:
    """Every call the fake received: (fake time, argv)."""
    path = state_dir / "calls.jsonl"
    if not path.exists():
        return []
    return [tuple(json.loads(line)) for line in path.read_text().splitlines()]


def built_query_source(state_dir: Path) -> str | None:
    """The query-source label the last `compose build` gave the query image (start.sh's
    QUERY_SOURCE), or None if none ran."""
    return _read(str(state_dir), "query_source")


def _read(state: str, name: str) -> str | None:
    path = os.path.join(state, name)
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return file.read()


def _write(state: str, name: str, text: str) -> None:
    with open(os.path.join(state, name), "w") as file:
        file.write(text)


class Machine:
    def __init__(self, state: str) -> None:
        self.state = state
        self.scenario = json.loads(_read(state, "scenario.json") or "{}")
        self.now = clock(state)

    def provisioned_at(self) -> float | None:
        text = _read(self.state, "provisioned_at")
        return float(text) if text else None

    def stopped(self) -> dict[str, float]:
        """Services stopped by `compose stop` (name -> when); "*" once `compose down` ran."""
        return json.loads(_read(self.state, "stopped.json") or "{}")

    def stop(self, names: list[str]) -> None:
        stopped = self.stopped()
        stopped.update(dict.fromkeys(names, self.now))
        _write(self.state, "stopped.json", json.dumps(stopped))

    def advance(self, seconds: float) -> None:
        """Time a command takes, on the fake clock (as `sleep` does)."""
        self.now += seconds
        _write(self.state, "clock", str(self.now))

    def service(self, name: str) -> dict[str, Any] | None:
        """The service's container state now, or None when it does not exist."""
        stopped = self.stopped()
        if "*" in stopped:
            return None
        state = self.timeline_state(name)
        if state is not None and name in stopped:
            return {**state, "status": "exited", "exit": 0}
        return state

    def timeline_state(self, name: str) -> dict[str, Any] | None:
        timeline = self.scenario.get("services", {}).get(name, [])
        since = 0.0
        provisioned = self.provisioned_at()
        if provisioned is not None and name in self.scenario.get("after_provision", {}):
            timeline, since = self.scenario["after_provision"][name], provisioned
        current = None
        for start, state in timeline:
            if self.now - since >= start:
                current = state
        return current

    def container_id(self, name: str) -> str:
        return f"{name}-container-id"


def respond(machine: Machine, args: list[str]) -> int:
    scenario = machine.scenario
    if args[:1] == ["info"]:
        return 0 if scenario.get("engine", True) else 1
    if args[:2] == ["image", "inspect"]:
        if not scenario.get("images_present", True):
            return 1
        form = args[args.index("--format") + 1] if "--format" in args else ""
        if "query-source" in form:  # the label `compose build` gave the query image
            print(_read(machine.state, "query_source") or "<no value>")
        return 0
    if args[:1] == ["exec"]:  # `docker exec [-i -t] CONTAINER CMD...`: a query tool in the dashboard's
        rest = [a for a in args[1:] if a not in ("--interactive", "--tty")]
        name = rest[0].removesuffix("-container-id")
        if name != "dashboard" or (machine.service(name) or {}).get("status", "running") != "running":
            print(f"Error response from daemon: container {rest[0]} is not running", file=sys.stderr)
            return 1
        return exec_in(machine, [name, *rest[1:]])
    if args[:1] == ["inspect"]:
        # start.sh's --format: "<service label> <status> <exit code> <restarts> <health> <StartedAt>
        # <container id> <query-source label>"; the dashboard's label is that of query/ as it is
        # unless the scenario gives it another ("source")
        code = 0
        for container in [a for a in args[1:] if a.endswith("-container-id")]:
            name = container.removesuffix("-container-id")
            state = machine.service(name)
            if state is None:
                print(f"Error: No such object: {container}", file=sys.stderr)
                code = 1
                continue
            fields = (state.get(k, d) for k, d in (("status", "running"), ("exit", 0), ("restarts", 0)))
            current = os.environ.get("QUERY_SOURCE", "unknown")  # start.sh's, of query/ now
            source = state.get("source", current) if name == "dashboard" else "<no value>"
            started = state.get("started", "2026-12-02T08:00:00.000000000Z")
            print(name, *fields, state.get("health", "none"), started, container, source)
        return code
    if args[:1] == ["ps"]:
        return list_running(machine, args[1:])
    if args[:1] == ["cp"]:
        return copy_out(machine, args[1], args[2])
    if args[:1] == ["rm"]:
        for name in [a for a in args[1:] if not a.startswith("-")]:
            shutil.rmtree(container_dir(machine, name), ignore_errors=True)
        return 0
    if args[:1] != ["compose"]:
        return 0
    args = args[1:]
    while args[:1] == ["--profile"]:  # global options before the command
        args = args[2:]
    command, rest = args[0], args[1:]
    if command == "version":
        return 0 if scenario.get("compose", True) else 1
    if command == "ps":
        extra = [name for name in scenario.get("services", {}) if name not in SERVICES]  # e.g. the dashboard
        names = [a for a in rest if a in SERVICES] or [*SERVICES, *extra]
        running_only = "--status" in rest
        for name in names:
            state = machine.service(name)
            if state is not None and (not running_only or state.get("status", "running") == "running"):
                print(machine.container_id(name))
        return 0
    if command == "up":
        up = scenario.get("up", {"at": 0, "exit": 0})
        deadline = time.monotonic() + 60  # never outlive a broken test
        progress = list(up.get("progress", []))  # [[at, line], ...]: Compose's plain progress lines
        while clock(machine.state) < up.get("at", 0) and time.monotonic() < deadline:
            while progress and clock(machine.state) >= progress[0][0]:
                print(progress.pop(0)[1], file=sys.stderr, flush=True)
            time.sleep(0.02)
        for _, line in progress:
            print(line, file=sys.stderr)
        print(up.get("output", ""), file=sys.stderr)
        return up.get("exit", 0)
    if command == "logs":
        print(scenario.get("logs", {}).get(rest[-1], ""))
        return 0
    if command == "build":
        _write(machine.state, "query_source", os.environ.get("QUERY_SOURCE", "unknown"))
        return 0
    if command == "exec":
        return exec_in(machine, [a for a in rest if a not in ("-T", "--interactive")])
    if command == "run":
        return run(machine, rest)
    if command == "stop":
        names = [a for a in rest if a in SERVICES] or list(SERVICES)
        for name in names:
            if machine.service(name) is not None:
                machine.advance(scenario.get("stop_seconds", {}).get(name, 0))
        machine.stop(names)
        return 0
    if command == "down":
        # Compose's progress lines (on stderr), which name what it deletes
        project = "centralized-logging-pipeline"
        for name in SERVICES:
            if machine.service(name) is not None:
                print(f" Container {project}-{name}-1  Removed", file=sys.stderr)
        if "--volumes" in rest:
            for volume in ("nginx-logs", "fluentd-state", "localstack-data", "saved-logs", "query-cache"):
                print(f" Volume {project}_{volume}  Removed", file=sys.stderr)
        machine.stop(["*"])
        return 0
    return 0


def list_running(machine: Machine, args: list[str]) -> int:
    """`docker ps --filter label=com.docker.compose.project=NAME --format F`: the project's
    running containers, one line each, in F's fields as start.sh asks for them (the service
    and query-source labels, .State, .Status with its health as Docker writes it, .ID)."""
    filters = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--filter"]
    project = os.environ.get("COMPOSE_PROJECT_NAME") or "centralized-logging-pipeline"
    if f"label=com.docker.compose.project={project}" not in filters:
        return 0
    form = args[args.index("--format") + 1]
    extra = [name for name in machine.scenario.get("services", {}) if name not in SERVICES]
    for name in [*SERVICES, *extra]:
        state = machine.service(name)
        if state is None or state.get("status", "running") != "running":
            continue
        health = state.get("health", "none")
        status = "Up 5 minutes" + {"none": "", "starting": " (health: starting)"}.get(health, f" ({health})")
        current = os.environ.get("QUERY_SOURCE", "unknown")
        source = state.get("source", current) if name == "dashboard" else ""
        fields = {
            '{{.Label "com.docker.compose.service"}}': name,
            '{{.Label "org.centralized-logging-pipeline.query-source"}}': source,
            "{{.State}}": "running",
            "{{.Status}}": status,
            "{{.ID}}": machine.container_id(name),
        }
        line = form
        for field, value in fields.items():
            line = line.replace(field, value)
        print(line)
    return 0


def container_dir(machine: Machine, name: str) -> str:
    return os.path.join(machine.state, "containers", name)


def copy_out(machine: Machine, source: str, target: str) -> int:
    """`docker cp NAME:/path/. DIR`: a one-off container's files into DIR (merged)."""
    name, _, path = source.partition(":")
    root = container_dir(machine, name)
    if not os.path.isdir(root):
        print(f"Error response from daemon: No such container: {name}", file=sys.stderr)
        return 1
    inside = os.path.join(root, path.lstrip("/").removesuffix("/."))
    if not os.path.isdir(inside):
        print(f"Error response from daemon: Could not find the file {path} in container {name}", file=sys.stderr)
        return 1
    shutil.copytree(inside, target, dirs_exist_ok=True)
    print(f"Successfully copied to {target}", file=sys.stderr)
    return 0


def run(machine: Machine, args: list[str]) -> int:
    """`compose run [options] SERVICE CMD...`: the query tools, or a one-off container of
    another service (start.sh's export)."""
    options: dict[str, list[str]] = {}
    while args and args[0].startswith("-"):
        flag, args = args[0], args[1:]
        if flag in ("--name", "--entrypoint", "-v", "--volume", "-u", "--user", "-e", "--env"):
            options.setdefault(flag, []).append(args[0])
            args = args[1:]
    if args[:1] == ["query"]:
        return run_tool(machine, args)
    service, command = args[0], args[1:]
    name = options.get("--name", [f"{service}-run"])[-1]
    root = container_dir(machine, name)
    os.makedirs(root, exist_ok=True)
    if options.get("--entrypoint") == ["python3"] and command[0].startswith("/opt/pipeline/init/"):
        return init_command(machine, command, root)
    print(f"fake docker: no such one-off command: {args}", file=sys.stderr)
    return 127


def scripted(machine: Machine, command: list[str], root: str | None) -> int | None:
    """The scenario's answer for `python3 /opt/pipeline/init/<script> <sub> ...`, or None."""
    script = os.path.basename(command[0])
    answer = machine.scenario.get("scripted", {}).get(f"{script} {command[1] if len(command) > 1 else ''}".strip())
    if answer is None:
        return None
    machine.advance(answer.get("seconds", 0))
    if answer.get("output"):
        print(answer["output"])
    if root is not None and "--to" in command:  # export: the files, inside the container
        target = os.path.join(root, command[command.index("--to") + 1].lstrip("/"))
        for key, text in answer.get("files", {}).items():
            path = os.path.join(target, key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as file:
                file.write(text)
    return answer.get("exit", 0)


def init_command(machine: Machine, command: list[str], root: str | None = None) -> int:
    """One of the project's init/ tools, as the LocalStack container runs it: its python3
    and the environment compose gives LocalStack, against the test's emulator."""
    import subprocess

    code = scripted(machine, command, root)
    if code is not None:
        return code
    scenario = machine.scenario
    script = os.path.join(ROOT, "init", command[0].removeprefix("/opt/pipeline/init/"))
    rest = command[1:]
    if root is not None and "--to" in rest:  # a one-off container's path: inside its folder
        at = rest.index("--to") + 1
        rest = [*rest[:at], os.path.join(root, rest[at].lstrip("/")), *rest[at + 1 :]]
    endpoint = scenario.get("exec_endpoint", "http://127.0.0.1:9")
    env = {**os.environ, **scenario.get("container_env", {}), "AWS_ENDPOINT_URL": endpoint}
    if root is None:
        return subprocess.run([sys.executable, script, *rest], env=env, check=False).returncode
    # in a one-off container its paths are the container's: print them so
    done = subprocess.run([sys.executable, script, *rest], env=env, check=False, stdout=subprocess.PIPE, text=True)
    print(done.stdout.replace(root.rstrip("/"), ""), end="")
    return done.returncode


def drain_status(machine: Machine) -> int:
    """`bash /fluentd/tools/drain_status.sh` in fluentd: the real script on real files, or
    the scenario's answers over fake time."""
    scenario = machine.scenario
    if "fluentd_env" in scenario:
        import subprocess

        script = os.path.join(ROOT, "fluentd", "tools", "drain_status.sh")
        env = {"PATH": "/usr/bin:/bin", **scenario["fluentd_env"]}
        return subprocess.run(["/bin/bash", script], env=env, check=False).returncode
    answer: Any = "unread=0 buffered=0"
    for start, state in scenario.get("drain_status", []):
        if machine.now >= start:
            answer = state
    if isinstance(answer, str):
        answer = {"output": answer}
    print(answer.get("output", ""))
    return answer.get("exit", 0)


def run_tool(machine: Machine, args: list[str]) -> int:
    """`compose run query python3 /opt/query/<tool> ...`: the query image's tools, run with
    the environment compose gives that service, against the test's emulator and nginx."""
    import subprocess

    service, command = args[0], args[1:]
    scenario = machine.scenario
    if service != "query" or command[:1] != ["python3"] or not command[1].startswith("/opt/query/"):
        print(f"fake docker: no such tool: {args}", file=sys.stderr)
        return 127
    script = os.path.join(ROOT, "query", command[1].removeprefix("/opt/query/"))
    rest = [scenario.get("web_url", a) if a == "http://web:80" else a for a in command[2:]]
    env = {**os.environ, **scenario.get("query_env", {}), "AWS_ENDPOINT_URL": scenario.get("exec_endpoint", "")}
    return subprocess.run([sys.executable, script, *rest], env=env, check=False).returncode


def exec_in(machine: Machine, args: list[str]) -> int:
    """`compose exec SERVICE CMD...`: the few commands start.sh runs in LocalStack."""
    scenario = machine.scenario
    service, command = args[0], args[1:]
    state = machine.service(service)
    if state is None or state.get("status", "running") != "running":
        print(f"service {service!r} is not running", file=sys.stderr)
        return 1
    if command[-1:] == ["/opt/pipeline/init/localstack_ready.py"]:
        verdict = state.get("verdict", "provisioned")
        print(verdict)
        return 0 if verdict.startswith("provisioned") else 1
    if command[:1] == ["tail"]:
        print(scenario.get("provision_log", ""))
        return 0
    if command[:1] == ["curl"]:
        print(scenario.get("init_ready", ""))
        return 0
    if command[:1] == ["/etc/localstack/init/ready.d/10-provision.sh"]:
        outcome = scenario.get("provision", {"exit": 0})
        print(outcome.get("output", ""))
        if outcome.get("exit", 0) == 0:
            _write(machine.state, "provisioned_at", str(machine.now))
        return outcome.get("exit", 0)
    if service == "localstack" and command[:1] == ["python3"] and command[1].startswith("/opt/pipeline/init/"):
        return init_command(machine, command[1:])
    if service == "dashboard" and command[:1] == ["python3"]:  # the query image's tools
        return run_tool(machine, ["query", *command])
    if service == "fluentd" and command == ["bash", "/fluentd/tools/drain_status.sh"]:
        return drain_status(machine)
    print(f"fake docker: no such command in the container: {command}", file=sys.stderr)
    return 127


def main(args: list[str]) -> int:
    state = os.environ["FAKE_DOCKER_STATE"]
    machine = Machine(state)
    with open(os.path.join(state, "calls.jsonl"), "a") as log:
        log.write(json.dumps([machine.now, args]) + "\n")
    return respond(machine, args)
