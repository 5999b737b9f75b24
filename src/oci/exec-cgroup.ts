/**
 * A cgroup of its own for each exec'd command, so the command's whole process tree can be
 * found and killed — including descendants that `setsid`, double-fork or get reparented to
 * the container's init, which no process-tree walk can follow. A process cannot leave a
 * cgroup without write access to the cgroup file system, so "everything in this cgroup" is
 * exactly "everything this exec started".
 *
 * The exec cgroup is a child of the container's cgroup in every hierarchy the container's
 * init belongs to (cgroup v1 controllers, the v1 name=systemd hierarchy, the unified v2
 * one), so the command stays under the container's limits (v1 and v2 charge children to
 * their parents) and is killed with the container (`runc kill --all`, `crun kill --all` and
 * both runtimes' delete walk child cgroups). Both runtimes take it as `exec --cgroup <name>`;
 * crun quietly leaves the command in the root cgroup of any hierarchy where the child does
 * not exist, hence "every hierarchy, or no exec".
 *
 * Killing: `cgroup.kill` where the kernel has it (v2, Linux ≥ 5.14, also the unified
 * hierarchy of a hybrid host) kills every member atomically, forks included; else the v1
 * freezer stops the tree while each member is sent SIGKILL; else SIGKILL in rounds until
 * the cgroup is empty.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

/** One line of /proc/<pid>/cgroup. */
export interface ProcCgroupEntry {
  /** Controllers of a v1 hierarchy (`name=systemd` included); empty for the v2 hierarchy. */
  controllers: string[];
  /** The cgroup's path, relative to the reader's cgroup namespace root. */
  path: string;
}

/** A mounted cgroup hierarchy, from /proc/self/mountinfo. */
export interface CgroupMount {
  version: 1 | 2;
  /** v1: the controllers (and `name=...`) in its super options. */
  controllers: string[];
  mountPoint: string;
  /** The cgroup shown at the mount point (`/` unless a sub-tree was mounted). */
  root: string;
}

/** A directory of one cgroup hierarchy. */
export interface CgroupDir {
  version: 1 | 2;
  controllers: string[];
  dir: string;
}

/** Pure: parses /proc/<pid>/cgroup. */
export function parseProcCgroup(text: string): ProcCgroupEntry[] {
  const out: ProcCgroupEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    out.push({ controllers: m[2] === '' ? [] : m[2]!.split(','), path: m[3]! });
  }
  return out;
}

const unescapeMountField = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/** Mount options of a v1 cgroup that are not controllers. */
const V1_NON_CONTROLLER_OPTIONS = /^(rw|ro|noprefix|clone_children|xattr|cpuset_v2_mode|favordynmods|release_agent=.*|none)$/;

/** Pure: the cgroup hierarchies mounted, from /proc/self/mountinfo. */
export function parseCgroupMounts(mountinfo: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const before = line.slice(0, sep).split(' ');
    const [fstype, , superOptions = ''] = line.slice(sep + 3).split(' ');
    if (fstype !== 'cgroup' && fstype !== 'cgroup2') continue;
    const root = unescapeMountField(before[3] ?? '');
    const mountPoint = unescapeMountField(before[4] ?? '');
    if (!root || !mountPoint) continue;
    if (fstype === 'cgroup2') out.push({ version: 2, controllers: [], mountPoint, root });
    else out.push({ version: 1, controllers: superOptions.split(',').filter((o) => o && !V1_NON_CONTROLLER_OPTIONS.test(o)), mountPoint, root });
  }
  return out;
}

/**
 * Pure: the directories of a container's cgroups, from its init's /proc/<pid>/cgroup and
 * the mounts. Only cgroups named after the container (the runtimes' `<parent>/<id>`) count:
 * a hierarchy the runtime left the container out of, or a recycled PID, yields nothing.
 */
export function containerCgroupDirs(entries: ProcCgroupEntry[], mounts: CgroupMount[], containerId: string): CgroupDir[] {
  const out: CgroupDir[] = [];
  for (const e of entries) {
    if (path.posix.basename(e.path) !== containerId) continue;
    const version = e.controllers.length === 0 ? 2 : 1;
    const mount = mounts.find(
      (m) =>
        m.version === version &&
        (version === 2 || e.controllers.every((c) => m.controllers.includes(c))) &&
        (m.root === '/' || e.path === m.root || e.path.startsWith(m.root + '/')),
    );
    if (!mount) continue;
    const rel = mount.root === '/' ? e.path : e.path.slice(mount.root.length);
    out.push({ version, controllers: e.controllers, dir: path.join(mount.mountPoint, rel) });
  }
  return out;
}

