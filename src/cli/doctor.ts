/** `corral doctor`: checks every host prerequisite and says what to install or change. */
import { promises as fs, constants as fsc } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/config.js';
import { parseOptions } from './commands.js';
import { findExecutable, isExecutable, nativeBinary } from '../util/paths.js';
import { exists } from '../util/fs.js';
import { execFile } from '../util/exec.js';
import { isRunscHandler, netnsHasRmemDefault } from '../oci/runsc.js';

export interface Finding {
  level: 'ok' | 'warn' | 'fail';
  what: string;
  fix?: string;
}

export async function doctorCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: parseOptions('doctor') });
  const cfg = await loadConfig(values.config as string | undefined);
  const findings: Finding[] = [];
  const add = (level: Finding['level'], what: string, fix?: string) => findings.push({ level, what, fix });

  add(process.getuid?.() === 0 ? 'ok' : 'fail', 'running as root', 'run corral as root');

  for (const h of Object.values(cfg.runtimes)) {
    const bin = await findExecutable(h.path);
    if (bin) add('ok', `runtime handler "${h.name}": ${bin}`);
    else add('fail', `runtime handler "${h.name}": ${h.path} not found`, debianPackage(h.path));
    if (isRunscHandler(h)) for (const f of await runscFindings(h.name, h.type, bin)) add(f.level, f.what, f.fix);
  }
  const conmon = await findExecutable('conmon');
  add(conmon ? 'ok' : 'warn', conmon ? `conmon: ${conmon}` : 'conmon not found (needed for containers)', 'apt-get install conmon');

  const zstd = await findExecutable('zstd');
  add(zstd ? 'ok' : 'warn', zstd ? `zstd: ${zstd}` : 'zstd not found: images with zstd-compressed layers cannot be unpacked', 'apt-get install zstd');

  for (const bin of ['corral-nshelper', 'corral-pause', 'corral-unpack', 'corral-execreaper', 'corral-streamhelper', 'corral-podpause', 'corral-runsc']) {
    const p = nativeBinary(bin);
    add((await isExecutable(p)) ? 'ok' : 'fail', `${bin}: ${p}`, 'build Corral: npm run build (needs gcc and libc6-dev)');
  }
  // Loaded as the daemon loads it (a build for another Node.js ABI would not be).
  const { netnsDialer, NETNS_DIAL_ADDON } = await import('../streaming/backend/netns-dial.js');
  const dialAddon = nativeBinary(NETNS_DIAL_ADDON);
  if (netnsDialer()) add('ok', `${NETNS_DIAL_ADDON}: ${dialAddon}`);
  else add('warn', `${NETNS_DIAL_ADDON} ${(await exists(dialAddon)) ? 'does not load' : 'not built'}: port-forward runs a corral-streamhelper per connection`, 'install Node.js\'s headers (node_api.h) and build Corral: npm run build');
  // corral-unpack alone is linked dynamically (ISA-L's libisal.so.2): the loader exits 127 without it.
  const unpack = await execFile(nativeBinary('corral-unpack'), [], { timeoutMs: 10_000 }).catch((e: Error) => ({ code: -1, stdout: '', stderr: e.message }));
  if (unpack.code === 127) add('fail', `corral-unpack cannot start: ${unpack.stderr.trim().slice(0, 300)}`, 'apt-get install libisal2 (ISA-L: its gzip decoder)');

  // loopback only when asked for: corral-nshelper brings lo up itself.
  const needed = ['bridge', 'host-local', ...(cfg.cni.loopbackPlugin ? ['loopback'] : []), 'portmap'];
  for (const plugin of needed) {
    const found = await firstIn(cfg.cni.binDirs, plugin);
    if (found) add('ok', `CNI plugin ${plugin}: ${found}`);
    else add(plugin === 'portmap' ? 'warn' : 'fail', `CNI plugin ${plugin} not found in ${cfg.cni.binDirs.join(', ')}`, 'apt-get install containernetworking-plugins');
  }
  const confs = await listConfs(cfg.cni.confDir);
  if (confs.length > 0) add('ok', `CNI config: ${confs.length} file(s) in ${cfg.cni.confDir} (${confs.slice(0, 3).join(', ')})`);
  else add('warn', `no CNI config in ${cfg.cni.confDir}: pods other than host-network ones cannot start`, 'write a .conflist there, or start Corral with scripts/start.sh, which installs a default bridge network');

  const mounts = await fs.readFile('/proc/self/mounts', 'utf8');
  if (/ \/sys\/fs\/cgroup cgroup2 /.test(mounts)) add('ok', 'cgroups: v2 (unified)');
  else if (/ cgroup .*memory/.test(mounts)) add('ok', 'cgroups: v1 (with memory controller)');
  else add('fail', 'no cgroup file system mounted at /sys/fs/cgroup', 'mount cgroups (systemd does this on a normal boot)');
  const v2InHybrid = await fs.readFile('/sys/fs/cgroup/unified/cgroup.controllers', 'utf8').catch(() => '');
  if (v2InHybrid.trim() !== '') {
    add('fail', `hybrid cgroups with controllers left on the v2 tree (${v2InHybrid.trim()}): crun refuses to run`, 'run scripts/prepare-cgroups.sh (mounts them as v1 hierarchies)');
  }

  const filesystems = await fs.readFile('/proc/filesystems', 'utf8');
  add(/\toverlay\n/.test(filesystems) ? 'ok' : 'warn', 'overlayfs in the kernel', 'modprobe overlay');
  add(/\tnsfs\n/.test(filesystems) || (await exists('/proc/self/ns/net')) ? 'ok' : 'fail', 'network namespaces (nsfs)', 'a kernel with CONFIG_NET_NS');

  const stateFs = await fileSystemOf(cfg.stateDir);
  if (stateFs) findings.push(stateDirFinding(cfg.stateDir, stateFs.folder, stateFs.type));

  const netnsDirOk = await ensureDirWritable(cfg.netnsDir);
  add(netnsDirOk ? 'ok' : 'fail', `netns dir ${cfg.netnsDir} writable`, `create ${cfg.netnsDir} on a tmpfs (e.g. /run)`);

  const status = await fs.readFile('/proc/self/status', 'utf8');
  const capEff = BigInt('0x' + (/CapEff:\s*([0-9a-f]+)/.exec(status)?.[1] ?? '0'));
  const sysResource = (capEff >> 24n) & 1n;
  if (sysResource === 1n) add('ok', 'CAP_SYS_RESOURCE: oom_score_adj of sandboxes can be set to -998');
  else add('warn', 'no CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below the daemon\'s own; Corral clamps it (restrict_oom_score_adj = "auto")');

  const mark = { ok: 'ok  ', warn: 'warn', fail: 'FAIL' } as const;
  for (const f of findings) process.stdout.write(`[${mark[f.level]}] ${f.what}${f.level !== 'ok' && f.fix ? `\n       → ${f.fix}` : ''}\n`);
  const failed = findings.filter((f) => f.level === 'fail').length;
  process.stdout.write(failed === 0 ? 'corral doctor: this host can run Corral\n' : `corral doctor: ${failed} problem(s) to fix\n`);
  return failed === 0 ? 0 : 1;
}

