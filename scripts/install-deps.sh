#!/usr/bin/env bash
# Installs what Corral needs on a Debian machine (as root) and builds it. Idempotent:
# packages already present are not fetched again, and npm ci/build run only when needed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(runc crun runsc conmon containernetworking-plugins iproute2 iptables util-linux mount procps iputils-ping gcc libc6-dev musl-tools libisal-dev libssl-dev jq python3 zstd busybox-static docker-registry apache2-utils openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "corral: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

bash scripts/prepare-cgroups.sh

# critest's stand-in for the upstream busybox image needs a busybox whose sh runs /bin/ls and
# not a built-in applet (the MaskedPaths spec masks /bin/ls); busybox-static's sh always runs
# its applets. Debian's dynamically linked busybox does not, but conflicts with busybox-static,
# so only its binary is unpacked, beside the system's (test/helpers/critest-images.ts).
critest_busybox=/usr/local/lib/corral-test/busybox
if [ ! -x "$critest_busybox" ]; then
  tmp=$(mktemp -d) && chmod 755 "$tmp"
  (cd "$tmp" && { apt-get download -qq busybox 2>/dev/null || { apt-get update -qq && apt-get download -qq busybox; }; }) >/dev/null
  dpkg-deb --fsys-tarfile "$tmp"/busybox_*.deb | tar -x -C "$tmp" ./bin/busybox
  install -D -m 0755 "$tmp/bin/busybox" "$critest_busybox"
  rm -rf "$tmp"
fi

# crictl and critest v1.26.1 (the real Go SPDY client the streaming tests use; not in Debian),
# from the shared tools kept beside the clone.
crictl_installer=../shared/tools/cri-tools-v1.26.1/install.sh
if ! command -v crictl >/dev/null 2>&1 || ! command -v critest >/dev/null 2>&1; then
  if [ -f "$crictl_installer" ]; then
    bash "$crictl_installer" /usr/local/bin >/dev/null
  else
    echo "corral: $crictl_installer not found: crictl/critest not installed (the crictl streaming tests will skip)" >&2
  fi
fi

if ! command -v node >/dev/null 2>&1; then
  echo "corral: Node.js 20 or newer is required (apt-get install nodejs npm)" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "corral: Node.js $(node --version) is too old; 20 or newer is required" >&2
  exit 1
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
