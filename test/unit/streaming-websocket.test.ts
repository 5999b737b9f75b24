/**
 * The WebSocket streaming protocols with the `ws` client against a test-double runtime:
 * v4 binary and base64 framing, the ready message, the status on channel 3, v5's stdin
 * close, port-forward channel pairs, refused subprotocols and tokens.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { WebSocket } from 'ws';
import { StreamingServer } from '../../src/streaming/server.js';
import type { StreamingRuntime } from '../../src/streaming/runtime.js';
import { silentLogger } from '../../src/util/log.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function startServer(over: Partial<StreamingRuntime>): Promise<StreamingServer> {
  const runtime: StreamingRuntime = { exec: async () => 0, attach: async () => undefined, portForward: async () => undefined, ...over };
  const s = await StreamingServer.start({ address: '127.0.0.1', port: 0, tlsCertFile: '', tlsKeyFile: '', idleTimeoutMs: 0, runtime, logger: silentLogger() });
  cleanups.push(() => s.shutdown());
  return s;
}

const execReq = (o: object = {}) => ({ kind: 'exec' as const, containerId: 'c1', cmd: ['x'], tty: false, stdin: false, stdout: true, stderr: true, ...o });

interface Session {
  ws: WebSocket;
  messages: Array<{ ch: number; data: Buffer }>;
  closed: Promise<number>;
}

function open(url: string, protocols: string[]): Promise<Session> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace(/^http/, 'ws'), protocols);
    const messages: Session['messages'] = [];
    const base64 = protocols[0]?.includes('base64');
    ws.on('message', (raw: Buffer, isBinary) => {
      if (base64) {
        assert.equal(isBinary, false);
        messages.push({ ch: raw[0]! - 0x30, data: Buffer.from(raw.subarray(1).toString(), 'base64') });
      } else messages.push({ ch: raw[0]!, data: raw.subarray(1) });
    });
    const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
    ws.on('open', () => resolve({ ws, messages, closed }));
    ws.on('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.on('error', reject);
    cleanups.push(() => ws.terminate());
  });
}

const on = (s: Session, ch: number) => Buffer.concat(s.messages.filter((m) => m.ch === ch).map((m) => m.data));

test('WebSocket v4 (binary): ready message, 10 MiB of stdout intact, stderr, exit code on channel 3, then close', async () => {
  const big = Buffer.alloc(10 * 1024 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = i % 251;
  const server = await startServer({
    async exec(_id, _cmd, io) {
      for (let o = 0; o < big.length; o += 64 * 1024) if (!io.stdout!.write(big.subarray(o, o + 64 * 1024))) await once(io.stdout!, 'drain');
      io.stderr!.write('oops');
      return 7;
    },
  });
  const s = await open(server.urlFor(execReq()), ['v4.channel.k8s.io']);
  assert.equal(s.ws.protocol, 'v4.channel.k8s.io');
  assert.equal(await s.closed, 1000);
  assert.deepEqual(s.messages[0], { ch: 1, data: Buffer.alloc(0) }, 'the ready message');
  assert.equal(createHash('sha256').update(on(s, 1)).digest('hex'), createHash('sha256').update(big).digest('hex'));
  assert.equal(on(s, 2).toString(), 'oops');
  const status = JSON.parse(on(s, 3).toString());
  assert.equal(status.reason, 'NonZeroExitCode');
  assert.equal(status.details.causes[0].message, '7');
});

test('WebSocket v4.base64: text frames, and stdin reaches the runtime', async () => {
  const server = await startServer({
    async exec(_id, _cmd, io) {
      const got = await new Promise<string>((resolve) => io.stdin!.once('data', (c: Buffer) => resolve(c.toString())));
      io.stdout!.write(got.toUpperCase());
      return 0;
    },
  });
  const s = await open(server.urlFor(execReq({ stdin: true })), ['v4.base64.channel.k8s.io']);
  s.ws.send('0' + Buffer.from('ping').toString('base64'));
  assert.equal(await s.closed, 1000);
  assert.equal(on(s, 1).toString(), 'PING');
  assert.equal(on(s, 3).toString(), '{"metadata":{},"status":"Success"}');
});

test('WebSocket v5: the client’s stream-close (FF 00) is stdin EOF', async () => {
  const server = await startServer({
    async exec(_id, _cmd, io) {
      const chunks: Buffer[] = [];
      for await (const c of io.stdin!) chunks.push(c as Buffer);
      io.stdout!.write(`${Buffer.concat(chunks).length} bytes then EOF`);
      return 0;
    },
  });
  const s = await open(server.urlFor(execReq({ stdin: true })), ['v5.channel.k8s.io', 'v4.channel.k8s.io']);
  assert.equal(s.ws.protocol, 'v5.channel.k8s.io');
  s.ws.send(Buffer.concat([Buffer.from([0]), Buffer.alloc(100_000, 1)]));
  s.ws.send(Buffer.from([0xff, 0]));
  const t0 = Date.now();
  assert.equal(await s.closed, 1000);
  // A channel left "blocked" after its EOF kept the socket paused: the close waited out ws's 30 s.
  assert.ok(Date.now() - t0 < 5000, `closed after ${Date.now() - t0} ms`);
  assert.equal(on(s, 1).toString(), '100000 bytes then EOF');
});

test('WebSocket: an unserved subprotocol and a used token are refused before the upgrade', async () => {
  const server = await startServer({});
  await assert.rejects(open(server.urlFor(execReq()), ['v9.channel.k8s.io']), /HTTP 403/);
  const url = server.urlFor(execReq());
  const s = await open(url, ['v4.channel.k8s.io']);
  await s.closed;
  await assert.rejects(open(url, ['v4.channel.k8s.io']), /HTTP 404/);
});

test('WebSocket port-forward: the port first on both channels, bytes both ways, a failure as text on the error channel', async () => {
  const echo = net.createServer((c) => c.on('data', (d) => c.end(Buffer.from(d.toString().toUpperCase()))));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => echo.close(() => r())));
  const port = (echo.address() as net.AddressInfo).port;
  const server = await startServer({
    async portForward(_pod, p, stream) {
      if (p !== port) throw new Error('connection refused');
      const sock = net.connect(p, '127.0.0.1');
      stream.pipe(sock);
      sock.pipe(stream, { end: false });
      await once(sock, 'close');
    },
  });
  const s = await open(server.urlFor({ kind: 'portforward', podSandboxId: 'p1', ports: [port, 1] }), ['v4.channel.k8s.io']);
  const le = Buffer.alloc(2);
  le.writeUInt16LE(port);
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(s.messages.filter((m) => m.ch <= 1).slice(0, 2).map((m) => m.data), [le, le]);
  s.ws.send(Buffer.concat([Buffer.from([0]), Buffer.from('hello')]));
  assert.equal(await s.closed, 1000);
  assert.equal(on(s, 0).subarray(2).toString(), 'HELLO');
  assert.equal(on(s, 1).subarray(2).toString(), '');
  assert.match(on(s, 3).subarray(2).toString(), /^error forwarding port 1 to pod p1, uid : connection refused/);
});
