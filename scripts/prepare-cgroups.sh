#!/usr/bin/env bash
# On a host in cgroup "hybrid" mode (v1 controllers plus a v2 tree at
# /sys/fs/cgroup/unified), a controller that no v1 hierarchy claims stays bound to the
# v2 tree; crun then refuses to run anything ("cgroups in hybrid mode not supported,
# drop all controllers from cgroupv2"). Mount such controllers as v1 hierarchies, as
# systemd does on a normal hybrid boot. Idempotent; does nothing on pure v1 or v2 hosts.
set -euo pipefail
unified=/sys/fs/cgroup/unified
[ -f "$unified/cgroup.controllers" ] || exit 0
for ctrl in $(cat "$unified/cgroup.controllers"); do
  dir=/sys/fs/cgroup/$ctrl
  if ! grep -qE " $dir cgroup " /proc/self/mounts; then
    mkdir -p "$dir"
    mount -t cgroup -o "$ctrl" cgroup "$dir"
    echo "corral: mounted the $ctrl cgroup controller as a v1 hierarchy at $dir (hybrid cgroups)" >&2
  fi
done
