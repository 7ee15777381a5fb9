#!/usr/bin/env bash
# Start the pipeline (nginx -> fluentd -> Kinesis -> Lambda -> S3) on this machine.
#
#   ./start.sh                  build, start, wait until provisioned, print next steps
#   ./start.sh down             stop and remove the containers
#   ./start.sh down --volumes   ... and the volumes (access log, fluentd's position and buffer)
#   ./start.sh --help
#
# Needs Docker with Compose v2. Settings: .env (see .env.example).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

usage() {
  sed -n '2,9s/^# \{0,1\}//p' "$0"
}

die() {
  echo "start.sh: $*" >&2
  exit 1
}

usage_error() {
  echo "start.sh: $* (see ./start.sh --help)" >&2
  exit 2
}

# A value from the environment, else from .env (read as data, never executed), else a default.
setting() {
  local name=$1 default=$2 value=""
  if [[ -n "${!name:-}" ]]; then
    value=${!name}
  elif [[ -f .env ]]; then
    value=$(grep -E "^${name}=" .env | tail -n 1 | cut -d= -f2- | sed -e 's/^["'\'']//' -e 's/["'\'']$//' || true)
  fi
  echo "${value:-$default}"
}

check_docker() {
  command -v docker >/dev/null 2>&1 ||
    die "docker not found: install Docker Desktop (macOS) or Docker Engine (Linux) first"
  docker info >/dev/null 2>&1 ||
    die "the Docker engine is not running (or this user may not use it): start Docker Desktop, or 'sudo systemctl start docker'; on Linux, add yourself to the docker group"
  docker compose version >/dev/null 2>&1 ||
    die "Docker Compose v2 not found ('docker compose'): update Docker, or install the compose plugin"
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

check_ports() {
  local web_port running
  web_port=$(setting WEB_PORT 80)
  running=$(docker compose ps --status running --quiet 2>/dev/null || true)
  [[ -n "$running" ]] && return 0 # our own stack holds the ports
  if port_in_use "$web_port"; then
    die "port $web_port is taken by another program: stop it, or set WEB_PORT=8080 in .env"
  fi
  if port_in_use 4566; then
    die "port 4566 is taken (another LocalStack?): stop it first ('docker ps' shows running containers)"
  fi
}

check_localstack_image() {
  local image token
  image=$(setting LOCALSTACK_IMAGE localstack/localstack:4.14.0)
  token=$(setting LOCALSTACK_AUTH_TOKEN "")
  if [[ "$image" != "localstack/localstack:4.14.0" && -z "$token" ]]; then
    echo "start.sh: note: $image needs LOCALSTACK_AUTH_TOKEN (images after 4.14.0 exit with code 55 without one)" >&2
  fi
}

# The health of one service's container: healthy, starting, unhealthy, exited, or missing.
service_state() {
  local id
  id=$(docker compose ps --all --quiet "$1" 2>/dev/null | head -n 1)
  [[ -n "$id" ]] || { echo missing; return; }
  docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null ||
    echo missing
}

wait_until_healthy() {
  local timeout started now states all_healthy service state
  timeout=$(setting START_TIMEOUT 600)
  [[ "$timeout" =~ ^[0-9]+$ ]] || die "START_TIMEOUT must be a number of seconds, not '$timeout'"
  started=$SECONDS
  while true; do
    states="" all_healthy=1
    for service in localstack fluentd web; do
      state=$(service_state "$service")
      states+="$service: $state  "
      [[ "$state" == healthy ]] || all_healthy=0
      if [[ "$state" == exited || "$state" == dead ]]; then
        printf '\n' >&2
        die "$service stopped; see 'docker compose logs $service'"
      fi
    done
    now=$((SECONDS - started))
    if [[ -t 1 ]]; then printf '\r%-90s' "waiting (${now}s): $states"; fi
    ((all_healthy)) && break
    if ((now >= timeout)); then
      printf '\n' >&2
      die "not ready after ${timeout}s ($states); see 'docker compose logs localstack' (the first start downloads images and kinesis-mock)"
    fi
    sleep 2
  done
  if [[ -t 1 ]]; then printf '\n'; fi
}

up() {
  check_docker
  check_ports
  check_localstack_image
  echo "Building and starting nginx, fluentd and LocalStack (the first start downloads images: minutes)..."
  docker compose up --detach --build
  wait_until_healthy
  local web_port bucket url
  web_port=$(setting WEB_PORT 80)
  bucket=$(setting BUCKET_NAME nginx-accesslog)
  url="http://localhost$([[ "$web_port" == 80 ]] || echo ":$web_port")/"
  cat <<EOF
The pipeline is up and provisioned.

  1. Open $url (every request becomes a line in S3 within seconds)
  2. List the bucket:     docker compose exec localstack awslocal s3 ls s3://$bucket --recursive
                          (or, with awscli-local on this machine: awslocal s3 ls s3://$bucket --recursive)
  3. Follow the logs:     docker compose logs --follow
  Status and hints:       python3 init/init_resource.py --status
  Stop:                   ./start.sh down   (add --volumes to forget the log and fluentd's state)
EOF
}

down() {
  local volumes=()
  case "${1:-}" in
    "") ;;
    --volumes | -v) volumes=(--volumes) ;;
    *) usage_error "unknown option for down: $1 (use --volumes)" ;;
  esac
  check_docker
  # ${a[@]+...}: an empty array under `set -u` on macOS's bash 3.2
  docker compose down --remove-orphans ${volumes[@]+"${volumes[@]}"}
}

main() {
  case "${1:-}" in
    "") up ;;
    up) [[ $# -eq 1 ]] || usage_error "up takes no options"; up ;;
    down) shift; [[ $# -le 1 ]] || usage_error "down takes at most one option (--volumes)"; down "$@" ;;
    -h | --help | help) usage ;;
    *) usage_error "unknown command or option: $1" ;;
  esac
}

main "$@"
