#!/usr/bin/env bash
# Adds a device to the broker and writes its agent config.
#
#   deploy/scripts/add-device.sh --broker HOST [options] SITE DEVICE
#
# 1. adds DEVICE (the MQTT username is the device id) with a new random password to Mosquitto's
#    password file (default deploy/mosquitto/passwd; run again to rotate the password). The
#    broker makes the username the client id (use_username_as_clientid in mosquitto.conf): the
#    agent's own client id (mqtt.client_id, default thermopipe-SITE-DEVICE) is replaced by DEVICE
#    at the broker, so no other account can connect as this device and take its session;
#    and writes the device's block in the broker's ACL (default deploy/mosquitto/acl), which
#    binds the account to SITE and DEVICE: it publishes only thermopipe/SITE/DEVICE/event/+,
#    summary/+ and status, reads only its own cmd/+ and receipt, and nothing under the hubs'
#    thermopipe/_hub/ (run again with another SITE to move the device: the block is replaced);
# 2. writes OUT/agent.toml (deploy/agent.example.toml with site, device id, username, broker host
#    and port and the password reference filled in) and OUT/mqtt-password (mode 0600), default
#    OUT=deploy/devices/DEVICE, and prints the broker host and port it wrote.
# Then copy both files to the Pi and run deploy/pi/install.sh there (it prints the commands), and
# make Mosquitto re-read the password file and the ACL (compose: docker compose kill -s HUP mosquitto).
#
# Refused, with one line and exit status 1: a hub account's name (hub, hub-w0, hub-ha...: the
# broker makes the username the client id, so such a device would take over a hub's session)
# and any hub-like name (hub or hub-... in any case), a name starting with "_" (the hubs' own
# topics are under thermopipe/_hub/), and the other service accounts (grafana, homeassistant...).
# Also refused: no --broker (no default: this machine's own name is often not one a Pi can resolve),
# and a --broker that is not a host name or address (a URL, a port, spaces, quotes).
#
# Options:
#   --passwd FILE          Mosquitto password file to update
#   --acl FILE             Mosquitto ACL file to update (default deploy/mosquitto/acl)
#   --acl-only             only write the device's ACL block (a device added before the ACL
#                          bound devices to their site: keeps its password and agent.toml)
#   --out DIR              where agent.toml and mqtt-password go
#   --broker HOST          required: the broker's host name or IP address as the Pi reaches it
#                          (with --tls, a name or address its certificate carries); not needed with
#                          --acl-only
#   --port PORT            broker port (default 1883, or 8883 with --tls)
#   --tls                  connect to the TLS listener: keeps [mqtt.tls] (copy the CA to the Pi
#                          as /etc/thermopipe/ca.pem); without it the [mqtt.tls] table is
#                          commented out
#   --password-path PATH   where the agent reads its password on the Pi (default: the systemd
#                          credential that edge-agent.service loads from
#                          /etc/thermopipe/mqtt-password)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
deploy=$(dirname "$here")
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

passwd_file="$deploy/mosquitto/passwd"
acl_file="$deploy/mosquitto/acl"
acl_only=false
root=thermopipe  # the topic root of deploy/ (hub.toml mqtt.topic_root, the ACL's hub blocks)
out=""
broker=""
port=""
tls=false
password_path=/run/credentials/edge-agent.service/mqtt-password
example="$deploy/agent.example.toml"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --passwd) passwd_file=$2; shift 2 ;;
    --acl) acl_file=$2; shift 2 ;;
    --acl-only) acl_only=true; shift ;;
    --out) out=$2; shift 2 ;;
    --broker) broker=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --tls) tls=true; shift ;;
    --password-path) password_path=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    --*) die "unknown option $1 (see --help)" ;;
    *) args+=("$1"); shift ;;
  esac
