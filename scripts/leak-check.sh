#!/usr/bin/env bash
# Lists host state that Corral or its tests may have left behind, and fails if any.
set -u
leaks=0
report() { echo "leak: $*" >&2; leaks=1; }

for dir in /var/run/netns /run/netns; do
  [ -d "$dir" ] || continue
  n=$(find "$dir" -maxdepth 1 -name 'corral*' | wc -l)
  [ "$n" -gt 0 ] && report "$n corral network namespace file(s) in $dir: $(find "$dir" -maxdepth 1 -name 'corral*' | head -3 | tr '\n' ' ')"
done
n=$(ip -o link show type veth 2>/dev/null | wc -l)
[ "$n" -gt 0 ] && report "$n veth interface(s): $(ip -o link show type veth | awk -F': ' '{print $2}' | head -5 | tr '\n' ' ')"
n=$(grep -cE ' (/var/run/netns|/run/netns)/corral| overlay |/corral' /proc/self/mounts)
[ "$n" -gt 0 ] && report "$n corral/netns/overlay mount(s): $(grep -E ' (/var/run/netns|/run/netns)/corral| overlay |/corral' /proc/self/mounts | awk '{print $2}' | head -3 | tr '\n' ' ')"
for rt in runc crun; do
  command -v "$rt" >/dev/null 2>&1 || continue
  for root in /run/$rt /run/corral/$rt /run/corral-test*/$rt; do
    [ -d "$root" ] || continue
    n=$($rt --root "$root" list -q 2>/dev/null | wc -l)
    [ "$n" -gt 0 ] && report "$n $rt container(s) under $root"
  done
done
# gVisor: runsc keeps <id>_sandbox:<sandbox>.state files under its root, and its sandbox and
# gofer processes (and Corral's per-container waiters) can outlive a `delete --force`.
if command -v runsc >/dev/null 2>&1; then
  for root in /run/runsc /var/run/runsc /run/corral/* /run/corral-test*/state/*; do
    [ -d "$root" ] || continue
    n=$(find "$root" -maxdepth 1 -name '*_sandbox:*.state' 2>/dev/null | wc -l)
    [ "$n" -gt 0 ] && report "$n runsc container(s) in state under $root: $(find "$root" -maxdepth 1 -name '*_sandbox:*.state' -printf '%f\n' | cut -d_ -f1 | cut -c1-12 | head -3 | tr '\n' ' ')"
  done
fi
n=$(pgrep -f '^runsc-(sandbox|gofer) ' | wc -l)
[ "$n" -gt 0 ] && report "$n runsc-sandbox/runsc-gofer process(es): $(pgrep -f '^runsc-(sandbox|gofer) ' | head -5 | tr '\n' ' ')"
n=$(pgrep -x runsc-waiter | wc -l)
[ "$n" -gt 0 ] && report "$n corral-runsc waiter process(es) (runsc containers never deleted)"
# A zombie conmon has exited and waits for init to reap it: not a leak.
n=$(ps -C conmon -o stat= 2>/dev/null | grep -vc '^Z' || true)
[ "$n" -gt 0 ] && report "$n conmon process(es)"
n=$(pgrep -f '^runc init' | wc -l)
[ "$n" -gt 0 ] && report "$n 'runc init' process(es) (containers created and never started or deleted)"
n=$(find /sys/fs/cgroup/*/corral /sys/fs/cgroup/*/corral-test* -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)
[ "$n" -gt 0 ] && report "$n pod cgroup(s) under /sys/fs/cgroup/*/corral"
n=$(pgrep -f corral-pause | wc -l)
[ "$n" -gt 0 ] && report "$n corral-pause process(es)"
# Corral's own pause of a shared-PID pod (native/podpause.c); a zombie awaits init's reaping.
n=$(pgrep -f '^[^ ]*corral-podpause run ' | while read -r p; do ps -o stat= -p "$p"; done | grep -vc '^Z' || true)
[ "$n" -gt 0 ] && report "$n corral-podpause process(es) (own pause of a shared-PID pod): $(pgrep -f '^[^ ]*corral-podpause run ' | head -3 | tr '\n' ' ')"
for d in /var/lib/cni/networks/*/; do
  [ -d "$d" ] || continue
  n=$(find "$d" -maxdepth 1 -type f -name '[0-9a-f]*[.:]*' | wc -l)
  [ "$n" -gt 0 ] && report "$n IP reservation(s) in $d"
done
if [ "$leaks" -eq 0 ]; then echo "leak check: nothing left behind"; fi
exit $leaks
