/**
 * `corral exec`, `corral attach` and `corral port-forward`: the CRI Exec, Attach and
 * PortForward calls answer a one-time URL on the daemon's streaming server; these commands
 * speak WebSocket to it (exec/attach: `v5.channel.k8s.io`, whose stream-close message
 * carries stdin's EOF; port-forward: `v4.channel.k8s.io`, one WebSocket per connection).
 * Every message is a channel byte, then the payload. ws and grpc-js are loaded here only.
 */
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { parseArgs } from 'node:util';
import type { WebSocket } from 'ws';
import { DEFAULT_ENDPOINT, parseOptions } from './commands.js';
import { explainCallError } from './hints.js';
import { parseDuration } from './client-commands.js';
import type { RuntimeRpcName } from '../cri/proto.js';

const CALL_DEADLINE_MS = 120_000;
/** Unsent bytes ws may hold before the local source is paused. */
const MAX_BUFFERED = 1024 * 1024;
const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const ERROR = 3;
const RESIZE = 4;
const STREAM_CLOSE = 0xff;

type Rpc = (method: RuntimeRpcName, req: object) => Promise<any>;

async function connectDaemon(values: Record<string, unknown>): Promise<{ rpc: Rpc; close(): void }> {
  const endpoint = (values['runtime-endpoint'] as string | undefined) ?? process.env.CONTAINER_RUNTIME_ENDPOINT ?? DEFAULT_ENDPOINT;
  const { createRuntimeClient, call } = await import('../cri/client.js');
  const client = createRuntimeClient(endpoint);
  const rpc: Rpc = (method, req) =>
    call(client, method, req, { deadlineMs: CALL_DEADLINE_MS }).catch((e: unknown) => {
      throw explainCallError(e, endpoint);
    });
  return { rpc, close: () => client.close() };
}

type WebSocketClass = typeof import('ws').WebSocket;

/**
 * Starts the WebSocket to a one-time streaming URL, with exactly one subprotocol. Synchronous,
 * so the caller attaches its 'message' and 'close' handlers before any event can fire (ws
 * emits the frames that came with the upgrade right after 'open'). The URL came from the
 * daemon's root-only socket and carries a secret single-use token, so, like crictl, a
 * self-signed certificate of the streaming server is accepted.
 */
function dial(WebSocket: WebSocketClass, url: string, protocol: string): { ws: WebSocket; opened: Promise<void> } {
  const ws = new WebSocket(url.replace(/^http/, 'ws'), [protocol], { perMessageDeflate: false, handshakeTimeout: 30_000, rejectUnauthorized: false });
  ws.on('error', () => undefined); // before 'open' the promise reports it; after, 'close' follows
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => {
      if (ws.protocol === protocol) return resolve();
      ws.terminate();
      reject(new Error(`the streaming server does not speak ${protocol} (it chose "${ws.protocol}")`));
    });
    ws.once('error', (e) => reject(new Error(`cannot reach the streaming server at ${url}: ${e.message}`)));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body = (body + c).slice(0, 1000)));
      res.on('end', () => reject(new Error(`the streaming server refused the session: ${res.statusCode} ${body.trim()}`)));
      res.on('error', () => reject(new Error(`the streaming server refused the session: ${res.statusCode}`)));
    });
  });
  return { ws, opened };
}

function frame(channel: number, payload: Buffer | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  return Buffer.concat([Buffer.from([channel]), body]);
}

function toBuffer(data: unknown): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data as Buffer[]);
  return Buffer.from(data as ArrayBuffer);
}

/** Sends a message, pausing `source` while ws holds too much unsent. */
function sendPaced(ws: WebSocket, msg: Buffer, source: { pause(): unknown; resume(): unknown }): void {
  if (ws.readyState !== ws.OPEN) return;
  ws.send(msg, { binary: true }, () => {
    if (ws.bufferedAmount < MAX_BUFFERED) source.resume();
  });
  if (ws.bufferedAmount >= MAX_BUFFERED) source.pause();
}

/** The outcome of a session from its error channel (a metav1.Status, v4+): exit code and what to print. */
export function outcomeOf(statusText: string): { code: number; message?: string } {
  if (statusText === '') return { code: 1, message: 'the session ended without an exit status (the connection to the streaming server was lost)' };
  let status: any;
  try {
    status = JSON.parse(statusText);
  } catch {
    return { code: 1, message: statusText.trim() };
  }
  if (status?.status === 'Success') return { code: 0 };
  if (status?.reason === 'NonZeroExitCode') {
    const cause = (status.details?.causes ?? []).find((c: any) => c?.reason === 'ExitCode');
    const code = Number(cause?.message);
    if (Number.isInteger(code) && code >= 0 && code <= 255) return { code };
  }
  return { code: 1, message: String(status?.message ?? statusText) };
}

