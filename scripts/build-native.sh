#!/usr/bin/env bash
# Builds Corral's native helpers from native/*.c into dist/native/:
#   native/pause.c    -> dist/native/corral-pause
#   native/nshelper.c -> dist/native/corral-nshelper
#   native/unpack.c   -> dist/native/corral-unpack (with ISA-L's inflate and libcrypto's sha256)
#   native/execreaper.c -> dist/native/corral-execreaper
#   native/streamhelper.c -> dist/native/corral-streamhelper
#   native/podpause.c -> dist/native/corral-podpause
#   native/runscwrap.c -> dist/native/corral-runsc
#   native/spawner.c  -> dist/native/corral-spawner
#   native/netns-dial.c -> dist/native/corral-netns-dial.node (a Node-API addon; see below)
# Static binaries (-O2 -static -Wall -Werror), so they need only the kernel, linked with musl
# (musl-gcc, Debian's musl-tools) when it is installed: a static glibc program spends ~0.45 ms
# of CPU at every start on this kind of VM asking the CPU for its caches (~75 CPUID
# instructions, each a trap to the hypervisor), musl asks nothing; several helpers run once
# or twice per pod (bench/README.md, "Helpers linked with musl"). Without musl-gcc they are
# linked with glibc (same behaviour, slower starts). corral-unpack runs only on the host
# (never in a container or a chroot) and links glibc and ISA-L's libisal.so.2 dynamically
# (Debian ships no static libisal.a), libcrypto statically; its dynamic loading costs ~0.4 ms
# of CPU per run, its inflate saves ~16 ms per 24 MiB layer (bench/README.md).
# A binary is rebuilt only when its source, a header it includes (listed after the source
# below) or this script is newer than it.
# Needs gcc and libc6-dev (which ships the static libc.a) on Debian/Ubuntu, musl-tools for
# the faster static helpers, and for corral-unpack libisal-dev (ISA-L 2.30, BSD-3) and
# libssl-dev (static libcrypto.a).
# Set FORCE=1 to rebuild unconditionally, CC to use another gcc-compatible compiler for
# everything (glibc), MUSL_CC another musl compiler wrapper (MUSL_CC= to not use musl).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src_dir="$root/native"
out_dir="$root/dist/native"
cc="${CC:-gcc}"
script="$root/scripts/build-native.sh"

if ! command -v "$cc" >/dev/null 2>&1; then
  echo "build-native: '$cc' not found; install a C compiler and static libc (Debian: apt-get install gcc libc6-dev)" >&2
  exit 1
fi

mkdir -p "$out_dir"

# The static helpers' compiler: musl-gcc if there is one. Its include path has musl's headers
# only, so the kernel's uapi headers (linux/seccomp.h ...: libc-independent) are offered
# through a folder of links to them, made for this build and removed after it.
static_cc=("$cc")
static_libc=glibc
musl_cc="${MUSL_CC-musl-gcc}"
if [[ -z "${CC:-}" && -n "$musl_cc" ]] && command -v "$musl_cc" >/dev/null 2>&1; then
  kernel_headers="$(mktemp -d)"
  trap 'rm -rf "$kernel_headers"' EXIT
  multiarch="$("$cc" -print-multiarch 2>/dev/null || true)"
  ln -s /usr/include/linux "$kernel_headers/linux"
  ln -s /usr/include/asm-generic "$kernel_headers/asm-generic"
  if [[ -n "$multiarch" && -d "/usr/include/$multiarch/asm" ]]; then
    ln -s "/usr/include/$multiarch/asm" "$kernel_headers/asm"
  else
    ln -s /usr/include/asm "$kernel_headers/asm"
  fi
  static_cc=("$musl_cc" -isystem "$kernel_headers")
  static_libc=musl
else
  echo "build-native: no musl-gcc (Debian: apt-get install musl-tools): the static helpers are linked with glibc, which costs each start ~0.45 ms of CPU on a VM" >&2
