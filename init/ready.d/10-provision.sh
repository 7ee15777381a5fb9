#!/bin/bash
# Provision the pipeline: LocalStack's ready.d hook on every start, and `./start.sh
# provision` to run it again in the running stack (a failed hook stays failed until then).
#
# LocalStack runs .sh hooks with subprocess.call (exec bit and shebang needed) and its
# own environment, whose python3 has boto3. The outcome is written to a state file that
# the compose healthcheck (init/localstack_ready.py) reads, so a successful re-run turns
# the stack healthy although LocalStack still lists this hook as ERROR.
set -euo pipefail

# The only things that differ between the image and a LocalStack host process (tests):
init_dir=${PIPELINE_INIT_DIR:-/opt/pipeline/init}
endpoint=${PIPELINE_ENDPOINT:-http://localhost:4566}
state_dir=${PIPELINE_STATE_DIR:-/tmp/pipeline}

mkdir -p "$state_dir"
state=$state_dir/provision.state
write_state() {
  printf '%s\n' "$1" >"$state.tmp"
  mv -f "$state.tmp" "$state"
}

write_state running
status=0
python3 "$init_dir/init_resource.py" --endpoint-url "$endpoint" --wait-timeout 300 2>&1 |
  tee "$state_dir/provision.log" || status=$?
if ((status == 0)); then
  write_state ok
else
  write_state "failed (exit $status)"
fi
exit "$status"
