#!/usr/bin/env bash
# First-time set-up of the server stack (deploy/compose.yaml). Safe to run again: it never
# overwrites an existing secret.
#
#   deploy/scripts/setup-server.sh [--hub-workers N]
#
# 1. writes deploy/.env from deploy/.env.example with a random value for every "change-me"
#    (mode 0600; it is git-ignored);
# 2. adds the hub's MQTT accounts (password HUB_MQTT_PASSWORD from .env) to
#    deploy/mosquitto/passwd, one per connection of the hub, because the broker makes each
#    username the client id (use_username_as_clientid): hub and hub-ha (its Home Assistant
#    connection) for one hub process, and hub-w<i> and hub-w<i>-ha for each worker i of
#    `hub run --workers N` (hub.toml: mqtt.account_per_connection = true). An account already
#    in the password file is kept. Every account must have a "user" block in
#    deploy/mosquitto/acl (it ships blocks for 4 workers): the script stops if one is missing.
#    Each Home Assistant account's block (hub-ha, hub-w<i>-ha) must let it ask devices for a
#    birth (topic write thermopipe/+/+/cmd/rebirth): an ACL from before that line was shipped
#    gets it added in place, and the script says so.
#
# Options:
#   --hub-workers N        accounts for N hub workers (default 4; 0: one hub process only)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
deploy=$(dirname "$here")
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

env_file="$deploy/.env"
passwd_file="$deploy/mosquitto/passwd"
acl_file="$deploy/mosquitto/acl"
hub_workers=4

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case $1 in
    --hub-workers) hub_workers=${2:-}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ $hub_workers =~ ^[0-9]+$ ]] || die "invalid --hub-workers '$hub_workers'"
mapfile -t accounts < <(hub_accounts "$hub_workers")
for account in "${accounts[@]}"; do
  grep -qx "user $account" "$acl_file" ||
    die "$acl_file has no 'user $account' block: copy the hub's block for it (see the comments there)"
done
# The Home Assistant connection asks devices for a birth (discovery switched on after they
# connected); without this line the broker drops the request and the device appears only at its
# next periodic status. Added after the block's "user" line where an older ACL lacks it.
rebirth="topic write thermopipe/+/+/cmd/rebirth"
for account in "${accounts[@]}"; do
  [[ $account == *-ha ]] || continue
  has=$(awk -v u="user $account" -v t="$rebirth" '
    $0 ~ /^user / { in_block = ($0 == u) } in_block && $0 == t { found = 1 }
    END { print found ? "yes" : "no" }' "$acl_file")
  [ "$has" = no ] || continue
  [ -w "$acl_file" ] || die "$acl_file lacks '$rebirth' for $account and is not writable by $(id -un)"
  awk -v u="user $account" -v t="$rebirth" '{ print } $0 == u { print t }' "$acl_file" \
    >"$acl_file.new"
  cat "$acl_file.new" >"$acl_file"  # in place: the file keeps its owner and mode
  rm -f "$acl_file.new"
  echo "added '$rebirth' to the $account block of $acl_file (reload Mosquitto to apply it)"
done

if [ -e "$env_file" ]; then
  echo "keeping the existing $env_file"
  # a secret added to .env.example since (e.g. GRAFANA_INFLUXDB_PASSWORD): appended, random
  while IFS= read -r line; do
    if [[ $line =~ ^([A-Z0-9_]+)=change-me$ ]] && ! grep -q "^${BASH_REMATCH[1]}=" "$env_file"; then
      printf '%s=%s\n' "${BASH_REMATCH[1]}" "$(random_secret)" >>"$env_file"
      echo "added ${BASH_REMATCH[1]} to $env_file"
    fi
  done <"$deploy/.env.example"
else
  (umask 077
   while IFS= read -r line; do
     if [[ $line =~ ^([A-Z0-9_]+)=change-me$ ]]; then
       printf '%s=%s\n' "${BASH_REMATCH[1]}" "$(random_secret)"
     else
       printf '%s\n' "$line"
     fi
   done <"$deploy/.env.example" >"$env_file")
  echo "wrote $env_file with new random secrets (keep it private; it is not committed)"
fi

hub_password=$(sed -n 's/^HUB_MQTT_PASSWORD=//p' "$env_file")
[ -n "$hub_password" ] || die "HUB_MQTT_PASSWORD is not set in $env_file"
added=()
for account in "${accounts[@]}"; do
  if [ -e "$passwd_file" ] && grep -q "^$account:" "$passwd_file"; then
    continue
  fi
  mqtt_passwd "$passwd_file" "$account" "$hub_password"
  added+=("$account")
done
if [ ${#added[@]} -gt 0 ]; then
  echo "added the hub's MQTT accounts to $passwd_file: ${added[*]}"
else
  echo "keeping the hub's entries in $passwd_file (${accounts[*]})"
fi

cat <<NEXT

Next:
  cd $deploy && docker compose up -d --build
  Add each device:  sudo $here/add-device.sh --broker HOST SITE DEVICE   (HOST: this server as the Pis reach it)
  Grafana:          http://$(hostname -f 2>/dev/null || hostname):3000  (user admin, password GRAFANA_ADMIN_PASSWORD in .env)
NEXT
