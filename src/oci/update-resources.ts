/**
 * UpdateContainerResources: the CRI LinuxContainerResources as the OCI LinuxResources that
 * `runc update --resources <file>` and `crun update --resources <file>` take. Pure. As in
 * create (container-spec.ts), a zero field means "not set" and is left out, so the runtime
 * leaves that limit as it is.
 */
import type { LinuxContainerResources } from '../cri-api/types.js';
import type { OciResources } from './oci-types.js';

/** A value the CRI request carries that no cgroup can take. */
export class ResourceValueError extends Error {}

/** The request's fields as the server decodes them, and as a record on disk holds them. */
export type CriLinuxResources = Partial<LinuxContainerResources>;

const HUGEPAGE_SIZE = /^[1-9][0-9]*(KB|MB|GB|TB|PB)$/;
/** cpuset lists: "0-3,5,7-8". */
const CPUSET_LIST = /^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$/;
/** A unified key is `<controller>.<file>`, a file of the container's own cgroup. */
const UNIFIED_KEY = /^[a-z_]+\.[a-z0-9_.]+$/;

function int(r: CriLinuxResources, field: keyof LinuxContainerResources): number {
  const v = Number(r[field] ?? 0);
  if (!Number.isSafeInteger(v)) throw new ResourceValueError(`${field} ${String(r[field])} is not an integer`);
  return v;
}

function nonNegative(r: CriLinuxResources, field: keyof LinuxContainerResources): number {
  const v = int(r, field);
  if (v < 0) throw new ResourceValueError(`${field} must not be negative (got ${v})`);
  return v;
}

/** Throws ResourceValueError for values no cgroup takes. */
export function ociResourcesFromCri(r: CriLinuxResources): OciResources {
  const out: OciResources = {};
  const shares = nonNegative(r, 'cpuShares');
  const period = nonNegative(r, 'cpuPeriod');
  // -1 is "no quota" in the kernel's own words; anything below is a mistake.
  const quota = int(r, 'cpuQuota');
  if (quota < -1) throw new ResourceValueError(`cpuQuota must be -1 (no limit) or more (got ${quota})`);
  if (shares && (shares < 2 || shares > 262144)) throw new ResourceValueError(`cpuShares must be between 2 and 262144 (got ${shares})`);
  if (period && (period < 1000 || period > 1_000_000)) throw new ResourceValueError(`cpuPeriod must be between 1000 and 1000000 µs (got ${period})`);
  if (quota > 0 && quota < 1000) throw new ResourceValueError(`cpuQuota must be at least 1000 µs (got ${quota})`);
  const cpus = r.cpusetCpus ?? '';
  const mems = r.cpusetMems ?? '';
  for (const [field, v] of [['cpusetCpus', cpus], ['cpusetMems', mems]] as const) {
    if (v && !CPUSET_LIST.test(v)) throw new ResourceValueError(`${field} "${v}" is not a CPU list such as "0-3,5"`);
  }
  if (shares || quota || period || cpus || mems) {
    out.cpu = {
      ...(shares ? { shares } : {}),
      ...(quota ? { quota } : {}),
      ...(period ? { period } : {}),
      ...(cpus ? { cpus } : {}),
      ...(mems ? { mems } : {}),
    };
  }
  const limit = nonNegative(r, 'memoryLimitInBytes');
  const swap = int(r, 'memorySwapLimitInBytes');
  if (swap < -1) throw new ResourceValueError(`memorySwapLimitInBytes must be -1 (no limit) or more (got ${swap})`);
  // The kernel refuses a limit this small, and a container could not even start under it.
  if (limit && limit < 4096) throw new ResourceValueError(`memoryLimitInBytes ${limit} is below the smallest limit the kernel takes (4096)`);
  if (limit && swap > 0 && swap < limit) throw new ResourceValueError(`memorySwapLimitInBytes (${swap}) is memory plus swap and must not be below memoryLimitInBytes (${limit})`);
  if (limit || swap) out.memory = { ...(limit ? { limit } : {}), ...(swap ? { swap } : {}) };
  const hugepages = r.hugepageLimits ?? [];
  if (hugepages.length) {
    out.hugepageLimits = hugepages.map((h) => {
      const pageSize = String(h?.pageSize ?? '');
      if (!HUGEPAGE_SIZE.test(pageSize)) throw new ResourceValueError(`hugepage page_size "${pageSize}" is not a size such as "2MB" or "1GB"`);
      const l = Number(h.limit ?? 0);
      if (!Number.isSafeInteger(l) || l < 0) throw new ResourceValueError(`hugepage limit ${String(h.limit)} for ${pageSize} is not a byte count`);
      return { pageSize, limit: l };
    });
  }
  const unified = r.unified ?? {};
  const keys = Object.keys(unified);
  if (keys.length) {
    for (const k of keys) {
      if (!UNIFIED_KEY.test(k)) throw new ResourceValueError(`unified key "${k}" is not a cgroup v2 file name such as "memory.high"`);
      if (typeof unified[k] !== 'string' || /[\n\0]/.test(unified[k])) throw new ResourceValueError(`unified value of "${k}" must be one line of text`);
    }
    out.unified = { ...unified };
  }
  return out;
}
