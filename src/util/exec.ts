import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { nativeBinary } from './paths.js';
import { Spawner, SpawnerUnavailableError, SPAWNER_MAX_OUTPUT, type RunningProgram } from './spawner.js';

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

/**
 * execFile with a fork of this process (child_process.spawn) instead of corral-spawner: the
 * same contract, output kept up to SPAWNER_MAX_OUTPUT bytes per stream as through the helper.
 */
export function execFileDirect(file: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const program = spawnDirect(file, args, opts, false);
  program.end();
  return program.result;
}

/**
 * Starts a program whose stdin stays open for writes until end() (after opts.input, if
 * given), in a process group of its own that kill() and the timeout SIGKILL. Through
 * corral-spawner like execFile; directly when it is not built or cannot be run (the
 * writes made meanwhile are given to the direct one: none reached anybody).
 */
export function startProgram(file: string, args: readonly string[], opts: ExecOptions = {}): RunningProgram {
  const s = sharedSpawner();
  if (!s) return startProgramDirect(file, args, opts);
  const viaSpawner = s.start(file, args, opts);
  // Until the helper is known to run, what is asked of it is kept, to be replayed on a direct one.
  let log: ({ write: string | Buffer } | 'end' | 'kill')[] | undefined = s.pid === undefined ? [] : undefined;
  let direct: RunningProgram | undefined;
  const result = viaSpawner.result.catch((e: unknown) => {
    if (!(e instanceof SpawnerUnavailableError) || !log) throw e;
    if (spawner === s) spawner = null; // nothing ran: safe to run it directly
    direct = startProgramDirect(file, args, opts);
    for (const step of log) {
      if (step === 'end') direct.end();
      else if (step === 'kill') direct.kill();
      else direct.write(step.write);
    }
    log = undefined;
    return direct.result;
  });
  const target = () => direct ?? viaSpawner;
  return {
    result,
    write(data) {
      log?.push({ write: data });
      target().write(data);
    },
    end(data) {
      if (data !== undefined) log?.push({ write: data });
      log?.push('end');
      target().end(data);
    },
    kill() {
      log?.push('kill');
      target().kill();
    },
  };
}

/** startProgram with a fork of this process; each output stream kept up to SPAWNER_MAX_OUTPUT bytes, as through the helper. */
export function startProgramDirect(file: string, args: readonly string[], opts: ExecOptions = {}): RunningProgram {
  return spawnDirect(file, args, opts, true);
}

/**
 * The direct spawn behind execFileDirect and startProgramDirect: a process group of its own
 * (the timeout and kill() SIGKILL all of it), output capped; stdin is /dev/null unless there
 * is input or it is kept open for writes (`stdinOpen`), as corral-spawner does.
 */
function spawnDirect(file: string, args: readonly string[], opts: ExecOptions, stdinOpen: boolean): RunningProgram {
  const pipedStdin = stdinOpen || opts.input !== undefined;
  const child = spawn(file, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: [pipedStdin ? 'pipe' : 'ignore', 'pipe', 'pipe'], detached: true });
  const killGroup = () => {
    try {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
    } catch {
      child.kill('SIGKILL');
    }
  };
  const result = new Promise<ExecResult>((resolve, reject) => {
    const collect = (stream: NodeJS.ReadableStream) => {
      const kept: Buffer[] = [];
      let bytes = 0;
      let cut = false;
      stream.on('data', (b: Buffer) => {
        const room = SPAWNER_MAX_OUTPUT - bytes;
        if (b.length > room) cut = true;
        if (room > 0) {
          kept.push(room < b.length ? b.subarray(0, room) : b);
          bytes += Math.min(room, b.length);
        }
      });
      return () => Buffer.concat(kept).toString('utf8') + (cut ? `\n[output cut at ${SPAWNER_MAX_OUTPUT} bytes]\n` : '');
    };
    const out = collect(child.stdout!);
    const err = collect(child.stderr!);
    const timer = opts.timeoutMs ? setTimeout(killGroup, opts.timeoutMs) : undefined;
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: out(), stderr: err() });
    });
  });
  const stdin = child.stdin;
  stdin?.on('error', () => { /* the program may exit without reading its input */ });
  if (opts.input !== undefined) stdin!.write(opts.input);
  const open = () => stdin !== null && !stdin.writableEnded && !stdin.destroyed;
  return {
    result,
    write(data) {
      if (open()) stdin!.write(data);
    },
    end(data) {
      if (open()) stdin!.end(data);
    },
    kill() {
      killGroup();
      stdin?.destroy();
    },
  };
}

/** Like execFile, but a non-zero exit becomes an ExecError carrying the program's output. */
export async function execChecked(file: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const result = await execFile(file, args, opts);
  if (result.code !== 0) throw new ExecError([file, ...args].join(' '), result);
  return result;
}
