import { promises as fs } from 'node:fs';
import path from 'node:path';

export interface DirUsage {
  bytes: number;
  inodes: number;
}

/**
 * Bytes (allocated blocks) and inodes under a directory, like `du`: hard links counted
 * once, mount points below it not crossed. A missing directory uses nothing.
 */
export async function dirUsage(root: string): Promise<DirUsage> {
  let rootStat;
  try {
    rootStat = await fs.lstat(root);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { bytes: 0, inodes: 0 };
    throw e;
  }
  const seen = new Set<string>();
  const usage: DirUsage = { bytes: 0, inodes: 0 };
  const walk = async (p: string, st: Awaited<ReturnType<typeof fs.lstat>>): Promise<void> => {
    const key = `${st.dev}:${st.ino}`;
    if (seen.has(key)) return;
    seen.add(key);
    usage.inodes++;
    usage.bytes += Number(st.blocks) * 512;
    if (!st.isDirectory() || st.dev !== rootStat.dev) return;
    for (const name of await fs.readdir(p)) {
      const child = path.join(p, name);
      const cst = await fs.lstat(child).catch(() => undefined);
      if (cst) await walk(child, cst);
    }
  };
  await walk(root, rootStat);
  return usage;
}
