/**
 * conmon (Debian's container monitor) runs the OCI runtime's `create` for an application
 * container and then stays as its monitor, outside the daemon: it holds the container's
 * stdio and writes it to the CRI log file (kubelet's format), and writes the exit code to
 * `<exit dir>/<id>` when the container exits, so a daemon restart loses nothing.
 *
 * conmon forks at once (the process we spawn exits); the monitor reports over the "sync
 * pipe" (fd 3, named by _OCI_SYNCPIPE) one JSON line: `{"data": <init pid>}` after a
 * successful create, or a negative `data` with the runtime's error as `message`.
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { findExecutable } from '../util/paths.js';

export interface ConmonCreateOptions {
  id: string;
  name?: string;
  bundleDir: string;
  runtimePath: string;
  runtimeRoot: string;
  /** CRI log file (k8s-file format). */
  logPath: string;
  /** conmon writes `<exitDir>/<id>` holding the exit code. */
  exitDir: string;
  /** Attach sockets go under here (kept short: unix socket paths are limited). */
  socketDir: string;
  pidFile: string;
  conmonPidFile: string;
  logSizeMax?: number;
  timeoutMs?: number;
  conmonPath?: string;
}

export class ConmonError extends Error {
  constructor(readonly id: string, detail: string) {
    super(`conmon for container ${id}: ${detail}`);
    this.name = 'ConmonError';
  }
}

/** Resolves once the container is created (not started), with its init PID and conmon's PID. */
export async function conmonCreate(o: ConmonCreateOptions): Promise<{ pid: number; conmonPid: number }> {
  await Promise.all([fs.mkdir(o.exitDir, { recursive: true, mode: 0o700 }), fs.mkdir(o.socketDir, { recursive: true, mode: 0o700 }), fs.mkdir(o.runtimeRoot, { recursive: true, mode: 0o700 })]);
  // conmon wants an absolute runtime path; handlers may name the runtime bare (PATH lookup).
  const runtimePath = (await findExecutable(o.runtimePath)) ?? o.runtimePath;
  const args = [
    '--api-version', '1',
    '-c', o.id,
    '-u', o.id,
    '-n', o.name ?? o.id,
    '-r', runtimePath,
    '--runtime-arg', `--root=${o.runtimeRoot}`,
    '-b', o.bundleDir,
    '-p', o.pidFile,
    '-P', o.conmonPidFile,
    '-l', `k8s-file:${o.logPath}`,
    '--exit-dir', o.exitDir,
    '--socket-dir-path', o.socketDir,
    '--log-level', 'error',
  ];
  if (o.logSizeMax) args.push('--log-size-max', String(o.logSizeMax));
  // conmon's own complaints go to a file: the monitor keeps its stderr for the container's lifetime.
  const errFile = path.join(os.tmpdir(), `corral-conmon-${process.pid}-${randomBytes(6).toString('hex')}.err`);
  const errFh = await fs.open(errFile, 'w+', 0o600);
  try {
    const child = spawn(o.conmonPath ?? 'conmon', args, {
      stdio: ['ignore', 'ignore', errFh.fd, 'pipe'],
      env: { ...process.env, _OCI_SYNCPIPE: '3' },
      detached: true, // its own process group: signals meant for the daemon never reach it
    });
    const sync = child.stdio[3] as Readable;
    const message = await new Promise<{ data: number; message?: string }>((resolve, reject) => {
      let buf = '';
      let settled = false;
      const done = (f: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        f();
      };
      const timer = setTimeout(() => done(() => reject(new ConmonError(o.id, `no answer within ${o.timeoutMs ?? 60_000} ms`))), o.timeoutMs ?? 60_000);
      sync.on('data', (chunk: Buffer) => {
        buf += chunk.toString('utf8');
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        try {
          const parsed = JSON.parse(buf.slice(0, nl)) as { data: number; message?: string };
          done(() => resolve(parsed));
        } catch {
          done(() => reject(new ConmonError(o.id, `unreadable sync message: ${buf.slice(0, nl)}`)));
        }
      });
      sync.on('end', () => done(() => reject(new ConmonError(o.id, 'exited before reporting the container'))));
      child.on('error', (e) => done(() => reject(new ConmonError(o.id, `cannot run conmon (apt-get install conmon): ${e.message}`))));
    }).catch(async (e: Error) => {
      await killConmon(o.conmonPidFile);
      const stderr = (await fs.readFile(errFile, 'utf8').catch(() => '')).trim();
      throw stderr ? new ConmonError(o.id, `${e.message.replace(/^conmon for container \S+: /, '')}: ${stderr}`) : e;
    });
    sync.destroy();
    if (!(message.data > 0)) throw new ConmonError(o.id, runtimeReason(message.message ?? '') || 'the runtime failed to create the container');
    const conmonPid = Number((await fs.readFile(o.conmonPidFile, 'utf8').catch(() => '0')).trim());
    return { pid: message.data, conmonPid };
  } finally {
    await errFh.close();
    await fs.rm(errFile, { force: true });
  }
}

/** runc/crun log lines (`time=... level=error msg="..."`) reduced to their messages. */
function runtimeReason(text: string): string {
  // runc logs warnings on the way down (freezer, cleanup); the error-level lines say why.
  const lines = text.split('\n');
  const errors = lines.filter((l) => /level=(error|fatal)/.test(l));
  const msgs = [...(errors.length > 0 ? errors : lines).join('\n').matchAll(/msg="((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!.replace(/\\(.)/g, '$1'));
  return (msgs.length > 0 ? msgs.join('; ') : text).trim();
}

async function killConmon(pidFile: string): Promise<void> {
  const pid = Number((await fs.readFile(pidFile, 'utf8').catch(() => '0')).trim());
  if (pid > 0) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

/** The container's exit code once conmon recorded it; null while it runs. */
export async function readExitCode(exitDir: string, id: string): Promise<number | null> {
  let text: string;
  try {
    text = await fs.readFile(path.join(exitDir, id), 'utf8');
  } catch {
    return null;
  }
  const n = Number.parseInt(text.trim(), 10);
  // conmon writes the file in one go, but an empty read may race its write: treat as running.
  return Number.isInteger(n) ? n : null;
}

/** Waits until conmon records the exit (or timeoutMs passes); the code, or null. */
export async function waitForExit(exitDir: string, id: string, timeoutMs: number): Promise<number | null> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const code = await readExitCode(exitDir, id);
    if (code !== null || Date.now() >= deadline) return code;
    await new Promise((r) => setTimeout(r, Math.min(25, Math.max(1, deadline - Date.now()))));
  }
}
