#!/bin/bash
# LocalStack ready.d hook: provision the pipeline each time LocalStack becomes ready.
# The free image keeps nothing across restarts, so every start provisions itself.
# LocalStack runs .sh hooks with subprocess.call (exec bit and shebang needed), with its
# own Python environment, which has boto3. A failure marks this hook ERROR, which the
# compose healthcheck (init/localstack_ready.py) reports as unhealthy.
set -euo pipefail
exec python3 /opt/pipeline/init/init_resource.py --endpoint-url http://localhost:4566 --wait-timeout 300
