/**
 * A stand-in StreamingRuntime until the full backend (TTY exec, conmon attach, port-forward
 * in pod namespaces) is wired: exec without a TTY runs the OCI runtime's foreground
 * `exec` with pipes (cri-o's non-TTY path), the rest refuses with a clear "not yet" error
 * that reaches the client as an InternalError status. Never a fake success.
 */
import { spawn } from 'node:child_process';
import os from 'node:os';
import type { Duplex } from 'node:stream';
import { failedPrecondition, unimplemented } from '../errors.js';
import type { StreamingRuntime, StreamIO } from './runtime.js';

export interface ExecTarget {
  /** The OCI runtime binary and its state root for this container. */
  binary: string;
  root: string;
  running: boolean;
}

/** After the client leaves, how long the command gets after SIGTERM before SIGKILL. */
const KILL_GRACE_MS = 2000;

export class InterimStreamingRuntime implements StreamingRuntime {
  constructor(private readonly target: (containerId: string) => Promise<ExecTarget>) {}

  async exec(containerId: string, cmd: string[], io: StreamIO): Promise<number> {
    if (io.tty) throw unimplemented('exec with a TTY is not served yet by this build (no TTY backend); run it without -t');
    const t = await this.target(containerId);
    if (!t.running) throw failedPrecondition(`container ${containerId} is not running`);
    const child = spawn(t.binary, ['--root', t.root, 'exec', containerId, ...cmd], {
      stdio: [io.stdin ? 'pipe' : 'ignore', io.stdout ? 'pipe' : 'ignore', io.stderr ? 'pipe' : 'ignore'],
    });
    const exited = new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code, signal) => resolve(code ?? 128 + signalNumber(signal)));
    });
    if (io.stdin && child.stdin) {
      child.stdin.on('error', () => undefined); // the command may exit without reading it all
      io.stdin.pipe(child.stdin);
    }
    if (io.stdout && child.stdout) child.stdout.pipe(io.stdout);
    if (io.stderr && child.stderr) child.stderr.pipe(io.stderr);
    const onAbort = () => {
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS).unref();
    };
    io.signal.addEventListener('abort', onAbort, { once: true });
    try {
      return await exited;
    } finally {
      io.signal.removeEventListener('abort', onAbort);
      if (io.stdin && child.stdin) io.stdin.unpipe(child.stdin);
    }
  }

  async attach(): Promise<void> {
    throw unimplemented('attach is not served yet by this build (its backend is not wired in)');
  }

  async portForward(_podSandboxId: string, _port: number, _stream: Duplex): Promise<void> {
    throw unimplemented('port-forward is not served yet by this build (its backend is not wired in)');
  }
}

/** 128 + the signal's number, as a shell reports a signalled process (SIGKILL: 137). */
function signalNumber(signal: NodeJS.Signals | null): number {
  return signal ? ((os.constants.signals as Record<string, number>)[signal] ?? 9) : 0;
}