/** `corral exec` and `corral attach`. */
export async function remoteCommand(command: 'exec' | 'attach', argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: parseOptions(command), allowPositionals: true });
  const [containerId, ...cmd] = positionals;
  if (!containerId) throw new Error(`${command} needs a container ID`);
  if (command === 'exec' && cmd.length === 0) throw new Error('exec needs a command to run: corral exec CONTAINER CMD [ARG...]');
  if (command === 'attach' && cmd.length > 0) throw new Error(`attach takes one container ID, not "${cmd.join(' ')}"`);
  const timeoutMs = values.timeout ? parseDuration(values.timeout as string) : undefined;
  const stdin = values.interactive === true;
  const tty = values.tty === true;
  const streams = { stdin, tty, stdout: true, stderr: !tty };
  const daemon = await connectDaemon(values);
  let url: string;
  try {
    ({ url } = command === 'exec' ? await daemon.rpc('Exec', { containerId, cmd, ...streams }) : await daemon.rpc('Attach', { containerId, ...streams }));
  } finally {
    daemon.close();
  }
  const { ws, opened } = dial((await import('ws')).WebSocket, url, 'v5.channel.k8s.io');
  const session = runSession(ws, { stdin, tty, timeoutMs });
  await opened.catch((e: Error) => {
    ws.terminate();
    throw e;
  });
  const outcome = await session;
  if (outcome.message) process.stderr.write(`corral ${command}: ${outcome.message}\n`);
  exitSoon(outcome.code);
  return outcome.code;
}

/** The local side of one exec/attach session: stdio to and from the channels, until the server closes. */
function runSession(ws: WebSocket, opts: { stdin: boolean; tty: boolean; timeoutMs: number | undefined }): Promise<{ code: number; message?: string }> {
  const input = process.stdin;
  const raw = opts.tty && input.isTTY === true;
  const cleanups: (() => void)[] = [];
  let rawSet = false;
  const restoreTerminal = () => {
    if (rawSet) input.setRawMode(false);
    rawSet = false;
  };
  return new Promise((resolve) => {
    let status = '';
    let timedOut = false;
    let started = false;
    const start = () => {
      started = true;
      // ^C is then a byte for the remote side. Node itself resets the terminal when it
      // exits, SIGTERM and SIGINT included.
      if (raw) {
        input.setRawMode(true);
        rawSet = true;
        // libuv's raw mode keeps output post-processing (ONLCR), so the remote terminal's
        // \r\n would reach the screen as \r\r\n; crictl's raw mode turns it off too.
        // setRawMode(false) and Node's exit restore the terminal's saved modes.
        spawnSync('stty', ['-opost'], { stdio: ['inherit', 'ignore', 'ignore'] });
      }
      if (opts.tty) {
        const sendSize = () => {
          const { columns, rows } = process.stdout;
          if (columns && rows && ws.readyState === ws.OPEN) ws.send(frame(RESIZE, JSON.stringify({ Width: columns, Height: rows })));
        };
        sendSize();
        process.stdout.on('resize', sendSize);
        cleanups.push(() => process.stdout.off('resize', sendSize));
      }
      if (opts.stdin) {
        const onData = (chunk: Buffer) => sendPaced(ws, frame(STDIN, chunk), input);
        // v5's stream-close: the command sees its stdin end.
        const onEnd = () => ws.readyState === ws.OPEN && ws.send(Buffer.from([STREAM_CLOSE, STDIN]));
        input.on('data', onData);
        input.once('end', onEnd);
        cleanups.push(() => {
          input.off('data', onData);
          input.off('end', onEnd);
          input.pause();
          input.destroy();
        });
      }
    };
    ws.on('message', (data) => {
      const msg = toBuffer(data);
      // The server's first (empty) message says its streams are ready.
      if (!started) start();
      if (msg.length <= 1) return;
      const payload = msg.subarray(1);
      switch (msg[0]) {
        case STDOUT:
          if (!process.stdout.write(payload)) {
            ws.pause();
            process.stdout.once('drain', () => ws.resume());
          }
          break;
        case STDERR:
          process.stderr.write(payload);
          break;
        case ERROR:
          if (status.length < 64 * 1024) status += payload.toString('utf8');
          break;
      }
    });
    const timer = opts.timeoutMs !== undefined ? setTimeout(() => ((timedOut = true), ws.terminate()), opts.timeoutMs) : undefined;
    const finish = () => {
      clearTimeout(timer);
      restoreTerminal();
      for (const c of cleanups) c();
      if (timedOut) resolve({ code: 1, message: `timed out after ${opts.timeoutMs! / 1000}s; the session was ended` });
      else resolve(outcomeOf(status));
    };
    ws.once('close', finish);
    ws.on('error', () => undefined); // 'close' follows
  });
}

