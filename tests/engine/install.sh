#!/usr/bin/env bash
# What the engine tests need on a Debian/Ubuntu machine, as root (.ci/run runs it):
# dockerd (Debian's docker.io), debootstrap (the stand-in images' base), and Compose v2,
# which bookworm lacks: the Go binary from Debian trixie's docker-compose package (it
# needs only libc), as a CLI plugin in /usr/local/lib/docker/cli-plugins; no trixie
# package is installed (it would pull trixie's libc).
# Facts: ../shared/facts/docker-engine.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

export DEBIAN_FRONTEND=noninteractive
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

plugin=/usr/local/lib/docker/cli-plugins/docker-compose
version=2.26.1-4
if ! docker compose version >/dev/null 2>&1 && [[ ! -x "$plugin" ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/archives/partial"
  echo "deb http://deb.debian.org/debian trixie main" >"$work/sources.list"
  apt_options=(-o "Dir::Etc::sourcelist=$work/sources.list" -o Dir::Etc::sourceparts=-
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
    -o APT::Sandbox::User=root)
  apt-get -qq "${apt_options[@]}" update
  (cd "$work" && apt-get -qq "${apt_options[@]}" download "docker-compose=$version")
  dpkg-deb -x "$work"/docker-compose_*.deb "$work/root"
  mkdir -p "$(dirname "$plugin")"
  install -m 755 "$work/root/usr/libexec/docker/cli-plugins/docker-compose" "$plugin"
fi
echo "engine tools: $(dockerd --version | cut -d, -f1), debootstrap $(dpkg-query -W -f='${Version}' debootstrap), $(docker compose version)"
