/**
 * Cgroup limits Corral writes itself, where an OCI runtime's `update` falls short: runc
 * (1.1) ignores hugepage limits in `update --resources`, so a limit the caller asked for
 * would be recorded but not applied. The files are the kernel's own; crun has already
 * written the same values, so writing them again changes nothing.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { containerCgroupDirs, parseCgroupMounts, parseProcCgroup } from './exec-cgroup.js';

/** statfs(2) f_type of cgroup2 (CGROUP2_SUPER_MAGIC in linux/magic.h). */
const CGROUP2_SUPER_MAGIC = 0x63677270;

/** Whether /sys/fs/cgroup is the unified (v2-only) hierarchy, the one where `unified` keys apply. */
export async function hostIsCgroupV2(): Promise<boolean> {
  const st = await fs.statfs('/sys/fs/cgroup');
  return Number(st.type) === CGROUP2_SUPER_MAGIC;
}

/** A hugepage limit the container's cgroup cannot take. */
export class HugepageLimitError extends Error {}

/** Writes each limit into the container's hugetlb cgroup (v1 hugetlb hierarchy, else v2), found from its init. */
export async function applyHugepageLimits(initPid: number, containerId: string, limits: readonly { pageSize: string; limit: number }[]): Promise<void> {
  if (limits.length === 0) return;
  const [procText, mountinfo] = await Promise.all([fs.readFile(`/proc/${initPid}/cgroup`, 'utf8').catch(() => ''), fs.readFile('/proc/self/mountinfo', 'utf8')]);
  const dirs = containerCgroupDirs(parseProcCgroup(procText), parseCgroupMounts(mountinfo), containerId);
  const dir = dirs.find((c) => c.version === 1 && c.controllers.includes('hugetlb')) ?? dirs.find((c) => c.version === 2);
  if (!dir) throw new HugepageLimitError(`container ${containerId} is in no hugetlb cgroup`);
  for (const { pageSize, limit } of limits) {
    const file = path.join(dir.dir, dir.version === 1 ? `hugetlb.${pageSize}.limit_in_bytes` : `hugetlb.${pageSize}.max`);
    try {
      await fs.writeFile(file, String(limit));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new HugepageLimitError(`this host has no ${pageSize} hugepages (no ${path.basename(file)})`);
      throw e;
    }
  }
}
