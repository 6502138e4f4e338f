# Shared set-up for ops/demo and ops/test: sourced, not run.
# Installs what bbot needs on a fresh Debian 12 machine, idempotently, and quickly when done before.

BBOT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${BBOT_VENV:-$BBOT_ROOT/.venv}"

say() { printf '%s\n' "ops: $*" >&2; }

# ensure_apt CMD:PACKAGE ...: install Debian packages whose command is missing.
ensure_apt() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# ensure_venv [EXTRAS]: a virtualenv with bbot installed (editable) and its extras.
ensure_venv() {
  local extras="${1:-}"
  local stamp="$VENV/.bbot-installed${extras:+-$extras}"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ] || [ "$BBOT_ROOT/pyproject.toml" -nt "$stamp" ]; then
    say "installing bbot${extras:+[$extras]} into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e "$BBOT_ROOT${extras:+[$extras]}"
    touch "$stamp"
  fi
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
}

# wait_for_port HOST PORT SECONDS
wait_for_port() {
  local deadline=$((SECONDS + $3))
  while [ $SECONDS -lt $deadline ]; do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.5
  done
  return 1
}

# ensure_rabbitmq: the broker the tests use on 127.0.0.1:5672; started if it is not running.
ensure_rabbitmq() {
  wait_for_port 127.0.0.1 5672 1 && return 0
  ensure_apt rabbitmq-server:rabbitmq-server
  say "starting RabbitMQ"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_for_port 127.0.0.1 5672 90 || { say "RabbitMQ did not come up on 127.0.0.1:5672"; return 1; }
}

# ensure_postgresql: PostgreSQL on 127.0.0.1:5432 with a database `test` (trust auth).
ensure_postgresql() {
  wait_for_port 127.0.0.1 5432 1 && return 0
  ensure_apt psql:postgresql
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  wait_for_port 127.0.0.1 5432 60 || { say "PostgreSQL did not come up on 127.0.0.1:5432"; return 1; }
}

# ensure_deb PACKAGE ...: install Debian packages that dpkg does not have (for packages
# whose presence no single command tells, such as libvirt-dev).
ensure_deb() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# What kvm and container build machines need on the agent's host.
MACHINE_PACKAGES=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-daemon-driver-qemu
                  libvirt-clients libvirt-dev pkg-config slirp4netns uidmap debootstrap busybox-static)

# ensure_libvirtd: libvirt's daemons, started by hand (no systemd here), answering on
# qemu:///system.
ensure_libvirtd() {
  # Without udev, /dev/kvm stays root-only; Debian's udev rule makes it group kvm, mode 0660.
  # libvirt checks it as its QEMU user, and without access it takes its cached QEMU
  # capabilities for stale and probes QEMU again at every domain start (35 s here, each boot).
  if [ -c /dev/kvm ] && getent group kvm >/dev/null && [ "$(stat -c %G:%a /dev/kvm)" != "kvm:660" ]; then
    chgrp kvm /dev/kvm && chmod 660 /dev/kvm
  fi
  virsh -c qemu:///system version >/dev/null 2>&1 && return 0
  say "starting libvirtd"
  pgrep -x virtlogd >/dev/null || virtlogd -d
  pgrep -x libvirtd >/dev/null || libvirtd -d
  local deadline=$((SECONDS + 30))
  until virsh -c qemu:///system version >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { say "libvirtd did not answer on qemu:///system"; return 1; }
    sleep 0.5
  done
}

# ensure_image: the Debian image of kvm and container machines (built once, cached by content);
# prints its folder.
ensure_image() {
  "$BBOT_ROOT/ops/images/build" | tail -1
}
