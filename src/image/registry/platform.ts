/**
 * Platforms (os/architecture/variant) and how a multi-platform index entry is chosen for
 * this host. Names are normalised the OCI way (x86_64 → amd64, aarch64 → arm64, arm64
 * has the default variant v8, arm v7), and a host accepts, best first: its own platform,
 * then what it can also run (arm64 runs arm v8…v5; arm v7 runs v6, v5; amd64 runs 386).
 */
import type { Descriptor } from './media-types.js';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

const ARCH_ALIASES: Record<string, { architecture: string; variant?: string }> = {
  x86_64: { architecture: 'amd64' },
  'x86-64': { architecture: 'amd64' },
  x64: { architecture: 'amd64' },
  aarch64: { architecture: 'arm64' },
  armhf: { architecture: 'arm', variant: 'v7' },
  armel: { architecture: 'arm', variant: 'v6' },
  i386: { architecture: '386' },
  i686: { architecture: '386' },
  ia32: { architecture: '386' },
  ppc64: { architecture: 'ppc64le' },
};

/** Node's process.arch in OCI terms. */
export function nodeArchToOci(arch: string = process.arch): string {
  return ({ x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64', loong64: 'loong64', mips64el: 'mips64le' } as Record<string, string>)[arch] ?? arch;
}

/** The platform this process runs on: linux, its architecture, and the default variant. */
export function hostPlatform(): Platform {
  const architecture = nodeArchToOci();
  if (architecture === 'arm') {
    const v = (process.config.variables as unknown as Record<string, unknown>).arm_version;
    return normalizePlatform({ os: 'linux', architecture, variant: v ? `v${String(v)}` : undefined });
  }
  return normalizePlatform({ os: 'linux', architecture });
}

/** Canonical names and default variants, so equal platforms compare equal. */
export function normalizePlatform(p: Platform): Platform {
  const os = (p.os || 'linux').toLowerCase();
  let architecture = (p.architecture || '').toLowerCase();
  let variant = p.variant ? p.variant.toLowerCase() : undefined;
  const alias = ARCH_ALIASES[architecture];
  if (alias) {
    architecture = alias.architecture;
    variant ??= alias.variant;
  }
  if (architecture === 'arm64' && (variant === undefined || variant === '8' || variant === 'v8')) variant = 'v8';
  if (architecture === 'arm') {
    if (variant === undefined) variant = 'v7';
    else if (/^\d+$/.test(variant)) variant = `v${variant}`;
  }
  if (architecture === 'amd64' && (variant === 'v1' || variant === '')) variant = undefined;
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** What a host of this platform can run, best first (all normalised). */
export function compatiblePlatforms(host: Platform): Platform[] {
  const p = normalizePlatform(host);
  const out: Platform[] = [p];
  const arm = (from: number) => {
    for (let v = from; v >= 5; v--) out.push({ os: p.os, architecture: 'arm', variant: `v${v}` });
  };
  if (p.architecture === 'arm64') {
    if (p.variant !== 'v8') out.push({ os: p.os, architecture: 'arm64', variant: 'v8' });
    arm(8);
  }
  else if (p.architecture === 'arm') {
    const v = Number((p.variant ?? 'v7').slice(1));
    if (Number.isFinite(v)) arm(v - 1);
  } else if (p.architecture === 'amd64') {
    out.push({ os: p.os, architecture: '386' });
  }
  return out;
}

function samePlatform(a: Platform, b: Platform): boolean {
  return a.os === b.os && a.architecture === b.architecture && (a.variant ?? '') === (b.variant ?? '');
}

/**
 * The index entry to pull on `host`: the first entry matching the best compatible
 * platform. Entries without a platform (attestations, artifacts) are never chosen.
 */
export function selectPlatformManifest<D extends Pick<Descriptor, 'platform'>>(manifests: readonly D[], host: Platform): D | undefined {
  const entries = manifests
    .filter((m) => m.platform && typeof m.platform.os === 'string' && typeof m.platform.architecture === 'string')
    .map((m) => ({ m, p: normalizePlatform(m.platform as Platform) }));
  for (const want of compatiblePlatforms(host)) {
    const hit = entries.find((e) => samePlatform(e.p, want));
    if (hit) return hit.m;
  }
  return undefined;
}
