"""A stand-in for the `docker` CLI (with Compose v2) that plays a scripted machine.

It stands in for Docker where start.sh meets it: `docker info`, `compose version`,
`compose up --detach --build`, `compose ps`, `inspect`, `image inspect`, `compose logs`,
`compose exec`, `compose run` (the query tools), `compose stop` and `compose down`. It plays Compose's real behaviours,
as docker/compose and moby document them (shared/facts, "Docker Compose v2"):
`up --detach` blocks until each `service_healthy` dependency is healthy and then fails
with "dependency failed to start"; a container that exited keeps its last health status;
a restart loop shows as `restarting` and a growing RestartCount; pulls and port binds
fail inside `up`. It does not reproduce containers, images or networks.

Time is fake: `sleep` (also a stand-in, see `install`) advances a clock file and `date
+%s` reads it, so a test asserts *when* start.sh gave up without waiting for it.

A scenario (JSON) describes the machine:
  {"engine": true, "images_present": false,
   "up": {"at": 5, "exit": 0, "output": "..."},          # when `compose up` returns
   "services": {"localstack": [[0, {"status": "running", "health": "starting",
                                    "verdict": "provisioning still running: 10-provision.sh"}]]},
   "after_provision": {"localstack": [[0, {...}]]},       # timelines once a re-run succeeds
   "provision": {"exit": 0, "output": "..."},             # `exec ... 10-provision.sh`
   "logs": {"localstack": "..."}, "provision_log": "...", "init_ready": "{...}",
   "exec_endpoint": "http://127.0.0.1:PORT",              # run init/, query/ tools against it
   "web_url": "http://127.0.0.1:PORT"}                    # nginx, for traffic
A timeline is [[from_second, state], ...]; before its first entry the container does not
exist. Unknown calls exit 0 and are recorded, like every call, in the calls file.
"""

from __future__ import annotations

import json
import os
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

    def service(self, name: str) -> dict[str, Any] | None:
        """The service's container state now, or None when it does not exist."""
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
        return 0 if scenario.get("images_present", True) else 1
    if args[:1] == ["inspect"]:
        # start.sh's --format: "<service label> <status> <exit code> <restarts> <health>"
        code = 0
        for container in [a for a in args[1:] if a.endswith("-container-id")]:
            name = container.removesuffix("-container-id")
            state = machine.service(name)
            if state is None:
                print(f"Error: No such object: {container}", file=sys.stderr)
                code = 1
                continue
            fields = (state.get(k, d) for k, d in (("status", "running"), ("exit", 0), ("restarts", 0)))
            print(name, *fields, state.get("health", "none"))
        return code
    if args[:1] != ["compose"]:
        return 0
    args = args[1:]
    while args[:1] == ["--profile"]:  # global options before the command
        args = args[2:]
    command, rest = args[0], args[1:]
    if command == "version":
        return 0 if scenario.get("compose", True) else 1
    if command == "ps":
        names = [a for a in rest if a in SERVICES] or list(SERVICES)
        running_only = "--status" in rest
        for name in names:
            state = machine.service(name)
            if state is not None and (not running_only or state.get("status", "running") == "running"):
                print(machine.container_id(name))
        return 0
    if command == "up":
        up = scenario.get("up", {"at": 0, "exit": 0})
        deadline = time.monotonic() + 60  # never outlive a broken test
        while clock(machine.state) < up.get("at", 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        print(up.get("output", ""), file=sys.stderr)
        return up.get("exit", 0)
    if command == "logs":
        print(scenario.get("logs", {}).get(rest[-1], ""))
        return 0
    if command == "exec":
        return exec_in(machine, [a for a in rest if a not in ("-T", "--interactive")])
    if command == "run":
        return run_tool(machine, [a for a in rest if a not in ("--rm", "--no-deps", "-T")])
    return 0


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
    if command[:1] == ["python3"] and command[1].startswith("/opt/pipeline/init/"):
        # the project's own tools, run as the container would: its python3 and the
        # environment compose gives LocalStack, against the test's emulator
        import subprocess

        script = os.path.join(ROOT, "init", command[1].removeprefix("/opt/pipeline/init/"))
        env = {**os.environ, **scenario.get("container_env", {}), "AWS_ENDPOINT_URL": scenario["exec_endpoint"]}
        return subprocess.run([sys.executable, script, *command[2:]], env=env, check=False).returncode
    print(f"fake docker: no such command in the container: {command}", file=sys.stderr)
    return 127


def main(args: list[str]) -> int:
    state = os.environ["FAKE_DOCKER_STATE"]
    machine = Machine(state)
    with open(os.path.join(state, "calls.jsonl"), "a") as log:
        log.write(json.dumps([machine.now, args]) + "\n")
    return respond(machine, args)