/** statfs f_type of the memory file systems: what `state_dir` is meant to be on. */
const MEMORY_FS = new Map<number, string>([
  [0x01021994, 'tmpfs'],
  [0x858458f6, 'ramfs'],
]);
/** Names of some others, for the message. */
const DISK_FS = new Map<number, string>([
  [0xef53, 'ext2/3/4'],
  [0x58465342, 'xfs'],
  [0x9123683e, 'btrfs'],
  [0x794c7630, 'overlay'],
]);

/**
 * Whether the state dir (`folder`: it, or its nearest existing parent) is on a memory
 * file system. Its files (pins, hostname, hosts, resolv.conf, the pause's pidfile) are meant
 * to end with the machine, as on a systemd host where /run is a tmpfs; on a disk they outlive
 * a reboot, and on an ext4 without a journal each new one costs more the more were removed
 * in the last 30 s (its inode allocator skips recently freed inodes).
 */
export function stateDirFinding(stateDir: string, folder: string, type: number): Finding {
  const memory = MEMORY_FS.get(type);
  if (memory) return { level: 'ok', what: `state dir ${stateDir} on a memory file system (${memory})` };
  return {
    level: 'warn',
    what: `state dir ${stateDir} is not on a memory file system (${folder} is on ${DISK_FS.get(type) ?? `file system type 0x${type.toString(16)}`}): pods' volatile files outlive a reboot and cost more to create`,
    fix: `mount a tmpfs on ${stateDir} before Corral starts, or set state_dir to a folder under a tmpfs (systemd hosts have /run on one)`,
  };
}

