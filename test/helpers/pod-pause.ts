/**
 * What Corral's own pause (infra mode 'init', native/podpause.c) leaves on the host: its
 * processes (their command line names the pod's state folder, hence its ID) and its
 * cgroups (`<parent>/<id>` in every hierarchy). For "nothing of the pod is left" checks.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';

/** PIDs of corral-podpause processes (launcher or pause) of this pod. */
export async function podPauseProcesses(podId: string): Promise<number[]> {
  const out: number[] = [];
  for (const name of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const cmd = await fs.readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes('corral-podpause') && cmd.includes(podId)) {
      const stat = await fs.readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
      if (stat && !/\) [ZX] /.test(stat)) out.push(Number(name));
    }
  }
  return out;
}

/** Cgroup directories named after the pod, up to three levels under each hierarchy's root. */
export async function podCgroupDirs(podId: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, depth: number) => {
    const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const p = path.join(dir, e.name);
      if (e.name === podId) out.push(p);
      else if (depth < 3 && e.name.startsWith('corral')) await walk(p, depth + 1);
    }
  };
  for (const h of await fs.readdir('/sys/fs/cgroup').catch(() => [] as string[])) await walk(path.join('/sys/fs/cgroup', h), 1);
  if (out.length === 0) await walk('/sys/fs/cgroup', 1); // a pure v2 host: the hierarchy is the root
  return out;
}

/** The CapEff/CapBnd/NoNewPrivs/Seccomp lines of /proc/PID/status, as a record. */
export async function processSecurity(pid: number): Promise<Record<string, string>> {
  const text = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^(Cap\w+|NoNewPrivs|Seccomp|NSpid|PPid):\s*(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!.trim();
  }
  return out;
}
