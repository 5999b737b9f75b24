import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { nativeBinary } from './paths.js';
import { Spawner, SpawnerUnavailableError } from './spawner.js';

export interface ExecOptions {
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  cwd?: string;
}

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export class ExecError extends Error {
  constructor(readonly command: string, readonly result: ExecResult) {
    const detail = (result.stderr || result.stdout).trim();
    const how = result.signal ? `killed by ${result.signal}` : `exit status ${result.code}`;
    super(`${command}: ${how}${detail ? `: ${detail}` : ''}`);
    this.name = 'ExecError';
  }
}

let spawner: Spawner | null | undefined;

/** This process's corral-spawner (started on first use); null when it is not built. */
export function sharedSpawner(): Spawner | null {
  if (spawner === undefined) {
    const bin = nativeBinary('corral-spawner');
    spawner = existsSync(bin) ? new Spawner(bin) : null;
  }
  return spawner;
}

/**
 * Runs a program to completion, collecting its output. Never throws for a non-zero exit.
 * The program gets a process group of its own, so a timeout kills whatever it started
 * too (a child left holding the output pipes would otherwise keep us waiting).
 * It is started by corral-spawner (util/spawner.ts), so this process is not forked for it;
 * directly when the helper is not built or cannot be run (then from now on).
 */
export async function execFile(file: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const s = sharedSpawner();
  if (!s) return execFileDirect(file, args, opts);
  try {
    return await s.run(file, args, opts);
  } catch (e) {
    if (!(e instanceof SpawnerUnavailableError)) throw e;
    if (spawner === s) spawner = null; // nothing ran: safe to run it directly
    return execFileDirect(file, args, opts);
  }
}

/** execFile with a fork of this process (child_process.spawn) instead of corral-spawner. */
export function execFileDirect(file: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      detached: true,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs) {
      timer = setTimeout(() => {
        try {
          if (child.pid) process.kill(-child.pid, 'SIGKILL');
        } catch {
          child.kill('SIGKILL');
        }
      }, opts.timeoutMs);
    }
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    if (opts.input !== undefined) {
      child.stdin!.on('error', () => { /* the program may exit without reading its input */ });
      child.stdin!.end(opts.input);
    }
  });
}

/** Like execFile, but a non-zero exit becomes an ExecError carrying the program's output. */
export async function execChecked(file: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const result = await execFile(file, args, opts);
  if (result.code !== 0) throw new ExecError([file, ...args].join(' '), result);
  return result;
}
