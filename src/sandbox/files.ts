import { promises as fs, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execFile, ExecError } from '../util/exec.js';
import { isErrno } from '../util/atomic.js';
import { isMountPoint } from '../util/mounts.js';

/** Per-sandbox files bind-mounted into the pause and app containers. */
export interface SandboxFiles {
  hostname: string;
  hosts: string;
  resolvConf: string;
}

export function sandboxFilePaths(volatileDir: string): SandboxFiles {
  return {
    hostname: path.join(volatileDir, 'hostname'),
    hosts: path.join(volatileDir, 'hosts'),
    resolvConf: path.join(volatileDir, 'resolv.conf'),
  };
}

/**
 * Writes hostname, a copy of the host's /etc/hosts, and resolv.conf (given, else the host's).
 * Synchronously: five small files (two reads, three writes into the state folder, a tmpfs
 * by default) take microseconds each, while each thread-pool round trip of the async
 * calls waited behind the other pods' work (~4 ms per Run serially, more in flight).
 */
export async function writeSandboxFiles(files: SandboxFiles, hostname: string, resolvConf: string | null): Promise<void> {
  const hostFile = (file: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return undefined;
      throw e;
    }
  };
  writeFileSync(files.hostname, hostname + '\n', { mode: 0o644 });
  writeFileSync(files.hosts, hostFile('/etc/hosts') ?? '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n', { mode: 0o644 });
  writeFileSync(files.resolvConf, resolvConf ?? hostFile('/etc/resolv.conf') ?? '', { mode: 0o644 });
}

export const SHM_SIZE_BYTES = 64 * 1024 * 1024;

/** Mounts the pod's private /dev/shm: a 64 MiB tmpfs. */
export async function mountShm(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  const r = await execFile('mount', ['-t', 'tmpfs', '-o', `mode=1777,size=${SHM_SIZE_BYTES},nosuid,nodev,noexec`, 'shm', dir]);
  if (r.code !== 0) throw new ExecError(`mount tmpfs on ${dir}`, r);
}

/** Unmounts (lazily) and removes the shm dir; already gone or not mounted is fine. */
export async function unmountShm(dir: string): Promise<void> {
  if (await isMountPoint(dir)) {
    const r = await execFile('umount', ['-l', dir]);
    if (r.code !== 0 && (await isMountPoint(dir))) throw new ExecError(`umount ${dir}`, r);
  }
  try {
    await fs.rmdir(dir);
  } catch (e) {
    if (!isErrno(e, 'ENOENT')) throw e;
  }
}