/**
 * Exit once stdout has been handed on, even if a handle (a terminal's stdin) would keep
 * Node alive: the session is over.
 */
function exitSoon(code: number): void {
  process.exitCode = code;
  setTimeout(() => process.exit(code), 500).unref();
}

interface PortMapping {
  local: number;
  remote: number;
}

/** "LOCAL:REMOTE", ":REMOTE" or "0:REMOTE" (any free local port), or "REMOTE" (the same port locally). */
export function parsePortMapping(spec: string): PortMapping {
  const m = /^(?:(\d*):)?(\d+)$/.exec(spec);
  const remote = Number(m?.[2]);
  const local = m?.[1] === undefined ? remote : m[1] === '' ? 0 : Number(m[1]);
  if (!m || !(remote >= 1 && remote <= 65535) || !(local >= 0 && local <= 65535)) {
    throw new Error(`bad port mapping "${spec}": use LOCAL:REMOTE or REMOTE, ports 1-65535 (LOCAL 0 or empty = any free port)`);
  }
  return { local, remote };
}

/** `corral port-forward POD [LOCAL:]REMOTE...`: until SIGINT/SIGTERM. */
export async function portForwardCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: parseOptions('port-forward'), allowPositionals: true });
  const [podSandboxId, ...specs] = positionals;
  if (!podSandboxId || specs.length === 0) throw new Error('port-forward needs a pod sandbox ID and at least one port: corral port-forward POD LOCAL:REMOTE...');
  const mappings = specs.map(parsePortMapping);
  const daemon = await connectDaemon(values);
  const { WebSocket } = await import('ws');
  const servers: net.Server[] = [];
  const connections = new Set<net.Socket>();
  try {
    // Checks the pod and the ports now rather than at the first connection (the URL goes unused).
    await daemon.rpc('PortForward', { podSandboxId, port: mappings.map((m) => m.remote) });
    for (const { local, remote } of mappings) {
      const server = net.createServer((conn) => {
        connections.add(conn);
        conn.once('close', () => connections.delete(conn));
        forwardConnection(conn, podSandboxId, remote, daemon.rpc, WebSocket);
      });
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', (e) => reject(new Error(`cannot listen on 127.0.0.1:${local}: ${e.message}`)));
        server.listen(local, '127.0.0.1', () => resolve());
      });
      process.stdout.write(`Forwarding from 127.0.0.1:${(server.address() as net.AddressInfo).port} -> ${remote}\n`);
    }
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    exitSoon(0); // forwarded connections still closing must not hold the exit
    return 0;
  } finally {
    for (const s of servers) s.close();
    for (const c of connections) c.destroy();
    daemon.close();
  }
}

/** One local connection through its own PortForward URL and WebSocket (v4: data channel 0, error channel 1). */
function forwardConnection(conn: net.Socket, podSandboxId: string, port: number, rpc: Rpc, WebSocket: WebSocketClass): void {
  conn.pause();
  conn.on('error', () => undefined);
  const fail = (message: string) => {
    process.stderr.write(`corral port-forward: connection to port ${port}: ${message}\n`);
    conn.destroy();
  };
  rpc('PortForward', { podSandboxId, port: [port] }).then(
    async ({ url }: { url: string }) => {
      if (conn.destroyed) return;
      const { ws, opened } = dial(WebSocket, url, 'v4.channel.k8s.io');
      // Each channel starts with the port number (2 bytes, little-endian): not data.
      const prefixLeft = [2, 2];
      let errorText = '';
      let open = false;
      ws.once('open', () => (open = true)); // after dial's own listener, before any 'close'
      ws.on('message', (data) => {
        const msg = toBuffer(data);
        const ch = msg[0];
        if (ch !== 0 && ch !== 1) return;
        const skip = Math.min(prefixLeft[ch]!, msg.length - 1);
        prefixLeft[ch]! -= skip;
        const payload = msg.subarray(1 + skip);
        if (payload.length === 0) return;
        if (ch === 1) {
          if (errorText.length < 64 * 1024) errorText += payload.toString('utf8');
        } else if (!conn.write(payload)) {
          ws.pause();
          conn.once('drain', () => ws.resume());
        }
      });
      ws.once('close', () => {
        if (!open) return; // the failure to open is reported below
        if (errorText) fail(errorText.trim());
        else conn.end();
      });
      await opened;
      if (ws.readyState !== ws.OPEN) return; // it ended at once: 'close' has dealt with conn
      conn.on('data', (chunk: Buffer) => sendPaced(ws, frame(0, chunk), conn));
      // v4 has no half-close: the local end ends the forwarded connection (after what was sent).
      conn.once('end', () => ws.close(1000));
      conn.once('close', () => ws.readyState === ws.OPEN && ws.close(1000));
      conn.resume();
    },
  ).catch((e: Error) => fail(e.message));
}
