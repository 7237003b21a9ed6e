# Shared helpers for deploy/scripts/*.sh (sourced, not run).
# shellcheck shell=bash

MOSQUITTO_IMAGE="eclipse-mosquitto:2.0.18"   # keep in step with deploy/compose.yaml
MOSQUITTO_GID=1883   # the mosquitto group inside that image
# Service accounts that are not devices: a device may not take these usernames (nor any of the
# hub's per-connection accounts: hub-ha, hub-w0, hub-w0-ha, ...; see hub_accounts).
RESERVED_USERS=(hub grafana admin operator homeassistant)

# is_service_account NAME: true if NAME is a service account or one of the hub's accounts.
is_service_account() {
  local name=$1 reserved
  for reserved in "${RESERVED_USERS[@]}"; do
    [ "$name" != "$reserved" ] || return 0
  done
  [[ $name =~ ^hub(-w[0-9]+)?(-ha)?$ ]]
}

# is_hub_like NAME: true if NAME could be taken for a hub's account or client id: "hub" or
# "hub-..." / "hub_..." / "hub...." in any case (the hubs' accounts are hub, hub-ha, hub-w<i>
# and hub-w<i>-ha, and more workers add more of them).
is_hub_like() {
  local lower=${1,,}
  [[ $lower == hub || $lower == hub[-_.]* ]]
}

# hub_accounts N: the hub's MQTT accounts, one per connection (the broker binds the client id to
# the username: use_username_as_clientid): hub and hub-ha for one hub process, and hub-w<i> and
# hub-w<i>-ha for worker i of `hub run --workers N` (hub.toml mqtt.account_per_connection).
hub_accounts() {
  local n=$1 i
  printf '%s\n' hub hub-ha
  for ((i = 0; i < n; i++)); do printf '%s\n' "hub-w$i" "hub-w$i-ha"; done
}

die() { echo "error: $*" >&2; exit 1; }

# An identifier as schemas/ids.py defines it: 1-64 of A-Z a-z 0-9 _ . - starting with a letter or
# digit, so it is safe in a topic level and as a Mosquitto %u substitution.
check_id() {
  local what=$1 value=$2
  [[ $value =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]] ||
    die "invalid $what '$value': use 1-64 of A-Z a-z 0-9 _ . - starting with a letter or digit"
}

# A random secret of URL- and TOML-safe characters (no pipe that SIGPIPEs under pipefail).
random_secret() {
  local raw
  raw=$(head -c 48 /dev/urandom | base64 -w0)
  raw=${raw//[^A-Za-z0-9]/}
  printf '%s' "${raw:0:32}"
}

# mqtt_passwd FILE USER PASSWORD: add or update USER in Mosquitto's password file, in place (the
# file keeps its owner and mode). Uses mosquitto_passwd, or the pinned Mosquitto image if the tool
# is not installed here.
mqtt_passwd() {
  local file=$1 user=$2 pass=$3 create=()
  local dir; dir=$(cd "$(dirname "$file")" && pwd)
  [ -e "$file" ] || create=(-c)
  if [ -e "$file" ] && [ ! -w "$file" ]; then
    die "$file is not writable by $(id -un): run this script with sudo"
  fi
  if command -v mosquitto_passwd >/dev/null 2>&1; then
    mosquitto_passwd "${create[@]}" -b "$file" "$user" "$pass"
  elif command -v docker >/dev/null 2>&1; then
    docker run --rm -v "$dir:/work" "$MOSQUITTO_IMAGE" \
      mosquitto_passwd "${create[@]}" -b "/work/$(basename "$file")" "$user" "$pass"
  else
    die "mosquitto_passwd not found (apt-get install mosquitto) and no docker to run it"
  fi
  [ ${#create[@]} -eq 0 ] || chmod 0640 "$file"
  # group 1883 = the mosquitto user of the broker image: compose mounts the config read-only
  # (nothing of the checkout changes owner) and the broker reads this file after dropping root
  if [ "$(stat -c %g "$file")" != "$MOSQUITTO_GID" ] && ! chgrp "$MOSQUITTO_GID" "$file" 2>/dev/null; then
    echo "note: run 'sudo chgrp $MOSQUITTO_GID $file' so the broker container can read it" >&2
  fi
}
