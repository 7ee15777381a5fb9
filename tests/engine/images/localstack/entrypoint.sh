#!/bin/bash
# Stand-in entrypoint (see the Dockerfile): like upstream's bin/docker-entrypoint.sh it
# ends in the supervisor, which owns SIGTERM and SHUTDOWN_TIMEOUT.
set -euo pipefail
exec localstack-supervisor
