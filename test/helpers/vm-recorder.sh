#!/usr/bin/env bash
# A "recording VM runtime" for tests. Kata-style VM runtimes cannot run on the test hosts,
# so this stands in for one: configure it as a handler of type "vm", and it takes runc's
# command line unchanged. On `create` it first records what a VM runtime would find:
#   - the network namespace path from the bundle's config.json, whether it exists and
#     whether it is a pinned netns (nsfs),
#   - `ip -o addr` inside that netns (interfaces and addresses present at create time),
#   - the sandbox annotations,
# into <dir>/records/<container-id>/record.json, where <dir> is the folder this script
# lives in. Then it execs runc with the same arguments. Every other command goes to runc
# unchanged.
#
# Failure injection: when <dir>/fail-create exists, `create` records as usual, then prints
# the file's content on stderr, also writes it to the --log file as a runc-style JSON error
# line (when --log was given), and exits 1 without calling runc. With <dir>/fail-stderr-only
# present as well, the message goes to stderr only, like a runtime that fails before it
# opens its log.
#
# Needs bash, jq, stat, nsenter, ip. RUNC (env) overrides the runc binary.
set -u

here=$(dirname "$(readlink -f "$0")")
runc=${RUNC:-runc}

# Global flags come before the subcommand; these take a value.
log_file=''
subcmd=''
i=1
argv=("$@")
n=$#
while [ "$i" -le "$n" ]; do
  a=${argv[$((i - 1))]}
  case "$a" in
    --root | --log | --log-format | --criu | --rootless)
      [ "$a" = --log ] && log_file=${argv[$i]:-}
      i=$((i + 2))
      ;;
    --log=*) log_file=${a#--log=}; i=$((i + 1)) ;;
    -*) i=$((i + 1)) ;;
    *) subcmd=$a; break ;;
  esac
done

if [ "$subcmd" != create ]; then
  exec "$runc" "$@"
fi

# create [--bundle B | -b B] [--pid-file P] [--console-socket S] [--no-pivot] [--no-new-keyring] [--preserve-fds N] ID
bundle='.'
id=''
i=$((i + 1))
while [ "$i" -le "$n" ]; do
  a=${argv[$((i - 1))]}
  case "$a" in
    --bundle | -b) bundle=${argv[$i]:-}; i=$((i + 2)) ;;
    --bundle=*) bundle=${a#--bundle=}; i=$((i + 1)) ;;
    --pid-file | --console-socket | --preserve-fds) i=$((i + 2)) ;;
    -*) i=$((i + 1)) ;;
    *) id=$a; i=$((i + 1)) ;;
  esac
done

fail() {
  echo "vm-recorder: $*" >&2
  if [ -n "$log_file" ] && [ ! -e "$here/fail-stderr-only" ]; then
    jq -cn --arg msg "vm-recorder: $*" '{level: "error", msg: $msg}' >>"$log_file" 2>/dev/null || true
  fi
  exit 1
}

[ -n "$id" ] || fail "create: no container id in: $*"
config="$bundle/config.json"
[ -r "$config" ] || fail "create: cannot read $config"

rec="$here/records/$id"
mkdir -p "$rec" || fail "create: cannot make $rec"
printf '%s\n' "$@" >"$rec/argv"

netns_path=$(jq -r '[.linux.namespaces[]? | select(.type == "network") | .path // ""][0] // ""' "$config")
netns_exists=false
netns_fstype=''
addrs=''
addrs_rc=-1
if [ -n "$netns_path" ] && [ -e "$netns_path" ]; then
  netns_exists=true
  netns_fstype=$(stat -f -c %T "$netns_path" 2>/dev/null || true)
  addrs=$(nsenter --net="$netns_path" ip -o addr 2>&1)
  addrs_rc=$?
fi

jq -n \
  --arg id "$id" \
  --arg bundle "$bundle" \
  --arg netnsPath "$netns_path" \
  --argjson netnsExists "$netns_exists" \
  --arg netnsFsType "$netns_fstype" \
  --arg ipAddr "$addrs" \
  --argjson ipAddrExit "$addrs_rc" \
  --arg recordedAt "$(date +%s.%N)" \
  --slurpfile config "$config" \
  '{id: $id, bundle: $bundle, netnsPath: $netnsPath, netnsExists: $netnsExists, netnsFsType: $netnsFsType,
    ipAddr: $ipAddr, ipAddrExit: $ipAddrExit, recordedAt: $recordedAt,
    annotations: ($config[0].annotations // {})}' >"$rec/record.json.tmp" ||
  fail "create: cannot write the record for $id"
mv -f "$rec/record.json.tmp" "$rec/record.json"

if [ -e "$here/fail-create" ]; then
  fail "$(cat "$here/fail-create")"
fi

exec "$runc" "$@"
