#!/usr/bin/env bash
# Retention and the long-term series on InfluxDB 1.x (setup.iql), and optionally Grafana's
# read-only user. Safe to run again.
#
#   deploy/influxdb/v1/setup.sh [--url http://127.0.0.1:8086] [--db thermopipe]
#                               [--user ADMIN --password-file FILE] [--grafana-password-file FILE]
#
# With authentication on (auth-enabled = true), give an admin's user and password file; with
# --grafana-password-file it also makes the user "grafana" with READ on the database only.
# A continuous query fills "long_term"."temperature_15m" from the moment it exists; to fill it
# for data written before, run its SELECT ... INTO once with a WHERE time range (README).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
url=http://127.0.0.1:8086 db=thermopipe user="" password_file="" grafana_file=""
while [ $# -gt 0 ]; do
  case $1 in
    --url) url=$2; shift 2 ;;
    --db) db=$2; shift 2 ;;
    --user) user=$2; shift 2 ;;
    --password-file) password_file=$2; shift 2 ;;
    --grafana-password-file) grafana_file=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $db =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] || { echo "error: bad database name $db" >&2; exit 2; }

auth=()
if [ -n "$user" ]; then
  auth=(--user "$user:$(cat "$password_file")")
fi

run() {  # one InfluxQL statement; fails on an error that is not "already exists"
  local answer
  answer=$(curl -sS --fail-with-body "${auth[@]}" "$url/query" --data-urlencode "q=$1")
  if [[ $answer == *'"error"'* && $answer != *"already exists"* ]]; then
    echo "error: $1 -> $answer" >&2
    return 1
  fi
}

while IFS= read -r line; do
  [[ -z $line || $line == --* ]] && continue
  run "${line//\"thermopipe\"/\"$db\"}"
done <"$here/setup.iql"

if [ -n "$grafana_file" ]; then
  grafana_password=$(cat "$grafana_file")
  run "CREATE USER \"grafana\" WITH PASSWORD '${grafana_password//\'/\\\'}'"
  run "GRANT READ ON \"$db\" TO \"grafana\""
fi
echo "thermopipe: database $db keeps raw data 90 days and 15-minute series 5 years (long_term)"