/** The file system type of `dir`, or of its nearest existing parent; undefined if none can be read. */
export async function fileSystemOf(dir: string): Promise<{ folder: string; type: number } | undefined> {
  for (let folder = path.resolve(dir); ; folder = path.dirname(folder)) {
    try {
      return { folder, type: (await fs.statfs(folder)).type };
    } catch {
      if (folder === path.dirname(folder)) return undefined;
    }
  }
}

function debianPackage(bin: string): string {
  const name = path.basename(bin);
  return ['runc', 'crun', 'runsc'].includes(name) ? `apt-get install ${name}` : `install ${bin}`;
}

/**
 * A gVisor handler: runsc answers, the handler is a `vm` one, and what this kernel does to
 * runsc's root-namespace check (and that corral-runsc hides it) is said, checked for real.
 */
async function runscFindings(name: string, type: string, bin: string | undefined): Promise<Finding[]> {
  const out: Finding[] = [];
  const who = `runtime handler "${name}" (gVisor)`;
  if (type !== 'vm') out.push({ level: 'fail', what: `${who} has type = "${type}": runsc builds the pod's network from its namespace when the sandbox starts`, fix: `set type = "vm" in [runtimes.${name}]` });
  if (bin) {
    const v = await execFile(bin, ['--version'], { timeoutMs: 10_000 }).catch((e: Error) => ({ code: -1, stdout: '', stderr: e.message }));
    const version = /runsc version (\S+)/.exec(v.stdout)?.[1];
    if (v.code === 0 && version) out.push({ level: 'ok', what: `${who}: runsc ${version}` });
    else out.push({ level: 'fail', what: `${who}: ${bin} --version did not answer as runsc: ${(v.stderr || v.stdout).trim().slice(0, 200)}`, fix: 'apt-get install runsc' });
  }
  let affected: boolean;
  try {
    affected = await netnsHasRmemDefault();
  } catch (e) {
    out.push({ level: 'warn', what: `${who}: cannot tell whether this kernel trips runsc's root-namespace check: ${(e as Error).message}`, fix: 'apt-get install util-linux (unshare)' });
    return out;
  }
  if (!affected) {
    out.push({ level: 'ok', what: `${who}: net.core.rmem_default is not visible in pod network namespaces; runsc's root-namespace check holds` });
    return out;
  }
  // The kernel shows the sysctl in every netns (Linux 6.x): the wrapper must hide it, for real.
  const hidden = await execFile('unshare', ['--net', nativeBinary('corral-runsc'), 'sh', '-c', 'test ! -e /proc/sys/net/core/rmem_default'], { timeoutMs: 10_000 });
  if (hidden.code === 0) {
    out.push({ level: 'ok', what: `${who}: this kernel shows net.core.rmem_default in every network namespace, so runsc would refuse pod networks ("cannot run with network enabled in root network namespace"); Corral runs runsc through corral-runsc, which hides /proc/sys/net from it` });
  } else {
    out.push({ level: 'fail', what: `${who}: this kernel makes runsc refuse pod networks, and corral-runsc cannot hide /proc/sys/net: ${(hidden.stderr || hidden.stdout).trim().slice(0, 300)}`, fix: 'run corral as root with CAP_SYS_ADMIN (a private mount namespace and a tmpfs mount are needed), and build Corral (npm run build)' });
  }
  return out;
}

async function firstIn(dirs: string[], name: string): Promise<string | undefined> {
  for (const d of dirs) {
    const p = path.join(d, name);
    if (await isExecutable(p)) return p;
  }
  return undefined;
}

async function listConfs(dir: string): Promise<string[]> {
  try {
    return (await fs.readdir(dir)).filter((n) => /\.(conf|conflist|json)$/.test(n)).sort();
  } catch {
    return [];
  }
}

async function ensureDirWritable(dir: string): Promise<boolean> {
  try {
    await fs.mkdir(dir, { recursive: true });
    await fs.access(dir, fsc.W_OK);
    return true;
  } catch {
    return false;
  }
}
