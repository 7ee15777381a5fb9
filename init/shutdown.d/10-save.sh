#!/bin/bash
# LocalStack's shutdown.d hook: runs when LocalStack stops (`./start.sh down`, `docker
# compose stop/restart localstack`), before its services stop. The free image then forgets
# everything, so wait until every object is saved (init/bucket_mirror.py sync), then stop
# the watcher. Docker allows this the compose file's stop_grace_period (60 s).
#
# The stream cannot be drained here: once LocalStack stops it answers 503 to every request
# but its own, so the function cannot write to S3 any more. `./start.sh down` drains it
# before it stops LocalStack; a stop of LocalStack alone loses what the stream still held
# (the last second or so of lines, see docs/persistence.md).
set -euo pipefail

init_dir=${PIPELINE_INIT_DIR:-/opt/pipeline/init}
endpoint=${PIPELINE_ENDPOINT:-http://localhost:4566}
state_dir=${PIPELINE_STATE_DIR:-/tmp/pipeline}
export PIPELINE_STATE_DIR=$state_dir

status=0
echo "pipeline: saving the logs before LocalStack stops"
python3 "$init_dir/bucket_mirror.py" --endpoint-url "$endpoint" sync --timeout 40 || status=1
python3 "$init_dir/bucket_mirror.py" --endpoint-url "$endpoint" stop-watcher --timeout 5 || status=1
exit "$status"
