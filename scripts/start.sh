#!/usr/bin/env bash
# Installs what is missing, builds Corral, installs it (scripts/install.sh: `corral` on PATH,
# /etc/corral/config.toml if absent, the systemd unit, which it does not enable), gives it a
# default CNI network if the conf dir has none, and runs the daemon in the foreground with
# the built-in sandbox image.
# Extra arguments go to `corral serve` (e.g. --config FILE, --log-level debug).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "corral: run as root (network namespaces, mounts, OCI runtimes)" >&2
  exit 1
fi
bash scripts/install-deps.sh
# Running in the foreground does not depend on it, so a failed install only warns.
bash scripts/install.sh || echo "corral: scripts/install.sh failed (see above); starting from this checkout anyway" >&2

conf_dir=/etc/cni/net.d
if ! ls "$conf_dir"/*.conf "$conf_dir"/*.conflist "$conf_dir"/*.json >/dev/null 2>&1; then
  mkdir -p "$conf_dir"
  cp config/cni/10-corral.conflist "$conf_dir/10-corral.conflist"
  echo "corral: installed the default pod network $conf_dir/10-corral.conflist (bridge corral0, 10.88.0.0/16)" >&2
fi
# V8 takes its flags only on the command line (src/cli/node-flags.ts says which and why).
node_flags=$(node -e 'import(process.argv[1]).then((m) => console.log(m.DAEMON_NODE_FLAGS.join(" ")))' "$PWD/dist/src/cli/node-flags.js")
# glibc reads its malloc tunables only at start: the daemon's environment (same file; a
# GLIBC_TUNABLES of your own is kept). An assignment first, so that a failure stops here.
daemon_env=$(node -e 'import(process.argv[1]).then((m) => console.log(m.daemonEnvShell()))' "$PWD/dist/src/cli/node-flags.js")
eval "$daemon_env"
# shellcheck disable=SC2086 # the flags are words
exec node $node_flags dist/src/cli/main.js serve "$@"
