#!/usr/bin/env bash
# The one test command: every test that can run on this machine (docs/testing.md).
# Creates .venv with the pinned test dependencies from pyproject.toml, then runs pytest.
# Extra arguments go to pytest, e.g. ./test.sh -k handler -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "test.sh: needs Python 3.11 or newer as '$python' (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" 'pip==25.3'
"${pip[@]}" --group test
exec .venv/bin/python -m pytest "$@"
