/**
 * `corral logs [-f] [--tail N] [-t] [--since T] [--limit-bytes N] [-p] CONTAINER`: the
 * container's CRI log file, read as crictl reads it (the path from ContainerStatus; stdout
 * records to stdout, stderr records to stderr; P records joined into their line). --since
 * keeps records written at or after a time (RFC 3339, or a duration back from now),
 * --limit-bytes stops after that much output, --previous reads the previous instance's file
 * (kubelet names them by attempt: `<attempt - 1>.log` beside this one's), as crictl does.
 * -f follows the file until the container is no longer running, across kubelet's rotation:
 * the file renamed and a new one opened in its place (ReopenContainerLog) — the rest of the
 * old file is read, then the new one from its start.
 */
import { promises as fs } from 'node:fs';
import { parseArgs } from 'node:util';
import { parseOptions } from './commands.js';
import { LineSplitter, LogPrinter, TailFinder, parseCriRecord, parseSince, type LogStream } from './cri-log.js';
import { connectRuntime, resolveContainer, type Rpc } from './daemon-client.js';

const CHUNK = 64 * 1024;
/** How often -f looks for new lines, and for a rotation when there are none. */
const POLL_MS = 100;
/** How often -f asks the daemon whether the container still runs. */
const STATE_CHECK_MS = 1000;

export async function logsCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: parseOptions('logs'), allowPositionals: true });
  if (positionals.length !== 1) throw new Error('logs needs one container (ID, unique ID prefix or name)');
  let tail: number | undefined;
  if (values.tail !== undefined) {
    tail = Number(values.tail);
    if (!Number.isInteger(tail) || tail < -1) throw new Error(`--tail must be a whole number of lines (-1: all), got "${values.tail}"`);
    if (tail === -1) tail = undefined;
  }
  const since = values.since === undefined ? undefined : parseSince(String(values.since), Date.now());
  let limitBytes: number | undefined;
  if (values['limit-bytes'] !== undefined) {
    limitBytes = Number(values['limit-bytes']);
    if (!Number.isInteger(limitBytes) || limitBytes < 1) throw new Error(`--limit-bytes must be a positive whole number of bytes, got "${values['limit-bytes']}"`);
  }
  if (values.previous && values.follow) throw new Error('--previous and --follow together: the previous instance is not running');
  const daemon = await connectRuntime(values);
  try {
    const { id, status } = await resolveContainer(daemon.rpc, positionals[0]!);
    let logPath = status.logPath as string;
    if (!logPath) throw new Error(`container ${id} has no log file (it was created without a log path)`);
    if (values.previous) logPath = previousLogPath(id, logPath, Number(status.metadata?.attempt ?? 0));
    const out = new Output();
    const printer = new LogPrinter(out, values.timestamps === true, { since, limitBytes });
    const reader = await LogFile.open(logPath, id);
    try {
      if (tail !== undefined) await reader.seekTail(tail, printer);
      await reader.printAvailable(printer);
      if (values.follow) await follow(daemon.rpc, id, status.state, reader, printer);
    } finally {
      await reader.close();
    }
    await out.flushed();
    return 0;
  } finally {
    daemon.close();
  }
}

/**
 * The previous instance's log file, as crictl finds it: kubelet names a container's log
 * `<attempt>.log` in its folder, so the previous one is `<attempt - 1>.log` beside it.
 */
export function previousLogPath(id: string, logPath: string, attempt: number): string {
  if (!(attempt > 0)) throw new Error(`container ${id} is its pod's first instance (attempt 0): there is no previous one`);
  const dir = logPath.slice(0, logPath.lastIndexOf('/') + 1);
  const dot = logPath.lastIndexOf('.');
  const ext = dot > dir.length ? logPath.slice(dot) : '';
  return `${dir}${attempt - 1}${ext}`;
}

/** stdout and stderr with backpressure; a closed reader (`| head`) ends the command quietly. */
class Output {
  constructor() {
    for (const s of [process.stdout, process.stderr]) {
      // Nowhere left to report to: end, successfully when the reader just stopped reading.
      s.on('error', (e: NodeJS.ErrnoException) => process.exit(e.code === 'EPIPE' ? 0 : 1));
    }
  }

  write(stream: LogStream, data: Buffer | string): Promise<void> | void {
    const s = stream === 'stdout' ? process.stdout : process.stderr;
    if (s.write(data)) return;
    return new Promise((resolve) => s.once('drain', resolve));
  }

  async flushed(): Promise<void> {
    await Promise.all([process.stdout, process.stderr].map((s) => new Promise<void>((resolve) => s.write('', () => resolve()))));
  }
}

/** The open log file: the position read up to, and the records read so far. */
class LogFile {
  private splitter = new LineSplitter();
  private position = 0;
  private badLines = 0;

  private constructor(
    readonly path: string,
    private handle: fs.FileHandle,
    private ino: number,
  ) {}

