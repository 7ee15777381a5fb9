#!/bin/bash
# Stand-in entrypoint (see the Dockerfile): the official image's template step, then the
# command. Only variables set in the environment (and matching NGINX_ENVSUBST_FILTER) are
# replaced, so nginx's own $variables stay.
set -euo pipefail
templates=/etc/nginx/templates
if [[ "${1:-}" == nginx* && -d "$templates" ]]; then
  defined=$(env | cut -d= -f1 | grep -E -- "${NGINX_ENVSUBST_FILTER:-}" | sed 's/^/$/' | tr '\n' ' ' || true)
  shopt -s nullglob
  for template in "$templates"/*.template; do
    output="/etc/nginx/conf.d/$(basename "$template" .template)"
    echo "$0: rendering $template to $output"
    envsubst "$defined" <"$template" >"$output"
  done
fi
exec "$@"
