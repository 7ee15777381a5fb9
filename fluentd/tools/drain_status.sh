#!/usr/bin/env bash
# What fluentd has not yet handed to Kinesis, as one line: "unread=<bytes> buffered=<bytes>".
#
#   unread    bytes of the access log after the position in_tail recorded for the file's
#             current inode (fluent.conf: follow_inodes, so the pos_file is keyed by inode);
#             the whole file when it has no entry yet (read_from_head); 0 when there is no log
#   buffered  bytes of the file buffer's chunks (buffer.*.log; a chunk is deleted once
#             Kinesis accepted it), metadata files (.log.meta) not counted
#
# `./start.sh down` runs it in the fluentd container (`docker compose exec fluentd bash
# /fluentd/tools/drain_status.sh`) once nginx has stopped, and stops fluentd when both are 0.
# Only reads; needs bash and coreutils (the fluentd image has nothing more), and the
# environment compose gives fluentd (ACCESS_LOG_PATH, FLUENTD_STATE_DIR).
#
# pos_file lines (fluentd 1.x, in_tail/position_file.rb): "<path>\t<pos %016x>\t<inode %016x>";
# an entry no longer watched (a rotated file read to its end) has pos ffffffffffffffff.
set -euo pipefail

log=${ACCESS_LOG_PATH:-/var/log/nginx/pipeline/access.log}
state=${FLUENTD_STATE_DIR:-/fluentd/state}
pos_file=$state/nginx-access.pos
unwatched=ffffffffffffffff
hex16='^[0-9a-fA-F]{16}$'

# The position recorded for this inode (16 lowercase hex digits), or nothing. Compared as
# text: inode numbers may use all 64 bits, beyond bash's signed arithmetic. The last
# entry wins, as when fluentd loads the file.
recorded_position() {
  local inode_hex=$1 path pos inode found=""
  [[ -f "$pos_file" ]] || return 0
  while IFS=$'\t' read -r path pos inode || [[ -n "${path:-}" ]]; do
    inode=${inode%$'\r'}
    [[ "$pos" =~ $hex16 && "$inode" =~ $hex16 ]] || continue
    pos=${pos,,} inode=${inode,,}
    [[ "$pos" == "$unwatched" || "$inode" != "$inode_hex" ]] && continue
    found=$pos
  done <"$pos_file"
  echo "$found"
}

unread=0
if [[ -f "$log" ]]; then
  read -r size inode < <(stat -L -c '%s %i' -- "$log")
  pos=$(recorded_position "$(printf '%016x' "$inode")")
  if [[ -z "$pos" ]]; then
    unread=$size # not seen yet: fluentd reads it from its first line
  elif ((16#$pos > size)); then
    unread=$size # truncated below the position: fluentd reads it again from the start
  else
    unread=$((size - 16#$pos))
  fi
fi

buffered=0
shopt -s nullglob globstar
chunks=("$state"/buffer/**/buffer.*.log)
if ((${#chunks[@]} > 0)); then
  # a chunk may be sent and deleted between the glob and stat: it then counts as 0
  while read -r bytes; do
    buffered=$((buffered + bytes))
  done < <(stat -c '%s' -- "${chunks[@]}" 2>/dev/null || true)
fi

echo "unread=$unread buffered=$buffered"
