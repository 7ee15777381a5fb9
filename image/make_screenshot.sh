#!/usr/bin/env bash
# Take image/localhost.png: the landing page, served by a real nginx running the project's
# config (Debian's nginx), photographed by headless Chromium (Debian's chromium).
#   apt-get install nginx chromium && image/make_screenshot.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

chromium=$(command -v chromium || command -v chromium-browser || true)
[[ -n "$chromium" ]] || { echo "make_screenshot.sh: chromium not installed (apt-get install chromium)" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill "$(cat "$work/pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$work"' EXIT

python3 - "$work" <<'PY' &
import sys, time
sys.path[:0] = ["tests", "init"]
from pathlib import Path
from support.nginx import Nginx
work = Path(sys.argv[1])
server = Nginx("/usr/sbin/nginx", work / "nginx")
(work / "port").write_text(str(server.port))
(work / "pid").write_text(str(server.process.pid))
while not (work / "done").exists():
    time.sleep(0.1)
server.stop()
PY
for _ in $(seq 100); do [[ -f "$work/port" ]] && break; sleep 0.1; done
port=$(cat "$work/port")

"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/profile" --hide-scrollbars --window-size=1100,900 \
  --screenshot="$PWD/image/localhost.png" "http://127.0.0.1:$port/" >/dev/null 2>&1
touch "$work/done"
wait
echo "wrote image/localhost.png"
