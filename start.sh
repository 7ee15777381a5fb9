#!/usr/bin/env bash
# Start the pipeline (nginx -> fluentd -> Kinesis -> Lambda -> S3) on this machine.
#
#   ./start.sh [up]                 build, start, provision; wait until ready
#   ./start.sh down [-v|--volumes]  stop without losing a line: nginx first, then wait
#                                   until fluentd, the stream and the function have
#                                   delivered everything (DRAIN_TIMEOUT) and the bucket's
#                                   objects are saved; ./start.sh brings them back.
#                                   -v: delete everything instead (the saved logs, the
#                                   access log, fluentd's position and buffer); asks first
#   ./start.sh uninstall            down -v, and remove the images built for the stack;
#                                   names the pulled images it keeps (others may share them)
#   ./start.sh export DIR           copy the saved logs into DIR (created if missing):
#                                   one JSON Lines file per object, as in the bucket;
#                                   files of the same name in DIR are overwritten.
#                                   Works whether the stack runs or not
#   ./start.sh provision            run provisioning again in the running stack
#   ./start.sh status               each resource's state, object counts, saved logs, hints
#   ./start.sh ls [PREFIX]          list the bucket's objects
#   ./start.sh cat KEY [--pretty]   print an object's records, one per line
#   ./start.sh logs [--since 10m] [--follow]   the Lambda function's log lines
#   ./start.sh traffic [--rate R] [--duration S]   realistic requests through nginx
#   ./start.sh query [--since 1h | --from T --to T] [--format table|csv|json] [SQL]
#                                   SQL over the logs (tables logs, errors);
#                                   without SQL, a summary of the last hour
#   ./start.sh compact [--since 24h]   merge closed hours' objects (the compactor does it too)
#   ./start.sh tail [--status 5xx] [--path /v1/] [--client ADDR] [--json]
#                                   the records as they land, one line each
#   ./start.sh --help
#
# Needs Docker with Compose v2, nothing else. Settings: .env (see .env.example).
set -euo pipefail

invoked_from=$PWD # where a relative DIR given to `export` is
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script="$here/$(basename "${BASH_SOURCE[0]}")"
cd "$here"

POLL_SECONDS=2
# The query tools' files as one checksum, a label of the query image (docker-compose.yml):
# the tools rebuild the image only when query/ changed (a cached build still costs ~0.5 s).
QUERY_SOURCE=$({ find query -type f ! -path 'query/assets/node_modules/*' ! -path '*/__pycache__/*' \
  -exec cksum {} + 2>/dev/null || true; } | LC_ALL=C sort | cksum | tr ' ' -)
export QUERY_SOURCE
SOURCE_LABEL=org.centralized-logging-pipeline.query-source
PROVISION_HOOK=/etc/localstack/init/ready.d/10-provision.sh
PROVISION_LOG=/tmp/pipeline/provision.log
SERVICES=(localstack fluentd web) # in the order they start

usage() {
  sed -n '2,/^# Needs Docker/s/^# \{0,1\}//p' "$script"
}

die() {
  echo "start.sh: $*" >&2
  exit 1
}

usage_error() {
  echo "start.sh: $* (see ./start.sh --help)" >&2
  exit 2
}

now() {
  date +%s
}

# --- settings: the environment, else .env as Compose reads it -------------------------

