#!/usr/bin/env bash
# Installs the thermopipe edge agent on Raspberry Pi OS (Bookworm, Python 3.11). Safe to run again:
# it upgrades the package and never overwrites an existing config or password.
#
#   sudo deploy/pi/install.sh [--config agent.toml] [--password-file mqtt-password] [--ca-file ca.pem]
#                             [--dry-run]
#
# Run it from a checkout of thermopipe on the Pi. It
#   - checks the OS (Debian/Raspberry Pi OS 12 "bookworm" or newer) and Python >= 3.11;
#   - creates the system user "thermopipe" (group dialout for USB serial boards; 1-Wire needs none);
#   - makes a virtual environment in /opt/thermopipe/venv and pip-installs the agent's role of this
#     checkout into it ('.[agent]', and '.[agent,avro]' when the config sets encoding = "avro"):
#     none of the hub's packages. The agent's packages are pure Python (every Pi installs them
#     from PyPI); with Avro, fastavro comes as a wheel from PyPI or piwheels (Raspberry Pi OS's
#     second index) whenever one exists; only when none does (deploy/README.md: which Pi needs
#     what) does it install the build packages and compile, showing the compiler's progress;
#   - installs /etc/thermopipe/agent.toml (from --config, else deploy/agent.example.toml) and the
#     MQTT password as /etc/thermopipe/mqtt-password (mode 0600, root; systemd hands it to the
#     agent as a credential), unless they exist;
#   - installs deploy/systemd/edge-agent.service, and before (re)starting it checks itself: the
#     config (edge-agent check-config) and the sensors this Pi can see (edge-agent probe, as the
#     service's user).
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
current="starting"
step() { current=$*; echo "==> $*"; }
# Any command that fails stops the script with the step it was in (set -e), never silently.
failed() {
  echo "error: \"$current\" failed (exit $1): see the lines above. Nothing after it was done;" \
    "fix the cause and run this script again (it is safe to repeat)." >&2
}
set -E
trap 'failed $?' ERR
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
  step "installing python3-venv (after apt-get update: a fresh image has no package lists)"
  run apt-get update
  run apt-get install -y python3-venv
fi

# --- the user ---------------------------------------------------------------------------------
# dialout: USB serial boards. The 1-Wire files in /sys/bus/w1 are readable by everyone.
groups=dialout
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
pip="$prefix/venv/bin/pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
run "$pip" install --upgrade pip
# The agent's role is pure Python (paho-mqtt, pyserial, structlog: wheels for every Pi, armv6l
# included; tests/install/test_pi_wheels.py). Only Avro encoding adds a compiled package,
# fastavro: wheels only, so pip picks the newest release that has one for this Pi (PyPI, or
# piwheels on Raspberry Pi OS) instead of compiling a newer one for an hour.
if [ "$extras" = agent ]; then
  run "$pip" install --upgrade "${repo}[${extras}]"
elif ! run "$pip" install --upgrade --only-binary=fastavro "${repo}[${extras}]"; then
  tmp=$(mktemp -d)
  if "$pip" download --quiet --only-binary=:all: --no-deps --dest "$tmp" 'fastavro>=1.9,<2'; then
    rm -rf "$tmp"
    die "pip install failed, and not for want of a wheel: see pip's message above"
  fi
  rm -rf "$tmp"
  missing=()
  for pkg in build-essential python3-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    step "no fastavro wheel for this Pi ($(uname -m)): installing ${missing[*]} to compile it"
    run apt-get update
    run apt-get install -y "${missing[@]}"
  fi
  step "compiling fastavro (minutes on a Pi 4, longer on a Pi Zero; progress below)"
  run "$pip" install --upgrade --verbose "${repo}[${extras}]"
fi
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

# --- the self-check ---------------------------------------------------------------------------
step "self-check: the config"
# --skip-secrets: the config names the password as systemd hands it to the service
# (/run/credentials/...), which exists only while the service runs; the file itself is checked above.
# Everything else (the CA file, the outbox directory, the packages, the broker's name) is checked here.
run "$prefix/venv/bin/edge-agent" check-config --skip-secrets "$etc/agent.toml" ||
  die "$etc/agent.toml has the problems listed above (each with its key path): fix them and run this script again"
step "self-check: the sensors this Pi can see (as the service's user $user)"
# the running service would hold a serial port: stop it for the few seconds of the probe
if systemctl is-active --quiet edge-agent.service 2>/dev/null; then
  run systemctl stop edge-agent.service
fi
if ! run runuser -u "$user" -- "$prefix/venv/bin/edge-agent" probe -c "$etc/agent.toml"; then
  echo "    warning: not every source answered (see above). The agent starts anyway and reports"
  echo "    each sensor when it appears; after enabling 1-Wire, reboot and run: sudo -u $user $prefix/venv/bin/edge-agent probe"
fi

# --- the service ------------------------------------------------------------------------------
step "installing the systemd unit"
run install -m 0644 "$unit_src" "$unit_dst"
run systemctl daemon-reload
if [ -e "$etc/mqtt-password" ] || $dry_run; then
  # The agent checks its config when it starts, with the password credential in place; a bad
  # config stops it for good (exit 2, not restarted) with the key path in the journal.
  run systemctl enable edge-agent.service
  run systemctl restart edge-agent.service
  if ! $dry_run; then
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      systemctl is-active --quiet edge-agent.service && break
      sleep 1
    done
    if systemctl is-active --quiet edge-agent.service; then
      echo "    edge-agent is running; its state: $prefix/venv/bin/edge-agent status"
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
  * After editing the config (a bad one stops the service, not restarted; errors name the key path):
        sudo systemctl restart edge-agent
        systemctl status edge-agent
        journalctl -u edge-agent -f
NEXT