  static async open(logPath: string, id: string): Promise<LogFile> {
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(logPath, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new Error(`the log file of container ${id}, ${logPath}, does not exist (its pod's log directory was removed, or it was rotated away)`);
      if (code === 'EACCES' || code === 'EPERM') throw new Error(`cannot read ${logPath}: permission denied; run as root (sudo corral logs ...)`);
      throw e;
    }
    return new LogFile(logPath, handle, (await handle.stat()).ino);
  }

  /** Reads up to the end as it is now (or until `done`); calls `onLine` for each complete line with its offset. */
  private async readToEnd(onLine: (line: Buffer, offset: number) => Promise<void> | void, done: () => boolean = () => false): Promise<number> {
    const buf = Buffer.allocUnsafe(CHUNK);
    let total = 0;
    while (!done()) {
      const { bytesRead } = await this.handle.read(buf, 0, CHUNK, this.position);
      if (bytesRead === 0) return total;
      this.position += bytesRead;
      total += bytesRead;
      for (const { line, offset } of this.splitter.push(buf.subarray(0, bytesRead))) await onLine(line, offset);
    }
    return total;
  }

  /** Positions the reader at the start of the last `lines` lines (two passes: find, then print from there). */
  async seekTail(lines: number, printer: LogPrinter): Promise<void> {
    const finder = new TailFinder(lines);
    await this.readToEnd((line, offset) => {
      const rec = parseCriRecord(line);
      finder.add(offset, rec ?? { stream: 'stdout', partial: false });
    });
    const start = finder.result();
    // Nothing to print: go on after the last complete line.
    const from = start ? start.offset : this.splitter.consumed;
    this.splitter = new LineSplitter();
    this.splitter.consumed = this.position = from;
    if (!start) return;
    for (const s of ['stdout', 'stderr'] as const) if (start.midLine[s]) printer.skipLineInProgress(s);
  }

  /** Prints what the file holds now (until --limit-bytes is used up); the number of bytes read. */
  printAvailable(printer: LogPrinter): Promise<number> {
    return this.readToEnd(async (line) => {
      const rec = parseCriRecord(line);
      if (rec) return printer.print(rec);
      // Not a CRI record: shown as it is (once warned), rather than lost.
      if (this.badLines++ === 0) process.stderr.write(`corral logs: ${this.path} has lines not in the CRI log format; they are shown as they are\n`);
      return printer.print({ time: '', stream: 'stdout', partial: false, text: line });
    }, () => printer.full);
  }

  /**
   * After the end of the file: 'rotated' when another file took its path (the rest of this
   * one is read first by the caller), 'truncated' when it shrank, else 'same'.
   */
  async changed(): Promise<'rotated' | 'truncated' | 'same'> {
    const now = await fs.stat(this.path).catch(() => undefined);
    if (now && now.ino !== this.ino) return 'rotated';
    if ((await this.handle.stat()).size < this.position) return 'truncated';
    return 'same';
  }

  /** The file now at the path, from its start. */
  async reopen(): Promise<void> {
    const handle = await fs.open(this.path, 'r');
    await this.handle.close();
    this.handle = handle;
    this.ino = (await handle.stat()).ino;
    this.restart();
  }

  restart(): void {
    this.position = 0;
    this.splitter = new LineSplitter();
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}

/**
 * -f: new lines as they come, until the container stops running (then whatever it wrote
 * last), as kubelet's follow does. Ctrl-C ends it.
 */
async function follow(rpc: Rpc, id: string, state: string, reader: LogFile, printer: LogPrinter): Promise<void> {
  let running = state === 'CONTAINER_RUNNING' || state === 'CONTAINER_CREATED';
  let nextCheck = Date.now() + STATE_CHECK_MS;
  let interrupted = false;
  const onSignal = () => (interrupted = true);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    while (!interrupted && !printer.full) {
      if ((await reader.printAvailable(printer)) > 0) continue;
      const change = await reader.changed();
      if (change === 'rotated') {
        // Lines written to the old file before conmon reopened: read them, then the new file.
        await reader.printAvailable(printer);
        // Gone again before it could be opened: the next round sees what is there then.
        await reader.reopen().catch((e: NodeJS.ErrnoException) => {
          if (e.code !== 'ENOENT') throw e;
        });
        continue;
      }
      if (change === 'truncated') {
        reader.restart();
        continue;
      }
      if (!running) return;
      if (Date.now() >= nextCheck) {
        nextCheck = Date.now() + STATE_CHECK_MS;
        const now = await rpc('ContainerStatus', { containerId: id }).then(
          (r) => r.status.state as string,
          () => 'CONTAINER_UNKNOWN', // removed meanwhile
        );
        // One more pass over the file (and a rotation) before ending.
        running = now === 'CONTAINER_RUNNING' || now === 'CONTAINER_CREATED';
        if (!running) continue;
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