# One value from .env, parsed the way Compose parses it and never executed: an optional
# `export`, spaces around `=`, quoted values taken literally, and a `#` after white space
# ending an unquoted value. The last definition wins. Fails when the name is absent.
dotenv_value() {
  local name=$1 line value found=1 assignment='^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=[[:space:]]*(.*)$'
  local double_quoted='^"([^"]*)"' single_quoted="^'([^']*)'"
  [[ -f .env ]] || return 1
  while IFS= read -r line || [[ -n "$line" ]]; do
    line=${line%$'\r'}
    [[ "$line" =~ $assignment ]] || continue
    [[ "${BASH_REMATCH[2]}" == "$name" ]] || continue
    value=${BASH_REMATCH[3]}
    if [[ "$value" =~ $double_quoted || "$value" =~ $single_quoted ]]; then
      value=${BASH_REMATCH[1]}
    else
      value=${value%%[[:space:]]#*}
      value=${value%"${value##*[![:space:]]}"}
    fi
    DOTENV_VALUE=$value found=0
  done <.env
  return "$found"
}

setting() {
  local name=$1 default=$2
  if [[ -n "${!name:-}" ]]; then
    echo "${!name}"
  elif dotenv_value "$name" && [[ -n "$DOTENV_VALUE" ]]; then
    echo "$DOTENV_VALUE"
  else
    echo "$default"
  fi
}

# --- checks before starting -----------------------------------------------------------

check_docker() {
  command -v docker >/dev/null 2>&1 ||
    die "docker not found: install Docker Desktop (macOS) or Docker Engine (Linux) first"
  docker info >/dev/null 2>&1 ||
    die "the Docker engine is not running (or this user may not use it): start Docker Desktop, or 'sudo systemctl start docker'; on Linux, add yourself to the docker group"
  docker compose version >/dev/null 2>&1 ||
    die "Docker Compose v2 not found ('docker compose'): update Docker, or install the compose plugin"
}

# Whether something accepts connections on this port at IPv4 or IPv6 loopback (a browser
# may try either for "localhost").
port_in_use() {
  local host
  for host in 127.0.0.1 ::1; do
    if (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; then return 0; fi
  done
  return 1
}

stack_running() {
  [[ -n "$(docker compose ps --status running --quiet 2>/dev/null || true)" ]]
}

check_ports() {
  local web_port localstack_port dashboard_port
  web_port=$(setting WEB_PORT 80)
  localstack_port=$(setting LOCALSTACK_PORT 4566)
  dashboard_port=$(setting DASHBOARD_PORT 8081)
  stack_running && return 0 # our own stack holds the ports
  if port_in_use "$web_port"; then
    die "port $web_port is taken by another program: stop it, or set WEB_PORT=8080 in .env"
  fi
  if port_in_use "$localstack_port"; then
    die "port $localstack_port is taken (another LocalStack?): stop it, or set LOCALSTACK_PORT=4567 in .env"
  fi
  if port_in_use "$dashboard_port"; then
    die "port $dashboard_port is taken by another program: stop it, or set DASHBOARD_PORT=8082 in .env"
  fi
}

# LocalStack images after 4.14.0 (CalVer 2026.03 and later, latest, stable) exit with
# code 55 without an auth token; 4.14.0 and older start without one.
needs_token() {
  local image=$1 name tag major minor version='^v?([0-9]+)\.([0-9]+)'
  name=${image%@*}
  tag=latest
  [[ "${name##*/}" == *:* ]] && tag=${name##*:} && name=${name%:*}
  case "$name" in
    localstack/localstack-pro | */localstack/localstack-pro) return 0 ;;
    localstack/localstack | */localstack/localstack) ;;
    *) return 1 ;; # another image (a derived one): its own rules
  esac
  [[ "$image" == *@* && "$tag" == latest ]] && return 1 # pinned by digest only: unknown
  if [[ "$tag" =~ $version ]]; then
    major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
    ((major > 4 || (major == 4 && minor > 14)))
    return
  fi
  return 0
}

check_localstack_image() {
  local image token
  image=$(setting LOCALSTACK_IMAGE localstack/localstack:4.14.0)
  token=$(setting LOCALSTACK_AUTH_TOKEN "")
  if [[ -z "$token" ]] && needs_token "$image"; then
    echo "start.sh: note: $image needs LOCALSTACK_AUTH_TOKEN in .env (LocalStack images after 4.14.0 exit with code 55 without one)" >&2
  fi
}

FLUENTD_IMAGE=centralized-logging-pipeline/fluentd:v1.19.3-kinesis-3.6.1
FIRST_START=0
first_start_note() {
  local image
  image=$(setting LOCALSTACK_IMAGE localstack/localstack:4.14.0)
  if ! docker image inspect "$image" >/dev/null 2>&1 || ! docker image inspect "$FLUENTD_IMAGE" >/dev/null 2>&1; then
    FIRST_START=1
    echo "First start: Docker pulls the images and builds fluentd's, then LocalStack downloads"
    echo "kinesis-mock and the Lambda image. This takes several minutes; later starts take seconds."
  fi
}

# --- waiting, and saying why it failed ---------------------------------------------------

# Every container of the stack in one look (two docker calls, however many services):
# lines of "<service> <status> <exit code> <restart count> <health> <started> <id>
# <query source>" (the last is the label a query-image container inherits, docker-compose.yml).
STATES=""
refresh_states() {
  local ids
  ids=$(docker compose ps --all --quiet 2>/dev/null || true)
  STATES=""
  if [[ -n "$ids" ]]; then
    # shellcheck disable=SC2086 # one argument per container id
    STATES=$(docker inspect --format '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.State.ExitCode}} {{.RestartCount}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.StartedAt}} {{.Id}} {{index .Config.Labels "'"$SOURCE_LABEL"'"}}' $ids 2>/dev/null || true)
  fi
}

# "<status> <exit code> <restart count> <health> <started> <id> <query source>" of a
# service's container, or "missing" (from the last refresh_states).
container_state() {
  local service rest
  while read -r service rest; do
    if [[ "$service" == "$1" ]]; then
      echo "$rest"
      return
    fi
  done <<<"$STATES"
  echo missing
}

show_logs() {
  echo "--- docker compose logs --tail 15 $1 ---" >&2
  docker compose logs --no-color --tail 15 "$1" >&2 2>&1 || true
}

fail_service() {
  local service=$1 why=$2 advice=$3
  printf '\n' >&2
  echo "start.sh: $service $why" >&2
  show_logs "$service"
  die "$advice"
}