done
[ ${#args[@]} -eq 2 ] || { echo "usage: $0 --broker HOST [options] SITE DEVICE" >&2; exit 2; }
site=${args[0]}
device=${args[1]}
[[ $site != _* ]] || die "invalid site '$site': names starting with '_' are the hubs' ($root/_hub/)"
[[ $device != _* ]] ||
  die "invalid device id '$device': names starting with '_' are the hubs' ($root/_hub/)"
! is_service_account "$device" || die "'$device' is a service account name, not a device id"
! is_hub_like "$device" || die "'$device' looks like a hub account (hub, hub-...): choose another device id"
check_id site "$site"
check_id "device id" "$device"
if [ -z "$port" ]; then if $tls; then port=8883; else port=1883; fi; fi
[[ $port =~ ^[0-9]+$ ]] || die "invalid port '$port'"
if ! $acl_only; then
  # No default: `hostname -f` is often a name only this machine knows ("vm", "server.localdomain").
  [ -n "$broker" ] || die "--broker HOST is required: the broker's host name or IP address as the \
Pi reaches it (this machine calls itself '$(hostname -f 2>/dev/null || hostname)': use that only if \
the Pi can resolve it)"
  case $broker in
    *://*) die "invalid broker host '$broker': a host name or address, not a URL (port: --port, TLS: --tls)" ;;
  esac
  # a host name, an IPv4 address or an IPv6 address (two or more colons); it goes into the TOML
  # between quotes, so nothing else may pass
  [[ $broker =~ ^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$ || $broker =~ ^[0-9A-Fa-f]*:[0-9A-Fa-f.:]*:[0-9A-Fa-f.:]*$ ]] ||
    die "invalid broker host '$broker': a host name or IP address (the port goes in --port)"
  case $broker in
    localhost|localhost.*|127.*|::1)
      echo "note: '$broker' is the Pi itself: right only for an agent on this machine" >&2 ;;
  esac
fi
[ -f "$example" ] || die "$example is missing"
out=${out:-"$deploy/devices/$device"}

# The device's ACL block, between markers, replacing the one it had (under any site).
[ -f "$acl_file" ] || die "$acl_file is missing (the broker's ACL: deploy/mosquitto/acl)"
[ -w "$acl_file" ] || die "$acl_file is not writable by $(id -un): run this script with sudo"
begin="# device $device (add-device.sh)"
end="# end device $device"
previous=$(awk -v b="$begin" '$0 == b { getline; getline; print $3 }' "$acl_file" |
           cut -d/ -f2)
awk -v b="$begin" -v e="$end" '$0 == b { skip = 1 } !skip { print } $0 == e { skip = 0 }' \
  "$acl_file" >"$acl_file.new"
cat >>"$acl_file.new" <<BLOCK
$begin
user $device
topic write $root/$site/$device/event/+
topic write $root/$site/$device/summary/+
topic write $root/$site/$device/status
topic read $root/$site/$device/cmd/+
topic read $root/$site/$device/receipt
$end
BLOCK
cat "$acl_file.new" >"$acl_file"  # in place: the file keeps its owner and mode
rm -f "$acl_file.new"
if [ -n "$previous" ] && [ "$previous" != "$site" ]; then
  echo "note: device '$device' moved from site '$previous' to '$site' in $acl_file" >&2
fi
if $acl_only; then
  echo "Wrote the ACL block of device '$device' (site '$site') in $acl_file."
  echo "Make Mosquitto re-read it: docker compose -f $deploy/compose.yaml kill -s HUP mosquitto"
  exit 0
fi

password=$(random_secret)
mkdir -p "$(dirname "$passwd_file")"
mqtt_passwd "$passwd_file" "$device" "$password"

mkdir -p "$out"
# The password goes in its own file, never into the config (the config says file:PATH).
(umask 077; printf '%s\n' "$password" >"$out/mqtt-password")
chmod 0600 "$out/mqtt-password"

# Fill in the example, keeping its comments: set_key SECTION KEY VALUE sets every "KEY = ..." line
# of the TOML table SECTION ("*": any table) to VALUE (already quoted when it is a string); a key
# missing from a named table is added at the end of that table.
set_key() {
  awk -v section="$1" -v key="$2" -v value="$3" '
    function flush() { if (section != "*" && table == section && !done) print key " = " value; done = 1 }
    /^[[:space:]]*\[/ {
      if (table == section) flush()
      table = $0; gsub(/^[[:space:]]*\[+|\]+[[:space:]]*(#.*)?$/, "", table)
    }
    (section == "*" || table == section) && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
      indent = $0; sub(/[^[:space:]].*$/, "", indent); $0 = indent key " = " value; done = 1 }
    { print }
    END { if (table == section) flush() }' "$out/agent.toml" >"$out/agent.toml.new"
  mv "$out/agent.toml.new" "$out/agent.toml"
}
cp "$example" "$out/agent.toml"
set_key "*" site "\"$site\""
set_key "*" device_id "\"$device\""
set_key mqtt username "\"$device\""
set_key mqtt password "\"file:$password_path\""
set_key mqtt host "\"$broker\""
set_key mqtt port "$port"
if ! $tls; then  # plain MQTT: comment out the [mqtt.tls] table
  awk '/^[[:space:]]*\[/ { in_tls = ($0 ~ /^[[:space:]]*\[mqtt\.tls\]/) }
       { print (in_tls && $0 !~ /^[[:space:]]*(#|$)/ ? "# " $0 : $0) }' \
    "$out/agent.toml" >"$out/agent.toml.new"
  mv "$out/agent.toml.new" "$out/agent.toml"
fi
for want in "site = \"$site\"" "device_id = \"$device\"" "username = \"$device\"" \
            "password = \"file:$password_path\"" "host = \"$broker\"" "port = $port"; do
  grep -qF "$want" "$out/agent.toml" ||
    die "could not set '$want' in $out/agent.toml: $example has no such key"
done
chmod 0644 "$out/agent.toml"

transport="plain MQTT, no TLS" ca_copy="" ca_arg=""
if $tls; then
  transport="TLS: install.sh --ca-file takes the broker's CA"
  ca_copy=" $deploy/mosquitto/certs/ca.crt" ca_arg=" --ca-file ~/ca.crt"
fi
cat <<NEXT
Added device '$device' (site '$site') to $passwd_file and $acl_file.
Wrote $out/agent.toml and $out/mqtt-password (keep that one secret).
The agent connects to the broker at (agent.toml [mqtt]):
  host = "$broker"
  port = $port   ($transport)
The Pi must reach the broker by that name or address (on the Pi: getent hosts $broker).

Next:
  1. Make Mosquitto re-read its password file and ACL:
       docker compose -f $deploy/compose.yaml kill -s HUP mosquitto   (or: systemctl reload mosquitto)
  2. Copy both files to the Pi and install (from a checkout of thermopipe on the Pi):
       scp $out/agent.toml $out/mqtt-password$ca_copy pi@PI-HOST:
       sudo deploy/pi/install.sh --config ~/agent.toml --password-file ~/mqtt-password$ca_arg
NEXT