fi
# A binary records which libc it was built with, so a switch (musl installed later) rebuilds it.
libc_stamp="$out_dir/.static-libc"
libc_changed=""
[[ -f "$libc_stamp" && "$(cat "$libc_stamp")" == "$static_libc" ]] || libc_changed=1

build() {
  # --dynamic: link glibc and the -l libraries dynamically (-l:libNAME.a for a static one).
  # --addon: a Node-API addon (a shared object against Node's headers in $node_include).
  local link=(-static) compiler=("${static_cc[@]}") force="$libc_changed"
  if [[ "$1" == --dynamic ]]; then link=(); compiler=("$cc"); force=""; shift; fi
  if [[ "$1" == --addon ]]; then link=(-fPIC -shared -I "$node_include"); compiler=("$cc"); force=""; shift; fi
  local name="$1" src="$src_dir/$2" out="$out_dir/$1" libs=()
  shift 2
  # "-lNAME" arguments after the sources are libraries to link (static, like libc).
  while [[ $# -gt 0 && "${@: -1}" == -l* ]]; do
    libs=("${@: -1}" "${libs[@]}")
    set -- "${@:1:$#-1}"
  done
  local stale=""
  for header in "$@"; do
    [[ "$out" -nt "$src_dir/$header" ]] || stale=1
  done
  if [[ ! -f "$src" ]]; then
    echo "build-native: missing source $src" >&2
    exit 1
  fi
  if [[ -z "${FORCE:-}" && -z "$force" && -x "$out" && "$out" -nt "$src" && "$out" -nt "$script" && -z "$stale" ]]; then
    echo "build-native: $name is up to date"
    return 0
  fi
  local tmp="$out.tmp.$$"
  # glibc warns about getaddrinfo in a static libcrypto; corral-unpack never resolves names.
  if ! "${compiler[@]}" -O2 "${link[@]}" -Wall -Werror -o "$tmp" "$src" "${libs[@]}" 2> >(grep -v -e 'statically linked applications requires at runtime' -e 'libcrypto[.]a(.*): in function' >&2); then
    rm -f "$tmp"
    echo "build-native: compiling $src failed (a static build needs musl-tools or libc6-dev, and corral-unpack libisal-dev and libssl-dev: apt-get install musl-tools libc6-dev libisal-dev libssl-dev)" >&2
    exit 1
  fi
  chmod 0755 "$tmp"
  mv -f "$tmp" "$out"
  echo "build-native: built $out"
}

build corral-pause pause.c pause-loop.h
build corral-nshelper nshelper.c json-report.h
build --dynamic corral-unpack unpack.c -l:libcrypto.a -lisal
build corral-execreaper execreaper.c helper-common.h
build corral-streamhelper streamhelper.c helper-common.h
build corral-podpause podpause.c json-report.h pause-loop.h
build corral-runsc runscwrap.c
build corral-spawner spawner.c
printf '%s\n' "$static_libc" >"$libc_stamp.tmp.$$" && mv -f "$libc_stamp.tmp.$$" "$libc_stamp"

# native/netns-dial.c -> dist/native/corral-netns-dial.node: a Node-API addon loaded by the
# daemon (port-forward's socket made in the pod's netns on a thread of its own; src/streaming/
# backend/netns-dial.ts). It needs Node's headers (node_api.h, shipped with Node.js: NODE_INCLUDE to
# point elsewhere); without them it is not built and port-forward runs corral-streamhelper.
node_include="${NODE_INCLUDE:-}"
if [[ -z "$node_include" ]] && command -v node >/dev/null 2>&1; then
  node_include="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")/include/node"
fi
if [[ -n "$node_include" && -f "$node_include/node_api.h" ]]; then
  build --addon corral-netns-dial.node netns-dial.c -lpthread
else
  echo "build-native: no node_api.h (Node.js headers) found${node_include:+ in $node_include}: corral-netns-dial.node not built, port-forward goes through corral-streamhelper" >&2
fi