fail_provisioning() {
  printf '\n' >&2
  echo "start.sh: provisioning failed in localstack: $1" >&2
  echo "--- its output (last 20 lines of $PROVISION_LOG) ---" >&2
  docker compose exec -T localstack tail -n 20 "$PROVISION_LOG" >&2 2>&1 || true
  echo "--- LocalStack's /_localstack/init/ready ---" >&2
  docker compose exec -T localstack curl -s http://localhost:4566/_localstack/init/ready >&2 2>&1 || true
  printf '\n' >&2
  die "fix the cause, then run ./start.sh provision (runs it again in the running stack); if you changed .env, run ./start.sh instead. ./start.sh down stops everything."
}

fail_compose() {
  local log=$1 output service advice="see the output above; ./start.sh down cleans up"
  output=$(tail -n 15 "$log")
  printf '\n' >&2
  echo "start.sh: docker compose up failed:" >&2
  echo "$output" >&2
  case "$output" in
    *"port is already allocated"* | *"address already in use"* | *"Ports are not available"*)
      advice="a port is taken: stop what holds it, or choose other ports in .env (WEB_PORT, LOCALSTACK_PORT, DASHBOARD_PORT)" ;;
    *"pull access denied"* | *"manifest unknown"* | *"not found"* | *"failed to resolve reference"* | *"TLS handshake"* | *"i/o timeout"* | *"no such host"* | *"network is unreachable"*)
      # Compose prints "<service> Error <why>" for the service whose image it could not pull
      service=$(sed -n 's/^ *\([[:alnum:]_.-]*\) Error .*/\1/p' <<<"$output" | head -n 1)
      advice="an image could not be pulled${service:+ (service $service)}: check your network (and LOCALSTACK_IMAGE in .env), then run ./start.sh again" ;;
  esac
  die "$advice"
}

# What is wrong with a service now, as "why|advice", or nothing while it may still come up.
service_problem() {
  local service=$1 status code restarts health started
  read -r status code restarts health started _ <<<"$(container_state "$service")"
  [[ "$status" == missing ]] && return 0
  # still the container that had exited before this start (a crash, a stop): `up` has not
  # started it again yet, so it says nothing about this start
  [[ " $STALE " == *" $service@$started "* ]] && return 0
  if [[ "$status" == restarting || "$restarts" -gt 0 || "$status" == exited || "$status" == dead ]]; then
    if [[ "$code" == 55 ]] || { [[ "$service" == localstack && -z "$(setting LOCALSTACK_AUTH_TOKEN "")" ]] &&
      needs_token "$(setting LOCALSTACK_IMAGE localstack/localstack:4.14.0)"; }; then
      echo "exited with code $code (restarts: $restarts)|this LocalStack image needs an auth token (it exits with code 55 without one): set LOCALSTACK_AUTH_TOKEN in .env, or LOCALSTACK_IMAGE=localstack/localstack:4.14.0"
    else
      echo "exited with code $code (restarts: $restarts)|read the log lines above; fix the cause, then run ./start.sh again (./start.sh down stops everything)"
    fi
    return 0
  fi
  if [[ "$health" == unhealthy && "$service" != localstack ]]; then
    echo "is unhealthy|read the log lines above; then ./start.sh down and ./start.sh again"
  fi
}

# The healthcheck's own verdict for LocalStack, run in the container; "" when not running.
localstack_verdict() {
  local status
  read -r status _ <<<"$(container_state localstack)"
  [[ "$status" == running ]] || return 0
  docker compose exec -T localstack python3 /opt/pipeline/init/localstack_ready.py 2>/dev/null || true
}

# One progress line: rewritten in place on a terminal, else printed when it changes.
PROGRESS_LAST=""
progress() {
  if [[ -t 1 ]]; then
    printf '\r%-100.100s' "$1 ($2s)"
  elif [[ "$1" != "$PROGRESS_LAST" ]]; then
    echo "$1 ($2s)"
  fi
  PROGRESS_LAST=$1
}
end_progress() {
  if [[ -t 1 && -n "$PROGRESS_LAST" ]]; then printf '\n'; fi
  PROGRESS_LAST=""
}

# What `compose up` is busy with before LocalStack answers, from its last progress line
# (plain output, not a terminal): pulling or building images take minutes on a first start.
compose_activity() {
  local line building="first start: a few minutes" pulling="first start: several minutes"
  ((FIRST_START)) || building="from Docker's cache" pulling="an image that changed"
  line=$(grep -E 'Pulling|Downloading|Extracting|Pull complete|Waiting|^#[0-9]+ |Building| Container ' "$1" 2>/dev/null | tail -n 1 || true)
  case "$line" in
    "" | *" Container "*) ;; # the containers are being created: LocalStack's own progress follows
    "#"* | *Building*) echo "docker compose: building fluentd's image ($building)" ;;
    *) echo "docker compose: pulling images ($pulling)" ;;
  esac
}

