/** A container's cgroup placement (cgroupfs driver) and its oom_score_adj. */
import path from 'node:path';

/** The oom_score_adj to apply: the request, kept within [-1000, 1000] and not below `floor`. */
export function clampOomScoreAdj(requested: number, floor: number): number {
  const r = Math.trunc(Number.isFinite(requested) ? requested : 0);
  const f = Math.max(-1000, Math.min(1000, Math.trunc(floor)));
  return Math.max(f, Math.min(1000, Math.max(-1000, r)));
}

/**
 * The cgroupsPath of a sandbox under the cgroupfs driver: `<cgroup_parent>/<id>`.
 * An empty parent puts it under `defaultParent`. A systemd slice parent is refused,
 * as are relative components that would climb out of the parent.
 */
export function cgroupfsCgroupsPath(cgroupParent: string, id: string, defaultParent = '/corral'): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id)) throw new Error(`cgroup: "${id}" is not a usable container id`);
  const parent = cgroupParent.trim() === '' ? defaultParent : cgroupParent.trim();
  if (parent.endsWith('.slice')) {
    throw new Error(`cgroup parent "${parent}" is a systemd slice, but Corral uses the cgroupfs driver (set kubelet's cgroupDriver to cgroupfs)`);
  }
  if (parent.split('/').some((part) => part === '..' || part === '.')) {
    throw new Error(`cgroup parent "${parent}" may not contain "." or ".." components`);
  }
  return path.posix.join('/', parent, id);
}
