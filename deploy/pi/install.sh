#!/usr/bin/env bash
# Installs the thermopipe edge agent on Raspberry Pi OS (Bookworm, Python 3.11). Safe to run again:
# it upgrades the package and never overwrites an existing config or password.
#
#   sudo deploy/pi/install.sh [--config agent.toml] [--password-file mqtt-password] [--ca-file ca.pem]
#                             [--dry-run]
#
# Run it from a checkout of thermopipe on the Pi. It
#   - checks the OS (Debian/Raspberry Pi OS 12 "bookworm" or newer) and Python >= 3.11;
#   - creates the system user "thermopipe" (groups dialout for USB serial boards, gpio if present);
#   - makes a virtual environment in /opt/thermopipe/venv and pip-installs the agent's role of this
#     checkout into it ('.[agent]', and '.[agent,avro]' when the config sets encoding = "avro"):
#     none of the hub's packages;
#   - installs /etc/thermopipe/agent.toml (from --config, else deploy/agent.example.toml) and the
#     MQTT password as /etc/thermopipe/mqtt-password (mode 0600, root; systemd hands it to the
#     agent as a credential), unless they exist;
#   - installs deploy/systemd/edge-agent.service, checks the config and enables the service.
# --config and --password-file are what deploy/scripts/add-device.sh wrote on the server.
# --dry-run prints every step instead of doing it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
prefix=/opt/thermopipe
etc=/etc/thermopipe
unit_src="$repo/deploy/systemd/edge-agent.service"
unit_dst=/etc/systemd/system/edge-agent.service
user=thermopipe
config="" password_file="" ca_file="" dry_run=false

die() { echo "error: $*" >&2; exit 1; }
step() { echo "==> $*"; }
run() {  # run CMD...: do it, or only show it with --dry-run
  if $dry_run; then printf '   '; printf ' %q' "$@"; echo; else "$@"; fi
}

while [ $# -gt 0 ]; do
  case $1 in
    --config) config=$2; shift 2 ;;
    --password-file) password_file=$2; shift 2 ;;
    --ca-file) ca_file=$2; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
for f in "$config" "$password_file" "$ca_file"; do
  [ -z "$f" ] || [ -f "$f" ] || die "$f does not exist"
done
[ -f "$unit_src" ] || die "$unit_src is missing: run this from a thermopipe checkout"
$dry_run || [ "$(id -u)" -eq 0 ] || die "run as root: sudo $0 $*"

# --- the platform -----------------------------------------------------------------------------
step "checking the OS and Python"
# shellcheck disable=SC1091
. /etc/os-release
version=${VERSION_ID:-0}
[[ ${ID:-} == debian || ${ID:-} == raspbian || ${ID_LIKE:-} == *debian* ]] ||
  die "this script is for Raspberry Pi OS / Debian (found ${PRETTY_NAME:-unknown})"
[ "${version%%.*}" -ge 12 ] 2>/dev/null ||
  die "Raspberry Pi OS / Debian 12 (bookworm) or newer is needed (found ${PRETTY_NAME:-unknown})"
python=/usr/bin/python3   # the system's Python, not a pyenv or conda one
[ -x "$python" ] || python=$(command -v python3 || true)
[ -n "$python" ] || die "python3 is missing: apt-get install python3"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "Python >= 3.11 is needed (found $("$python" -V 2>&1))"
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  step "installing python3-venv"
  run apt-get install -y python3-venv
fi

# --- the user ---------------------------------------------------------------------------------
groups=dialout
getent group gpio >/dev/null && groups="$groups,gpio"
if id "$user" >/dev/null 2>&1; then
  step "user $user exists; making sure it is in $groups"
  run usermod --append --groups "$groups" "$user"
else
  step "creating the system user $user (groups $groups)"
  run useradd --system --no-create-home --home-dir /var/lib/thermopipe \
    --shell /usr/sbin/nologin --groups "$groups" "$user"
fi

# --- the program ------------------------------------------------------------------------------
step "installing thermopipe into $prefix/venv"
run install -d -m 0755 "$prefix"
[ -x "$prefix/venv/bin/python" ] || run "$python" -m venv "$prefix/venv"
extras=agent
if grep -Eqs '^[[:space:]]*encoding[[:space:]]*=[[:space:]]*"avro"' "${config:-$etc/agent.toml}"; then
  extras=agent,avro  # Avro encoding needs fastavro (deploy/README.md: which Pis have wheels)
fi
run "$prefix/venv/bin/pip" install --upgrade pip
run "$prefix/venv/bin/pip" install --upgrade "${repo}[${extras}]"
run install -m 0644 "$repo/README.md" "$prefix/README.md"

# --- the config and the secret ----------------------------------------------------------------
step "config in $etc"
run install -d -m 0755 "$etc"
if [ -e "$etc/agent.toml" ]; then
  echo "    keeping the existing $etc/agent.toml"
else
  run install -m 0644 "${config:-$repo/deploy/agent.example.toml}" "$etc/agent.toml"
  [ -n "$config" ] || echo "    EDIT $etc/agent.toml: site, device_id, [mqtt] and [[sources]]"
fi
if [ -e "$etc/mqtt-password" ]; then
  echo "    keeping the existing $etc/mqtt-password"
elif [ -n "$password_file" ]; then
  run install -m 0600 -o root -g root "$password_file" "$etc/mqtt-password"
else
  echo "    no --password-file: put the device's MQTT password in $etc/mqtt-password (mode 0600)"
fi
if [ -n "$ca_file" ]; then
  run install -m 0644 "$ca_file" "$etc/ca.pem"
fi

# --- the service ------------------------------------------------------------------------------
step "installing the systemd unit"
run install -m 0644 "$unit_src" "$unit_dst"
run systemctl daemon-reload
if [ -e "$etc/mqtt-password" ] || $dry_run; then
  # The unit checks the config itself (ExecStartPre=edge-agent check-config) with the password
  # credential in place, and a bad config stops it with the key path in the journal.
  run systemctl enable edge-agent.service
  run systemctl restart edge-agent.service
  if ! $dry_run; then
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      systemctl is-active --quiet edge-agent.service && break
      sleep 1
    done
    if systemctl is-active --quiet edge-agent.service; then
      echo "    edge-agent is running"
    else
      journalctl -u edge-agent.service -n 20 --no-pager || true
      echo "    edge-agent did not start: fix $etc/agent.toml (see above), then"
      echo "    sudo systemctl restart edge-agent"
    fi
  fi
else
  echo "    not starting: $etc/mqtt-password is missing; add it, then: sudo systemctl start edge-agent"
  run systemctl enable edge-agent.service
fi

cat <<'NEXT'

Done. Next:
  * 1-Wire sensors (DS18B20 on GPIO 4): add the line
        dtoverlay=w1-gpio
    to /boot/firmware/config.txt (Bookworm; /boot/config.txt on older images), reboot, then list
    the sensors with
        ls /sys/bus/w1/devices/28-*
        cat /sys/bus/w1/devices/28-*/w1_slave      # "crc=.. YES" and t=21375 means 21.375 degC
    and put their ids under [sensors."28-..."] in /etc/thermopipe/agent.toml.
  * USB serial boards: use the stable path, ls -l /dev/serial/by-id/
  * After editing the config (the unit checks it before starting; errors name the key path):
        sudo systemctl restart edge-agent
        systemctl status edge-agent
        journalctl -u edge-agent -f
NEXT
