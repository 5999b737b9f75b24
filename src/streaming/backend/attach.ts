/**
 * Attach: the container's own stdio through conmon's attach socket, which is SOCK_SEQPACKET
 * (out of reach of Node's net), so corral-streamhelper connects and re-frames it: conmon's
 * stdout packets to the helper's stdout, stderr packets to its stderr, our stdin raw to the
 * socket, and stdin's end as shutdown(SHUT_WR) (conmon then closes a stdin_once container's
 * stdin). Resize events go to conmon's ctl FIFO as "1 <rows> <cols>" when the container has
 * a TTY. conmon sends to every attached client and keeps logging; detaching (the client
 * leaving) stops only the helper.
 */
import { spawn } from 'node:child_process';
import { constants, promises as fs } from 'node:fs';
import { nativeBinary } from '../../util/paths.js';
import type { StreamIO, TerminalSize } from '../runtime.js';
import { connectHelper, killGroup, whenAborted } from './pipes.js';

export interface AttachTarget {
  id: string;
  /** conmon's attach socket for the container. */
  attachSocket: string;
  /** conmon's control FIFO (resize). */
  ctlFifo: string;
  /** The container was created with a TTY. */
  tty: boolean;
}

export class AttachError extends Error {
  constructor(containerId: string, detail: string) {
    super(`attaching to container ${containerId}: ${detail}`);
    this.name = 'AttachError';
  }
}

/** Pure: conmon's ctl FIFO line for a resize (type 1, rows then columns); null for sizes conmon drops. */
export function ctlResizeLine(size: TerminalSize): string | null {
  const { width, height } = size;
  // conmon >= 2.2 drops sizes outside 0..1000; 0 is "unknown" to the kernel.
  if (!(Number.isInteger(width) && Number.isInteger(height) && width >= 1 && height >= 1 && width <= 1000 && height <= 1000)) return null;
  return `1 ${height} ${width}\n`;
}

async function writeCtl(fifo: string, line: string): Promise<void> {
  // Non-blocking: with conmon gone there is no reader and this fails (ENXIO) instead of hanging.
  const fh = await fs.open(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
  try {
    await fh.write(line);
  } finally {
    await fh.close();
  }
}

export async function attachToContainer(t: AttachTarget, io: StreamIO): Promise<void> {
  const child = spawn(nativeBinary('corral-streamhelper'), ['attach', t.attachSocket, ...(io.stdin ? [] : ['--no-stdin'])], {
    stdio: [io.stdin ? 'pipe' : 'ignore', io.stdout ? 'pipe' : 'ignore', !io.tty && io.stderr ? 'pipe' : 'ignore', 'pipe'],
    detached: true,
  });
  const { exit, report, stopStdin, outputDone } = connectHelper(child, io);
  let over = false;
  if (t.tty && io.resize) {
    void (async () => {
      try {
        for await (const size of io.resize!) {
          if (over) break;
          const line = ctlResizeLine(size);
          if (line) await writeCtl(t.ctlFifo, line).catch(() => {});
        }
      } catch {
        /* no more resizes */
      }
    })();
  }
  const abort = whenAborted(io.signal);
  try {
    await Promise.race([exit, abort.promise]);
    if (io.signal.aborted) killGroup(child);
    const { code, spawnError } = await exit;
    await outputDone;
    if (spawnError) throw new AttachError(t.id, `cannot run corral-streamhelper: ${spawnError.message}`);
    if (code !== 0 && code !== null && !io.signal.aborted) throw new AttachError(t.id, (await report).trim() || `helper exit status ${code}`);
  } finally {
    over = true;
    abort.dispose();
    stopStdin();
    if (child.exitCode === null && child.signalCode === null) killGroup(child);
  }
}
