#!/usr/bin/env bash
# First-time set-up of the server stack (deploy/compose.yaml). Safe to run again: it never
# overwrites an existing secret.
#
#   deploy/scripts/setup-server.sh
#
# 1. writes deploy/.env from deploy/.env.example with a random value for every "change-me"
#    (mode 0600; it is git-ignored);
# 2. adds the hub's MQTT user (password HUB_MQTT_PASSWORD from .env) to deploy/mosquitto/passwd.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
deploy=$(dirname "$here")
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

env_file="$deploy/.env"
passwd_file="$deploy/mosquitto/passwd"

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
if [ -e "$passwd_file" ] && grep -q '^hub:' "$passwd_file"; then
  echo "keeping the hub's entry in $passwd_file"
else
  mqtt_passwd "$passwd_file" hub "$hub_password"
  echo "added the MQTT user 'hub' to $passwd_file"
fi

cat <<NEXT

Next:
  cd $deploy && docker compose up -d --build
  Add each device:  sudo $here/add-device.sh SITE DEVICE
  Grafana:          http://$(hostname -f 2>/dev/null || hostname):3000  (user admin, password GRAFANA_ADMIN_PASSWORD in .env)
NEXT