# Until every service is healthy; from the moment a failure is knowable (exited container,
# restart loop, failed provisioning, compose itself failing), report it and exit.
wait_for_stack() {
  local compose_pid=$1 compose_log=$2 timeout started elapsed service problem verdict waiting
  # seconds spent pulling/building images or putting saved logs back: START_TIMEOUT does
  # not count them (a slow network or a long day of logs is not a failure)
  local uncounted=0 tick
  timeout=$(setting START_TIMEOUT 600)
  [[ "$timeout" =~ ^[0-9]+$ ]] || die "START_TIMEOUT must be a number of seconds, not '$timeout'"
  started=$(now)
  tick=$started
  while true; do
    waiting=""
    refresh_states
    for service in "${SERVICES[@]}"; do
      problem=$(service_problem "$service")
      if [[ -n "$problem" ]]; then
        if [[ "$problem" == *"restarts: "[1-9]* ]]; then
          docker compose stop "$service" >/dev/null 2>&1 || true # end the restart loop
        fi
        fail_service "$service" "${problem%%|*}" "${problem#*|}"
      fi
    done
    verdict=$(localstack_verdict)
    case "$verdict" in
      *"provisioning failed"*) fail_provisioning "$verdict" ;;
      provisioned*) ;;
      "")
        waiting=""
        [[ -z "$compose_pid" ]] || waiting=$(compose_activity "$compose_log")
        waiting=${waiting:-"localstack: starting"}
        ;;
      *) waiting="localstack: $verdict" ;;
    esac
    if [[ -z "$waiting" ]]; then
      for service in fluentd web; do
        read -r _ _ _ health _ <<<"$(container_state "$service")"
        if [[ "$health" != healthy ]]; then
          waiting="$service: ${health/missing/not started yet}"
          break
        fi
      done
    fi
    if [[ -n "$compose_pid" ]] && ! kill -0 "$compose_pid" 2>/dev/null; then
      wait "$compose_pid" || fail_compose "$compose_log"
      compose_pid=""
    fi
    if [[ "$verdict" == *"restoring s3://"* || "$waiting" == "docker compose: "* ]]; then
      uncounted=$((uncounted + $(now) - tick))
    fi
    tick=$(now)
    elapsed=$((tick - started))
    [[ -z "$waiting" ]] && break
    progress "waiting for $waiting" "$elapsed"
    if ((elapsed - uncounted >= timeout)); then
      end_progress
      die "not ready after ${timeout}s (waiting for $waiting); see 'docker compose logs ${waiting%%:*}', or raise START_TIMEOUT in .env"
    fi
    sleep "$POLL_SECONDS"
  done
  end_progress
  if [[ -n "$compose_pid" ]]; then wait "$compose_pid" || fail_compose "$compose_log"; fi
}

next_steps() {
  local web_port url dashboard
  web_port=$(setting WEB_PORT 80)
  url="http://localhost$([[ "$web_port" == 80 ]] || echo ":$web_port")/"
  dashboard="http://localhost:$(setting DASHBOARD_PORT 8081)/"
  cat <<EOF
The pipeline is up and provisioned.

  1. Open $url (every request becomes a line in S3 within seconds)
  2. List the bucket:     ./start.sh ls
  3. Read an object:      ./start.sh cat <key from the list> --pretty
  The dashboard:          $dashboard
  Records as they land:   ./start.sh tail
  Status and hints:       ./start.sh status
  The function's log:     ./start.sh logs --follow
  Stop:                   ./start.sh down   (keeps every line for the next start)
  Copy the logs out:      ./start.sh export DIR
EOF
}

COMPOSE_PID="" COMPOSE_LOG=""
cleanup() {
  if [[ -n "$COMPOSE_PID" ]]; then kill "$COMPOSE_PID" 2>/dev/null || true; fi
  if [[ -n "$COMPOSE_LOG" ]]; then rm -f "$COMPOSE_LOG"; fi
}

# Containers that had exited before this start, as "<service>@<StartedAt>": until `up`
# starts them again, their old exit is no failure of this start.
STALE=""
remember_stale_containers() {
  local service status started
  refresh_states
  STALE=""
  while read -r service status _ _ _ started; do
    if [[ "$status" == exited || "$status" == dead ]]; then STALE+=" $service@$started"; fi
  done <<<"$STATES"
}

up() {
  check_docker
  check_ports
  check_localstack_image
  first_start_note
  echo "Building and starting localstack, fluentd and nginx..."
  remember_stale_containers
  COMPOSE_LOG=$(mktemp)
  trap cleanup EXIT
  # In the background: `up` itself blocks until each dependency is healthy and says only
  # "dependency failed to start" minutes later; the loop below watches every service.
  docker compose up --detach --build >"$COMPOSE_LOG" 2>&1 &
  COMPOSE_PID=$!
  wait_for_stack "$COMPOSE_PID" "$COMPOSE_LOG"
  COMPOSE_PID=""
  next_steps
}

# --- stopping: keep every line, or forget everything ------------------------------------

STREAM_DRAIN_MIN=10 # seconds the stream's drain gets even when fluentd used up DRAIN_TIMEOUT
SYNC_TIMEOUT=30     # seconds bucket_mirror.py may take to save the bucket's last objects

