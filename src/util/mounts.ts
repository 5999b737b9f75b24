/** Reading the mount table (/proc/self/mountinfo). */
import { promises as fs } from 'node:fs';
import path from 'node:path';

/** Whether something is mounted on dir (by /proc/self/mountinfo). */
export async function isMountPoint(dir: string): Promise<boolean> {
  const mounts = await fs.readFile('/proc/self/mountinfo', 'utf8');
  const target = path.resolve(dir);
  for (const line of mounts.split('\n')) {
    const mountPoint = line.split(' ')[4];
    if (mountPoint !== undefined && unescapeMountinfo(mountPoint) === target) return true;
  }
  return false;
}

/** A mountinfo path field with its octal escapes (\040 for a space, ...) undone. */
export function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}