const EXEC_CGROUP_PREFIX = 'corral-exec-';
/** Exec cgroups of live calls: a sweep of leftovers must not remove one about to be used. */
const inUse = new Set<string>();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function readPids(dir: string): Promise<number[]> {
  const text = await fs.readFile(path.join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map(Number).filter((n) => n > 0);
}

export class ExecCgroup {
  private constructor(
    /** The name runtimes take as `exec --cgroup <name>`. */
    readonly name: string,
    /** Its directory in each hierarchy. */
    readonly dirs: CgroupDir[],
  ) {}

  /**
   * Creates an exec cgroup under the cgroups of the container whose init is `initPid`.
   * Leftover exec cgroups of that container that have emptied since are removed first.
   */
  static async create(initPid: number, containerId: string): Promise<ExecCgroup> {
    if (!Number.isInteger(initPid) || initPid <= 0) throw new Error(`container ${containerId} has no init process`);
    const [procText, mountinfo] = await Promise.all([
      fs.readFile(`/proc/${initPid}/cgroup`, 'utf8').catch(() => ''),
      fs.readFile('/proc/self/mountinfo', 'utf8'),
    ]);
    const parents = containerCgroupDirs(parseProcCgroup(procText), parseCgroupMounts(mountinfo), containerId);
    if (parents.length === 0) throw new Error(`container ${containerId}: its init process ${initPid} is gone or not in a cgroup of the container`);
    await sweepLeftovers(parents);
    const name = EXEC_CGROUP_PREFIX + randomBytes(8).toString('hex');
    inUse.add(name);
    const cg = new ExecCgroup(name, []);
    try {
      for (const p of parents) {
        const dir = path.join(p.dir, name);
        await fs.mkdir(dir);
        cg.dirs.push({ ...p, dir });
        // A new v1 cpuset starts with no CPUs and no memory nodes: nothing could join it.
        if (p.version === 1 && p.controllers.includes('cpuset')) {
          for (const f of ['cpuset.cpus', 'cpuset.mems']) await fs.writeFile(path.join(dir, f), await fs.readFile(path.join(p.dir, f), 'utf8'));
        }
      }
    } catch (e) {
      await cg.remove();
      throw new Error(`creating the exec cgroup of container ${containerId}: ${(e as Error).message}`);
    }
    return cg;
  }

  /** Every process in the exec cgroup, in any hierarchy. */
  async pids(): Promise<number[]> {
    const all = new Set<number>();
    for (const d of this.dirs) for (const p of await readPids(d.dir)) all.add(p);
    return [...all];
  }

  /**
   * SIGKILLs every process of the exec and waits until the cgroup is empty. Resolves true
   * when it is, false when processes were still there after `timeoutMs` (stuck in the kernel).
   */
  async killAll(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const killFile = await this.cgroupKillFile();
    const freezer = killFile ? undefined : this.dirs.find((d) => d.version === 1 && d.controllers.includes('freezer'));
    for (;;) {
      const pids = await this.pids();
      if (pids.length === 0) return true;
      if (Date.now() > deadline) return false;
      if (killFile) await fs.writeFile(killFile, '1').catch(() => {});
      else {
        // Frozen, the tree cannot fork new members while we kill the listed ones.
        if (freezer) await this.freeze(freezer.dir, Math.min(1000, Math.max(0, deadline - Date.now())));
        for (const p of freezer ? await readPids(freezer.dir) : pids) {
          try {
            process.kill(p, 'SIGKILL');
          } catch {
            /* already gone */
          }
        }
        if (freezer) await fs.writeFile(path.join(freezer.dir, 'freezer.state'), 'THAWED').catch(() => {});
      }
      await sleep(10);
    }
  }

  /** Removes the exec cgroup where it is empty; what is still busy is left for a later sweep. */
  async remove(): Promise<boolean> {
    let all = true;
    for (const d of this.dirs) {
      try {
        await fs.rmdir(d.dir);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') all = false;
      }
    }
    inUse.delete(this.name);
    return all;
  }

  private async cgroupKillFile(): Promise<string | undefined> {
    for (const d of this.dirs.filter((x) => x.version === 2)) {
      const f = path.join(d.dir, 'cgroup.kill');
      if (await fs.access(f).then(() => true, () => false)) return f;
    }
    return undefined;
  }

  private async freeze(dir: string, timeoutMs: number): Promise<void> {
    const stateFile = path.join(dir, 'freezer.state');
    await fs.writeFile(stateFile, 'FROZEN').catch(() => {});
    const until = Date.now() + timeoutMs;
    while (Date.now() < until && (await fs.readFile(stateFile, 'utf8').catch(() => 'FROZEN')).trim() !== 'FROZEN') await sleep(5);
  }
}

/** Removes the container's exec cgroups that no call uses and whose processes have ended. */
async function sweepLeftovers(parents: CgroupDir[]): Promise<void> {
  for (const p of parents) {
    const names = await fs.readdir(p.dir).catch(() => [] as string[]);
    for (const n of names) {
      if (n.startsWith(EXEC_CGROUP_PREFIX) && !inUse.has(n)) await fs.rmdir(path.join(p.dir, n)).catch(() => {});
    }
  }
}
