#!/usr/bin/env bash
# Installs the built Corral of this checkout on this machine:
#   - `corral` on PATH: a wrapper in $BIN_DIR (default /usr/local/bin) running this checkout's
#     dist/src/cli/main.js with this node and the daemon's Node.js flags and environment
#     (src/cli/node-flags.ts);
#   - the example configuration as $CONFIG_DIR/config.toml (default /etc/corral), only if there
#     is none (an existing one is never overwritten);
#   - the systemd unit corral.service in $UNIT_DIR (default /etc/systemd/system).
# It does not need a running systemd: it writes the unit and says how to enable it.
# Build first (scripts/install-deps.sh or npm run build). Idempotent.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=${BIN_DIR:-/usr/local/bin}
CONFIG_DIR=${CONFIG_DIR:-/etc/corral}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}

# The nearest existing ancestor must be writable (the directories may not exist yet).
writable() {
  local d=$1
  while [ ! -e "$d" ]; do d=$(dirname "$d"); done
  [ -w "$d" ]
}
for d in "$BIN_DIR" "$CONFIG_DIR" "$UNIT_DIR"; do
  if ! writable "$d"; then
    echo "corral install: cannot write $d: run as root (sudo scripts/install.sh)" >&2
    exit 1
  fi
done

main_js="$repo/dist/src/cli/main.js"
if [ ! -f "$main_js" ]; then
  echo "corral install: $main_js is missing; build Corral first: npm run build (or scripts/install-deps.sh)" >&2
  exit 1
fi
node_bin=$(command -v node || true)
if [ -z "$node_bin" ]; then
  echo "corral install: node not found on PATH (Node.js 20 or newer is required: apt-get install nodejs)" >&2
  exit 1
fi
node_bin=$(readlink -f "$node_bin")

marker="# corral wrapper, written by scripts/install.sh"
wrapper="$BIN_DIR/corral"
if [ -e "$wrapper" ] && ! grep -qF "$marker" "$wrapper" 2>/dev/null; then
  echo "corral install: $wrapper exists and is not Corral's wrapper; move it away or set BIN_DIR" >&2
  exit 1
fi
mkdir -p "$BIN_DIR"
tmp="$wrapper.tmp.$$"
# V8 takes its flags only on the command line: the daemon's (src/cli/node-flags.ts) go in the wrapper.
node_flags=$("$node_bin" -e 'import(process.argv[1]).then((m) => console.log(m.DAEMON_NODE_FLAGS.join(" ")))' "$repo/dist/src/cli/node-flags.js")
# glibc reads its malloc tunables only at start: the daemon's environment (same file) goes in it too.
daemon_env=$("$node_bin" -e 'import(process.argv[1]).then((m) => console.log(m.daemonEnvShell()))' "$repo/dist/src/cli/node-flags.js")
printf '#!/bin/sh\n%s\n%s\nexec "%s" %s "%s" "$@"\n' "$marker" "$daemon_env" "$node_bin" "$node_flags" "$main_js" >"$tmp"
chmod 0755 "$tmp"
mv -f "$tmp" "$wrapper"
echo "corral install: $wrapper -> $main_js"

mkdir -p "$CONFIG_DIR"
if [ -e "$CONFIG_DIR/config.toml" ]; then
  echo "corral install: kept the existing $CONFIG_DIR/config.toml"
else
  install -m 0644 "$repo/config/config.example.toml" "$CONFIG_DIR/config.toml"
  echo "corral install: wrote $CONFIG_DIR/config.toml (every key at its default)"
fi

mkdir -p "$UNIT_DIR"
unit="$UNIT_DIR/corral.service"
sed -e "s#^ExecStart=/usr/local/bin/corral #ExecStart=$wrapper #" \
    -e "s#--config /etc/corral/config.toml#--config $CONFIG_DIR/config.toml#" \
    "$repo/config/corral.service" >"$unit.tmp.$$"
chmod 0644 "$unit.tmp.$$"
mv -f "$unit.tmp.$$" "$unit"
echo "corral install: wrote $unit"

# Only a booted systemd can reload; in a container or CI there is none, and that is fine.
if [ -d /run/systemd/system ] && [ "$UNIT_DIR" = /etc/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload || echo "corral install: systemctl daemon-reload failed; run it yourself" >&2
  echo "corral install: start it now and at boot with: systemctl enable --now corral"
else
  echo "corral install: systemd is not running here; under systemd, enable with: systemctl daemon-reload && systemctl enable --now corral"
  echo "corral install: without systemd, run it in the foreground: corral serve"
fi