# The compose project's name, as Compose picks it: COMPOSE_PROJECT_NAME, else the file's.
project_name() {
  setting COMPOSE_PROJECT_NAME "$(sed -n 's/^name:[[:space:]]*//p' docker-compose.yml)"
}

# Where the saved logs are (the compose mount ${SAVED_LOGS:-saved-logs}): SAVED_KIND is
# "folder" when the value is a path (Compose: it starts with /, . or ~), else "volume"
# (a named volume of this project); SAVED_WHERE is the folder's path or the volume's name.
SAVED_KIND="" SAVED_WHERE=""
saved_logs_place() {
  local value
  value=$(setting SAVED_LOGS saved-logs)
  case "$value" in
    /*) SAVED_KIND=folder SAVED_WHERE=$value ;;
    "~"*) SAVED_KIND=folder SAVED_WHERE=$HOME${value#"~"} ;;
    .*) SAVED_KIND=folder SAVED_WHERE=$here/${value#./} ;;
    *) SAVED_KIND=volume SAVED_WHERE="$(project_name)_$value" ;;
  esac
}

service_running() {
  local status
  read -r status _ <<<"$(container_state "$1")"
  [[ "$status" == running ]]
}

# A command's output only when it fails (Compose's progress lines would bury ours).
quietly() {
  local output
  if ! output=$("$@" 2>&1); then
    echo "$output" >&2
    return 1
  fi
}

# Until fluentd has read the whole access log and Kinesis has accepted its whole buffer
# (nginx is stopped: nothing new comes), or the deadline. Unread or buffered bytes left
# then stay in fluentd's volume, and fluentd sends them at the next start.
wait_for_fluentd() {
  local started=$1 deadline=$2 timeout=$3 answer unread buffered elapsed numbers='unread=([0-9]+) buffered=([0-9]+)'
  while true; do
    if ! answer=$(docker compose exec -T fluentd bash /fluentd/tools/drain_status.sh 2>&1) || [[ ! "$answer" =~ $numbers ]]; then
      end_progress
      echo "fluentd: could not ask what is left to send (${answer:-no answer}); stopping it anyway: it sends its buffer as it stops, and what it did not read waits in its volume for the next start"
      return 0
    fi
    unread=${BASH_REMATCH[1]} buffered=${BASH_REMATCH[2]}
    elapsed=$(($(now) - started))
    if ((unread == 0 && buffered == 0)); then
      end_progress
      echo "fluentd: every line read and sent to Kinesis (${elapsed}s)"
      return 0
    fi
    progress "fluentd: $unread bytes of the access log to read, $buffered bytes to send" "$elapsed"
    if (($(now) >= deadline)); then
      end_progress
      echo "fluentd: not done within DRAIN_TIMEOUT=${timeout}s: $((unread + buffered)) bytes are still in fluentd's volume; they are not lost: fluentd sends them at the next start"
      return 0
    fi
    sleep "$POLL_SECONDS"
  done
}

where_the_logs_are() {
  saved_logs_place
  if [[ "$SAVED_KIND" == folder ]]; then
    echo "Your logs are kept in $SAVED_WHERE (SAVED_LOGS); the next start (./start.sh) puts them back in the bucket."
  else
    echo "Your logs are kept in the Docker volume $SAVED_WHERE; the next start (./start.sh) puts them back in the bucket."
  fi
  echo "To copy them to a folder (JSON Lines files): ./start.sh export DIR"
}

# nginx first (no new lines), then fluentd once it sent everything, then the stream
# drained into S3 and the bucket's objects saved, then the containers removed.
graceful_stop() {
  local timeout started deadline remaining at_risk=""
  timeout=$(setting DRAIN_TIMEOUT 120)
  [[ "$timeout" =~ ^[0-9]+$ ]] || die "DRAIN_TIMEOUT must be a number of seconds, not '$timeout'"
  started=$(now)
  deadline=$((started + timeout))
  echo "Stopping without losing a line (up to DRAIN_TIMEOUT=${timeout}s)..."
  quietly docker compose stop web || echo "start.sh: could not stop nginx (see above); going on" >&2
  echo "nginx stopped: no new requests"
  refresh_states
  if service_running fluentd; then
    wait_for_fluentd "$started" "$deadline" "$timeout"
  else
    echo "fluentd is not running: what it did not send waits in its volume for the next start"
  fi
  quietly docker compose stop fluentd || echo "start.sh: could not stop fluentd (see above); going on" >&2
  echo "fluentd stopped"
  refresh_states
  if service_running localstack; then
    remaining=$((deadline - $(now)))
    ((remaining >= STREAM_DRAIN_MIN)) || remaining=$STREAM_DRAIN_MIN
    docker compose exec -T localstack python3 /opt/pipeline/init/pipeline_cli.py drain --timeout "$remaining" ||
      at_risk="the records still in the Kinesis stream (the stream is not kept across stops)"
    docker compose exec -T localstack python3 /opt/pipeline/init/bucket_mirror.py sync --timeout "$SYNC_TIMEOUT" ||
      at_risk="${at_risk:+$at_risk, and }the newest objects of the bucket (not saved yet)"
  else
    echo "localstack is not running: nothing left to deliver or save"
  fi
  docker compose down --remove-orphans
  where_the_logs_are
  if [[ -n "$at_risk" ]]; then
    die "stopped, but these may be lost: $at_risk (see the lines above)"
  fi
}

# --volumes: say what goes before anything goes; on a terminal, ask. Without a terminal
# the flag is the consent (scripts, CI).
forget_everything() {
  local command=${1:-"./start.sh down --volumes"} project answer image
  project=$(project_name)
  saved_logs_place
  echo "$command deletes, for good:"
  if [[ "$SAVED_KIND" == volume ]]; then
    echo "  - the saved logs: every object of the bucket (Docker volume $SAVED_WHERE)"
  fi
  echo "  - nginx's access log (volume ${project}_nginx-logs)"
  echo "  - fluentd's position in it and its buffer, lines not yet sent (volume ${project}_fluentd-state)"
  echo "  - LocalStack's downloads (volume ${project}_localstack-data; fetched again at the next start)"
  echo "  - the query tools' copies of newly merged parts (volume ${project}_query-cache; the saved logs hold them too)"
  if [[ "$command" == *uninstall ]]; then
    echo "  - the images built for this project: $FLUENTD_IMAGE, $QUERY_IMAGE"
  fi
  if [[ "$SAVED_KIND" == folder ]]; then
    echo "Your saved logs in $SAVED_WHERE (SAVED_LOGS) are kept: delete that folder by hand if you no longer want them."
  fi
  echo "To keep a copy of the logs first: ./start.sh export DIR, then run this again."
  if [[ -t 0 ]]; then
    read -r -p "Delete them? [y/N] " answer || answer=""
    case "$answer" in
      y | Y | yes | Yes | YES) ;;
      *)
        echo "Nothing deleted."
        exit 1
        ;;
    esac
  fi
  docker compose down --remove-orphans --volumes
  if [[ "$command" == *uninstall ]]; then
    for image in "$FLUENTD_IMAGE" "$QUERY_IMAGE"; do
      if docker image inspect "$image" >/dev/null 2>&1; then
        quietly docker image rm "$image" && echo "Removed image $image"
      fi
    done
  fi
  echo "Deleted."
}

# The images the stack pulled, which other projects may share: named, never removed.
# (the bases are the FROM lines of fluentd/Dockerfile and query/Dockerfile; LocalStack
# pulls the Lambda runtime's image, init_resource.py's LAMBDA_RUNTIME)
PULLED_IMAGES=(nginx:1.28.0 fluent/fluentd:v1.19.3-debian-2.2 python:3.13.7-slim-trixie node:22.12.0-slim public.ecr.aws/lambda/python:3.12)
uninstall() {
  check_docker
  forget_everything "./start.sh uninstall"
  echo "Kept, because other projects may use them; if none does, remove them with:"
  echo "  docker image rm $(setting LOCALSTACK_IMAGE localstack/localstack:4.14.0) ${PULLED_IMAGES[*]}"
  echo "  docker builder prune   # Docker's build cache (of every project on this machine)"
}

down() {
  case "${1:-}" in
    "") ;;
    --volumes | -v) ;;
    *) usage_error "unknown option for down: $1 (use --volumes)" ;;
  esac
  check_docker
  if [[ -n "${1:-}" ]]; then
    forget_everything
  elif stack_running; then
    graceful_stop
  else
    docker compose down --remove-orphans
  fi
}

# --- export: the saved logs, copied to a folder of the user's ---------------------------

EXPORT_CONTAINER="" EXPORT_NETWORK_ONLY=""
remove_export_container() {
  if [[ -n "$EXPORT_CONTAINER" ]]; then docker rm -f "$EXPORT_CONTAINER" >/dev/null 2>&1 || true; fi
  # the stack was down: `compose run` created its network only for the export
  if [[ -n "$EXPORT_NETWORK_ONLY" ]]; then docker compose down >/dev/null 2>&1 || true; fi
}

# bucket_mirror.py export writes the files inside a one-off container of the localstack
# service (it mounts the saved logs whether the stack runs or not), and `docker cp` copies
# them out: the Docker CLI writes them as the user who runs it, on Linux (also rootless
# Docker and user-namespace remapping) and macOS alike, and needs no bind mount of DIR
# (no SELinux label, no uid of the container on the files).
export_logs() {
  local target=$1 output
  check_docker
  [[ "$target" == /* ]] || target=$invoked_from/$target
  mkdir -p -- "$target" || die "cannot create the folder $target"
  target=$(cd -- "$target" && pwd)
  refresh_states
  if service_running localstack; then
    docker compose exec -T localstack python3 /opt/pipeline/init/bucket_mirror.py sync --timeout "$SYNC_TIMEOUT" ||
      echo "start.sh: note: the newest objects may be missing from the export (see above)" >&2
  fi
  [[ -n "$(docker compose ps --all --quiet 2>/dev/null || true)" ]] || EXPORT_NETWORK_ONLY=1
  EXPORT_CONTAINER="$(project_name)-export-$$"
  trap remove_export_container EXIT
  if ! output=$(docker compose run --no-deps -T --name "$EXPORT_CONTAINER" --entrypoint python3 localstack \
    /opt/pipeline/init/bucket_mirror.py export --to /tmp/export); then
    [[ -z "$output" ]] || echo "$output"
    die "the export failed (see above); nothing was copied to $target"
  fi
  echo "${output//\/tmp\/export/$target}" # its line names the user's folder, not the container's
  quietly docker cp "$EXPORT_CONTAINER:/tmp/export/." "$target" ||
    die "could not copy the exported files to $target (see above)"
  echo "Copied to $target (files there with the same names were replaced)."
}

require_localstack() {
  check_docker
  refresh_states
  local status
  read -r status _ <<<"$(container_state localstack)"
  [[ "$status" == running ]] || die "the stack is not running: start it with ./start.sh"
}

provision() {
  require_localstack
  echo "Running provisioning again in the running stack..."
  docker compose exec -T localstack "$PROVISION_HOOK" ||
    die "provisioning failed (its output is above): fix the cause, then run ./start.sh provision again"
  up
}

# A command of init/ in the LocalStack container: its python3 has boto3 and its
# environment holds the stack's settings.
localstack_python() {
  local flags=()
  [[ -t 0 && -t 1 ]] || flags=(-T) # a terminal gets one: Ctrl-C then reaches the command
  docker compose exec ${flags[@]+"${flags[@]}"} localstack python3 "$@"
}

in_localstack() {
  require_localstack
  localstack_python "$@"
}

# Each resource's state, then what the saved logs hold; fails when either does.
status() {
  local code=0 mirror=0
  require_localstack
  localstack_python /opt/pipeline/init/init_resource.py --status || code=$?
  localstack_python /opt/pipeline/init/bucket_mirror.py status || mirror=$?
  ((code != 0)) || code=$mirror
  return "$code"
}

# One of the query tools (query/) in its own image on the compose network; arguments are
# passed on as they are, never evaluated.
QUERY_IMAGE=centralized-logging-pipeline/query:duckdb-2.0.1
tool() {
  local script=$1 needs=$2 health built dashboard flags=()
  shift 2
  if [[ "$script" == logs_query.py ]] && dashboard=$(dashboard_ready); then
    in_dashboard "$dashboard" "$script" "$@"
  fi
  check_docker
  refresh_states
  read -r _ _ _ health _ <<<"$(container_state "$needs")"
  [[ "$health" == healthy ]] || die "the stack is not running ($needs: ${health:-not started}): start it with ./start.sh"
  if ! built=$(docker image inspect --format "{{index .Config.Labels \"$SOURCE_LABEL\"}}" "$QUERY_IMAGE" 2>/dev/null); then
    echo "First use: building the query tools' image (a minute or so)..." >&2
  fi
  [[ "${built:-}" == "$QUERY_SOURCE" ]] || docker compose --profile tools build --quiet query
  if [[ "$script" == logs_query.py ]]; then
    dashboard=$(dashboard_running)
    if [[ -n "$dashboard" ]]; then
      in_dashboard "$dashboard" "$script" "$@"
    fi
  fi
  [[ -t 0 && -t 1 ]] || flags=(-T) # no terminal: plain output, e.g. --format csv > file
  exec docker compose --profile tools run --rm --no-deps ${flags[@]+"${flags[@]}"} query python3 "/opt/query/$script" "$@"
}

# ./start.sh query's quick way: the dashboard answers on its loopback port what it holds,
# as the tool would print it, with no docker call or process start (query/README.md).
# Exits with that answer, or with an error in the SQL; returns when there is none (no curl,
# no dashboard of this project and these sources, a range it leaves to the tool, a mistake
# in the arguments), and the tool runs as before and says in its own words what is wrong.
quick_query() {
  local status note answer headers
  command -v curl >/dev/null 2>&1 || return 0
  answer=$(mktemp) headers=$(mktemp)
  trap 'rm -f "$answer" "$headers"' EXIT
  # the arguments as they are, each ended by a NUL: nothing to quote, nothing evaluated
  status=$({ (($# == 0)) || printf '%s\0' "$@"; } | curl --silent --noproxy '*' --max-time 300 \
    --header "X-Logs-Stack: $(project_name)" --header "X-Logs-Source: $QUERY_SOURCE" \
    --header 'Content-Type: application/octet-stream' --data-binary @- \
    --output "$answer" --dump-header "$headers" --write-out '%{http_code}' \
    "http://127.0.0.1:$(setting DASHBOARD_PORT 8081)/api/query") || status=000
  case "$status" in
    200)
      cat "$answer" || true # a reader that stopped early (| head) is not an error
      note=$(sed -n 's/^[Xx]-[Ll]ogs-[Nn]ote: //p' "$headers" | tr -d '\r')
      [[ -z "$note" ]] || echo "$note" >&2
      exit 0
      ;;
    422) cat "$answer" >&2; exit 1 ;;
  esac
  rm -f "$answer" "$headers"
  trap - EXIT
}

# The tool in the dashboard's container: it runs an image of these very sources, with the
# query service's settings and the saved logs, so a query there creates no container (~1 s
# less, docs/performance.md) and is answered from its loaded tables.
in_dashboard() {
  local dashboard=$1 script=$2 flags=()
  shift 2
  [[ -t 0 && -t 1 ]] && flags=(--interactive --tty) # Ctrl-C reaches the query
  exec docker exec ${flags[@]+"${flags[@]}"} "$dashboard" python3 "/opt/query/$script" "$@"
}

# The query's quick way in: one `docker ps` for what tool() learns from five docker calls
# (~0.35 s of a ~0.7 s query, docs/performance.md). Prints the dashboard's container id
# when LocalStack is healthy and the dashboard runs these sources; fails otherwise, and
# tool()'s checks then say what is wrong.
dashboard_ready() {
  local service state status id source healthy=0 dashboard=""
  while IFS='|' read -r service state status id source; do
    [[ "$service" == localstack && "$state" == running && "$status" == *"(healthy)" ]] && healthy=1
    [[ "$service" == dashboard && "$state" == running && "$source" == "$QUERY_SOURCE" ]] && dashboard=$id
  done < <(docker ps --filter "label=com.docker.compose.project=$(project_name)" \
    --format '{{.Label "com.docker.compose.service"}}|{{.State}}|{{.Status}}|{{.ID}}|{{.Label "'"$SOURCE_LABEL"'"}}' \
    2>/dev/null || true)
  ((healthy)) && [[ -n "$dashboard" ]] && echo "$dashboard"
}

# The dashboard's container id if it runs and was created from an image of query/ as it is
# now (its source label; from refresh_states). Not the image id: `compose up --build` can
# leave identical builds under several ids, and moves the tag between them.
dashboard_running() {
  local service status id source
  while read -r service status _ _ _ _ id source; do
    if [[ "$service" == dashboard && "$status" == running && "$source" == "$QUERY_SOURCE" ]]; then
      echo "$id"
      return 0
    fi
  done <<<"$STATES"
}

# `./start.sh COMMAND --help`: that command's lines of the usage above; no Docker needed.
command_help() {
  local command=$1 line trimmed printing=0 pattern
  pattern="^\./start\.sh (\[$command\]|$command)( |$)"
  while IFS= read -r line; do
    trimmed=${line#"${line%%[![:space:]]*}"}
    if [[ "$trimmed" == ./start.sh* ]]; then
      printing=0
      [[ "$trimmed" =~ $pattern ]] && printing=1
    elif [[ "$line" != "    "* ]]; then
      printing=0
    fi
    if ((printing)); then echo "$line"; fi
  done < <(usage)
  case "$command" in
    query | traffic | compact | tail) echo "More: query/README.md (the tools run in their own image; the stack must run)" ;;
    ls | cat | logs) echo "More: init/pipeline_cli.py (runs in the LocalStack container; the stack must run)" ;;
  esac
}

main() {
  local arg
  case "${1:-}" in
    up | down | uninstall | export | provision | status | ls | cat | logs | traffic | query | compact | tail)
      for arg in "${@:2}"; do
        if [[ "$arg" == -h || "$arg" == --help ]]; then
          command_help "$1"
          return 0
        fi
      done
      ;;
  esac
  case "${1:-}" in
    "") up ;;
    up) [[ $# -eq 1 ]] || usage_error "up takes no options"; up ;;
    down) shift; [[ $# -le 1 ]] || usage_error "down takes at most one option (--volumes)"; down "$@" ;;
    uninstall) [[ $# -eq 1 ]] || usage_error "uninstall takes no options"; uninstall ;;
    provision) [[ $# -eq 1 ]] || usage_error "provision takes no options"; provision ;;
    status) [[ $# -eq 1 ]] || usage_error "status takes no options"; status ;;
    export)
      [[ $# -eq 2 && -n "$2" ]] || usage_error "export takes one folder: ./start.sh export DIR"
      [[ "$2" != -* ]] || usage_error "unknown option for export: $2"
      export_logs "$2"
      ;;
    ls | cat | logs) in_localstack /opt/pipeline/init/pipeline_cli.py "$@" ;;
    traffic) shift; tool traffic.py web --url http://web:80 "$@" ;;
    query) shift; quick_query "$@"; tool logs_query.py localstack "$@" ;;
    compact) shift; tool compact_hours.py localstack "$@" ;;
    tail) shift; tool tail.py localstack "$@" ;;
    -h | --help | help) usage ;;
    *) usage_error "unknown command or option: $1" ;;
  esac
}

main "$@"
