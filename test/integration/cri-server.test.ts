import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { CriServer, type Handler } from '../../src/cri/server.js';
import { call, createImageClient, createRuntimeClient } from '../../src/cri/client.js';
import { decodeMessage, encodeMessage, runtimeServiceDefinition } from '../../src/cri/proto.js';
import { notFound } from '../../src/errors.js';
import { eventually, waitFor } from '../helpers/wait.js';

const dirs: string[] = [];
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempSocket(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-cri-'));
  dirs.push(dir);
  return path.join(dir, 'run', 'corral.sock');
}

function captureLogger() {
  const lines: any[] = [];
  const sink = new Writable({
    write(chunk, _e, cb) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), lines };
}

const versionHandler: Handler = async (req) => ({
  version: '0.1.0',
  runtimeName: 'corral',
  runtimeVersion: 'v-test',
  runtimeApiVersion: req.version ? `v1 (asked ${req.version})` : 'v1',
});

async function startServer(extra: Partial<Record<string, Handler>> = {}, images: Partial<Record<string, Handler>> = {}) {
  const socketPath = tempSocket();
  const { logger, lines } = captureLogger();
  const server = await CriServer.start({
    socketPath,
    logger,
    runtimeHandlers: { Version: versionHandler, ...extra } as any,
    imageHandlers: images as any,
  });
  cleanups.push(() => server.shutdown(0));
  return { server, socketPath, lines };
}

function grpcFrame(message: Buffer): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(message.length, 1);
  return Buffer.concat([prefix, message]);
}

function connectRaw(socketPath: string): http2.ClientHttp2Session {
  const session = http2.connect('http://localhost', { createConnection: () => net.connect(socketPath) });
  session.on('error', () => undefined);
  cleanups.push(() => void session.destroy());
  return session;
}

interface RawResult {
  status?: number;
  grpcStatus?: string;
  grpcMessage?: string;
  body: Buffer;
  rstCode: number;
  error?: string;
}

/** One gRPC call over a raw HTTP/2 session, with the :authority (and extra headers) we choose. */
function rawCall(session: http2.ClientHttp2Session, authority: string, method: string, message: Buffer, extra: Record<string, string> = {}): Promise<RawResult> {
  return new Promise((resolve) => {
    const req = session.request({
      ':method': 'POST',
      ':scheme': 'http',
      ':path': method,
      ':authority': authority,
      'content-type': 'application/grpc',
      te: 'trailers',
      'user-agent': 'grpc-go/1.51.0',
      ...extra,
    });
    const result: RawResult = { body: Buffer.alloc(0), rstCode: 0 };
    const chunks: Buffer[] = [];
    req.on('response', (h) => {
      result.status = Number(h[':status']);
      if (h['grpc-status'] !== undefined) result.grpcStatus = String(h['grpc-status']); // trailers-only
      if (h['grpc-message'] !== undefined) result.grpcMessage = decodeURIComponent(String(h['grpc-message']));
    });
    req.on('trailers', (t) => {
      result.grpcStatus = String(t['grpc-status']);
      if (t['grpc-message'] !== undefined) result.grpcMessage = decodeURIComponent(String(t['grpc-message']));
    });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', (e) => (result.error = (e as Error).message));
    req.on('close', () => {
      result.rstCode = req.rstCode ?? 0;
      result.body = Buffer.concat(chunks);
      resolve(result);
    });
    req.end(grpcFrame(message));
  });
}

function unframe(body: Buffer): Buffer {
  assert.ok(body.length >= 5, 'response has a gRPC message');
  const len = body.readUInt32BE(1);
  return body.subarray(5, 5 + len);
}

test('reproduction: a plain grpc-js unix listener resets streams whose :authority is the socket path', async () => {
  const socketPath = tempSocket();
  const dir = path.dirname(socketPath);
  rmSync(dir, { recursive: true, force: true });
  await import('node:fs/promises').then((f) => f.mkdir(dir, { recursive: true }));
  const plain = new grpc.Server();
  plain.addService(runtimeServiceDefinition, {
    Version: (_c: any, cb: any) => cb(null, { version: '0.1.0', runtimeName: 'plain' }),
  } as any);
  await new Promise<void>((res, rej) => plain.bindAsync('unix://' + socketPath, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())));
  try {
    const session = connectRaw(socketPath);
    const req = encodeMessage('VersionRequest', { version: 'v1' });
    const good = await rawCall(session, 'localhost', '/runtime.v1.RuntimeService/Version', req);
    assert.equal(good.grpcStatus, '0');
    const bad = await rawCall(session, socketPath, '/runtime.v1.RuntimeService/Version', req);
    assert.equal(bad.grpcStatus, undefined);
    assert.equal(bad.rstCode, http2.constants.NGHTTP2_PROTOCOL_ERROR);
    session.destroy();
  } finally {
    plain.forceShutdown();
  }
});

test('a grpc-js client (authority "localhost") gets the Version answer; socket is 0660', async () => {
  const { socketPath, lines, server } = await startServer();
  assert.equal(statSync(socketPath).mode & 0o777, 0o660);
  assert.ok(statSync(socketPath).isSocket());
  for (const endpoint of ['unix://' + socketPath, socketPath]) {
    const client = createRuntimeClient(endpoint, { timeoutMs: 5000 });
    try {
      const res = await call(client, 'Version', { version: 'v1' });
      assert.deepEqual(res, { version: '0.1.0', runtimeName: 'corral', runtimeVersion: 'v-test', runtimeApiVersion: 'v1 (asked v1)' });
    } finally {
      client.close();
    }
  }
  const logged = lines.find((l) => l.method === 'Version');
  assert.ok(logged, 'the call is logged');
  assert.equal(logged.code, 'OK');
  assert.equal(typeof logged.ms, 'number');
  assert.equal(server.inFlight(), 0);
});

test('the server keeps no channelz records (no per-call or per-connection bookkeeping nobody reads)', async () => {
  const { getChannelzHandlers } = (await import('@grpc/grpc-js/build/src/channelz.js')) as any;
  const servers = () =>
    new Promise<number[]>((resolve, reject) =>
      getChannelzHandlers().GetServers({ request: { start_server_id: 0, max_results: 1000 } }, (err: Error | null, res: any) =>
        err ? reject(err) : resolve(res.server.map((s: any) => Number(s.ref.server_id))),
      ),
    );
  const before = await servers();
  const { socketPath } = await startServer();
  const client = createRuntimeClient(socketPath, { timeoutMs: 5000 });
  try {
    await call(client, 'Version', {});
  } finally {
    client.close();
  }
  assert.deepEqual(await servers(), before, 'no channelz server registered for Corral');
});

test('the socket never exists with a mode other than 0660, not even for an instant after bind', async () => {
  const socketPath = tempSocket();
  await import('node:fs/promises').then((f) => f.mkdir(path.dirname(socketPath), { recursive: true }));
  // Another process stats the path in a tight loop and reports every mode it saw.
  const poller = spawn(process.execPath, ['-e', `
    const fs = require('node:fs');
    const seen = {};
    let stop = false;
    process.stdin.on('data', () => { stop = true; });
    process.stdout.write('ready\\n');
    const spin = () => {
      const until = Date.now() + 20;
      while (Date.now() < until) {
        try { const m = (fs.lstatSync(process.argv[1]).mode & 0o7777).toString(8); seen[m] = (seen[m] || 0) + 1; } catch {}
      }
      if (stop) process.stdout.write(JSON.stringify(seen) + '\\n', () => process.exit(0));
      else setImmediate(spin);
    };
    spin();
  `, socketPath], { stdio: ['pipe', 'pipe', 'inherit'] });
  cleanups.push(() => void poller.kill('SIGKILL'));
  let output = '';
  poller.stdout!.on('data', (d) => (output += d));
  await waitFor(() => output.includes('ready'), { intervalMs: 5, what: 'the poller to start' });
  for (let i = 0; i < 25; i++) {
    const server = await CriServer.start({ socketPath, logger: pino({ level: 'silent' }), runtimeHandlers: { Version: versionHandler }, imageHandlers: {} });
    assert.equal(statSync(socketPath).mode & 0o7777, 0o660);
    await new Promise((r) => setTimeout(r, 5));
    await server.shutdown(0);
  }
  const exited = new Promise((r) => poller.once('exit', r));
  poller.stdin!.write('stop\n');
  await exited;
  const seen: Record<string, number> = JSON.parse(output.split('\n').filter(Boolean).pop()!);
  assert.ok((seen['660'] ?? 0) > 0, `the poller saw the socket: ${output}`);
  assert.deepEqual(Object.keys(seen), ['660'], `modes seen: ${JSON.stringify(seen)}`);
  // The private bind directories are gone.
  assert.deepEqual(readdirSync(path.dirname(socketPath)).filter((n) => n.startsWith('.corral-bind-')), []);
});

test('a client sending the socket path as :authority gets a valid answer', async () => {
  const { socketPath } = await startServer();
  const session = connectRaw(socketPath);
  const res = await rawCall(session, socketPath, '/runtime.v1.RuntimeService/Version', encodeMessage('VersionRequest', { version: 'v1' }));
  assert.equal(res.error, undefined);
  assert.equal(res.status, 200);
  assert.equal(res.grpcStatus, '0');
  const decoded = decodeMessage('VersionResponse', unframe(res.body));
  assert.equal(decoded.runtimeName, 'corral');
  assert.equal(decoded.runtimeApiVersion, 'v1 (asked v1)');
  session.destroy();
});

test('unserved RPCs answer UNIMPLEMENTED (unary and server-streaming, both services)', async () => {
  const { socketPath, lines } = await startServer();
  const rt = createRuntimeClient(socketPath);
  const img = createImageClient(socketPath);
  try {
    await assert.rejects(call(rt, 'ListMetricDescriptors', {}), (e: any) => {
      assert.equal(e.code, grpc.status.UNIMPLEMENTED);
      assert.match(e.details, /corral does not serve ListMetricDescriptors yet/);
      return true;
    });
    await assert.rejects(call(img, 'ListImages', {}), (e: any) => e.code === grpc.status.UNIMPLEMENTED && /ListImages/.test(e.details));
    // server-streaming
    const stream = (rt as any).GetContainerEvents({});
    const err: any = await new Promise((resolve) => {
      stream.on('error', resolve);
      stream.on('data', () => undefined);
    });
    assert.equal(err.code, grpc.status.UNIMPLEMENTED);
    assert.match(err.details, /GetContainerEvents/);
  } finally {
    rt.close();
    img.close();
  }
  // over a path-authority connection as well
  const session = connectRaw(socketPath);
  const res = await rawCall(session, socketPath, '/runtime.v1.RuntimeService/Status', encodeMessage('StatusRequest', {}));
  assert.equal(res.grpcStatus, String(grpc.status.UNIMPLEMENTED));
  assert.match(res.grpcMessage ?? '', /corral does not serve Status yet/);
  session.destroy();
  assert.ok(lines.some((l) => l.method === 'ListMetricDescriptors' && l.code === 'UNIMPLEMENTED'));
});

test('a CriError from a handler keeps its code and message; other errors become UNKNOWN', async () => {
  const { socketPath, lines } = await startServer({
    PodSandboxStatus: async (req) => {
      throw notFound(`pod sandbox ${req.podSandboxId} not found`);
    },
    ContainerStatus: async () => {
      throw new Error('disk on fire');
    },
  });
  const client = createRuntimeClient(socketPath);
  try {
    await assert.rejects(call(client, 'PodSandboxStatus', { podSandboxId: 'abc123' }), (e: any) => {
      assert.equal(e.code, grpc.status.NOT_FOUND);
      assert.equal(e.details, 'pod sandbox abc123 not found');
      return true;
    });
    await assert.rejects(call(client, 'ContainerStatus', { containerId: 'c1' }), (e: any) => {
      assert.equal(e.code, grpc.status.UNKNOWN);
      assert.equal(e.details, 'disk on fire');
      return true;
    });
  } finally {
    client.close();
  }
  const line = lines.find((l) => l.method === 'PodSandboxStatus');
  assert.equal(line.code, 'NOT_FOUND');
  assert.equal(line.podSandboxId, 'abc123');
});

test('a failure while answering a failed call still answers it (INTERNAL) and leaves no unhandled rejection', async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (r: unknown) => unhandled.push(r);
  process.on('unhandledRejection', onUnhandled);
  try {
    const { socketPath, lines } = await startServer({
      Status: async () => {
        // An error that cannot even be described: reading its message throws.
        const err = new Error('hidden');
        Object.defineProperty(err, 'message', { get() { throw new Error('message getter exploded'); } });
        throw err;
      },
    });
    const client = createRuntimeClient(socketPath);
    try {
      await assert.rejects(call(client, 'Status', {}, { deadlineMs: 3000 }), (e: any) => {
        assert.equal(e.code, grpc.status.INTERNAL);
        assert.match(e.details, /internal error answering Status/);
        return true;
      });
      assert.equal((await call(client, 'Version', {})).runtimeName, 'corral', 'the server keeps serving');
    } finally {
      client.close();
    }
    const logged = await eventually(() => {
      const l = lines.find((l) => l.method === 'Status' && /failure while answering/.test(l.msg));
      assert.ok(l, 'the failure is logged');
      return l;
    }, { what: 'the failure to be logged' });
    assert.deepEqual(unhandled, []);
    assert.match(logged.stack, /message getter exploded/);
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
});

test('a request with too many elements is refused RESOURCE_EXHAUSTED before it is decoded', async () => {
  let handled = 0;
  const { socketPath, lines } = await startServer({
    CreateContainer: async (req) => {
      handled++;
      return { containerId: `c-${req.config.envs.length}` };
    },
  });
  const client = createRuntimeClient(socketPath, { timeoutMs: 20_000 });
  try {
    // 2 MB on the wire, but a million empty mounts: ~170 MB of objects once decoded.
    const mounts = Array.from({ length: 1_000_000 }, () => ({}));
    await assert.rejects(call(client, 'CreateContainer', { podSandboxId: 'p', config: { mounts } }), (e: any) => {
      assert.equal(e.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.match(e.details, /CreateContainer request has more than 100000 fields/);
      return true;
    });
    assert.equal(handled, 0, 'the handler never saw it');
    // An ordinary large request (a thousand env vars) is served.
    const envs = Array.from({ length: 1000 }, (_, i) => ({ key: `K${i}`, value: 'v'.repeat(50) }));
    assert.deepEqual(await call(client, 'CreateContainer', { podSandboxId: 'p', config: { envs } }), { containerId: 'c-1000' });
  } finally {
    client.close();
  }
  assert.ok(lines.some((l) => l.method === 'CreateContainer' && l.code === 'RESOURCE_EXHAUSTED'));
});

test('many sequential and concurrent calls over one path-authority connection, with varying headers', async () => {
  const { socketPath } = await startServer();
  // Each answer echoes its request's version field, so a mixed-up header block or message would show.
  const session = connectRaw(socketPath);
  const big = (n: number, len: number) => String(n % 10).repeat(len);
  let n = 0;
  const one = async (i: number) => {
    const extra: Record<string, string> = { 'x-n': String(i) };
    // Varying header sets: some indexed and reused, some large enough to evict dynamic-table entries.
    if (i % 3 === 0) extra['x-big'] = big(i, 500 + (i % 7) * 400);
    if (i % 4 === 1) extra['x-tag-' + (i % 5)] = 'value-' + (i % 2);
    if (i % 11 === 0) extra['grpc-timeout'] = '5S';
    const authority = i % 9 === 4 ? 'localhost' : socketPath; // mix both kinds
    const res = await rawCall(session, authority, '/runtime.v1.RuntimeService/Version', encodeMessage('VersionRequest', { version: 'q' + i }), extra);
    assert.equal(res.grpcStatus, '0', `call ${i}: ${JSON.stringify(res)}`);
    assert.equal(decodeMessage('VersionResponse', unframe(res.body)).runtimeApiVersion, `v1 (asked q${i})`);
    n++;
  };
  for (let i = 0; i < 60; i++) await one(i);
  for (let round = 0; round < 5; round++) await Promise.all(Array.from({ length: 40 }, (_, k) => one(1000 + round * 40 + k)));
  assert.equal(n, 260);
  session.destroy();
});

test('a hand-made client stream: indexed authority, table size updates, CONTINUATION, padding, priority', async () => {
  const { socketPath } = await startServer();
  const sock = net.connect(socketPath);
  cleanups.push(() => void sock.destroy());
  await new Promise((r) => sock.once('connect', r));
  const received: Buffer[] = [];
  sock.on('data', (d) => received.push(d));
  sock.on('error', () => undefined);
  const frame = (type: number, flags: number, stream: number, payload: Buffer) => {
    const h = Buffer.alloc(9);
    h.writeUIntBE(payload.length, 0, 3);
    h[3] = type;
    h[4] = flags;
    h.writeUInt32BE(stream, 5);
    return Buffer.concat([h, payload]);
  };
  const lit = (s: string) => Buffer.concat([Buffer.from([s.length]), Buffer.from(s, 'latin1')]); // raw string, len < 127
  const body = grpcFrame(encodeMessage('VersionRequest', { version: 'hand' }));
  // Block 1: literal with incremental indexing for :authority (name index 1), plus content-type/te literals with indexing.
  const block1 = Buffer.concat([
    Buffer.from([0x83, 0x86]), // :method POST, :scheme http
    Buffer.from([0x44]), lit('/runtime.v1.RuntimeService/Version'), // :path, indexed → dynamic
    Buffer.from([0x41]), lit(socketPath), // :authority, indexed
    Buffer.from([0x5f]), lit('application/grpc'), // content-type (static 31), indexed
    Buffer.from([0x40]), lit('te'), lit('trailers'),
  ]);
  // Dynamic table is now (newest first): te, content-type, :authority, :path → indices 62..65.
  const block2 = Buffer.concat([Buffer.from([0x83, 0x86, 0x80 | 65, 0x80 | 64, 0x80 | 63, 0x80 | 62])]);
  // Block 3: shrink the table to 0 then back to 4096 (empties it), then literals again, sent in 3 frames.
  const block3 = Buffer.concat([
    Buffer.from([0x20, 0x3f, 0xe1, 0x1f]), // size update 0, size update 4096
    Buffer.from([0x83, 0x86]),
    Buffer.from([0x04]), lit('/runtime.v1.RuntimeService/Version'),
    Buffer.from([0x41]), lit(socketPath),
    Buffer.from([0x0f, 0x10]), lit('application/grpc'),
    Buffer.from([0x00]), lit('te'), lit('trailers'),
  ]);
  const settings = frame(0x4, 0, 0, Buffer.alloc(0));
  const data = (s: number) => frame(0x0, 0x1, s, body);
  const padded = Buffer.concat([Buffer.from([3]), Buffer.from([0, 0, 0, 0, 16]), block2, Buffer.alloc(3)]);
  sock.write(Buffer.concat([
    Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), settings,
    frame(0x1, 0x4, 1, block1), data(1),
    frame(0x1, 0x4 | 0x8 | 0x20, 3, padded), data(3),
  ]));
  // Split block 3 across HEADERS + 2 CONTINUATION frames, written byte-wise in odd pieces.
  const third = Buffer.concat([
    frame(0x1, 0, 5, block3.subarray(0, 10)), frame(0x9, 0, 5, block3.subarray(10, 30)), frame(0x9, 0x4, 5, block3.subarray(30)), data(5),
  ]);
  for (let i = 0; i < third.length; i += 7) sock.write(third.subarray(i, i + 7));
  // Read the server's frames until all three streams ended, then check each carried grpc-status 0.
  const deadline = Date.now() + 5000;
  const ended = new Set<number>();
  const statuses = new Map<number, string>();
  // Decode server HEADERS with Node's own decoder would need a session; instead look for RST/GOAWAY absence and
  // END_STREAM on each stream, and that the literal "grpc-status" trailer arrived three times.
  while (ended.size < 3 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    const all = Buffer.concat(received);
    let off = 0;
    ended.clear();
    while (off + 9 <= all.length) {
      const len = all.readUIntBE(off, 3);
      const type = all[off + 3]!;
      const flags = all[off + 4]!;
      const sid = all.readUInt32BE(off + 5) & 0x7fffffff;
      if (off + 9 + len > all.length) break;
      assert.notEqual(type, 0x3, `stream ${sid} was reset`);
      assert.notEqual(type, 0x7, 'connection got GOAWAY');
      if (type === 0x1 && flags & 0x1) ended.add(sid);
      if (type === 0x0 && len > 5) statuses.set(sid, decodeMessage('VersionResponse', all.subarray(off + 9 + 5, off + 9 + len)).runtimeApiVersion);
      off += 9 + len;
    }
  }
  assert.deepEqual([...ended].sort(), [1, 3, 5]);
  assert.deepEqual([...statuses.values()], ['v1 (asked hand)', 'v1 (asked hand)', 'v1 (asked hand)']);
  sock.destroy();
});

test('a connection that does not send the HTTP/2 preface in time is closed; connections past the cap are refused', async () => {
  const socketPath = tempSocket();
  const { logger, lines } = captureLogger();
  const server = await CriServer.start({
    socketPath, logger, runtimeHandlers: { Version: versionHandler }, imageHandlers: {}, handshakeTimeoutMs: 300, maxConnections: 2,
  });
  cleanups.push(() => server.shutdown(0));
  const closed = (sock: net.Socket) => new Promise<number>((resolve) => {
    const t0 = Date.now();
    sock.resume(); // read, or the end of the connection goes unnoticed
    sock.on('close', () => resolve(Date.now() - t0));
  });
  // Half a preface, then silence.
  const idle = net.connect(socketPath, () => idle.write('PRI * HTTP/2.0\r\n'));
  idle.on('error', () => undefined);
  cleanups.push(() => void idle.destroy());
  const idleClosedAfter = await closed(idle);
  assert.ok(idleClosedAfter >= 250 && idleClosedAfter < 3000, `closed after ${idleClosedAfter} ms`);
  assert.ok(lines.some((l) => /no HTTP\/2 connection preface within 300 ms/.test(l.err ?? '')));
  // A real HTTP/2 client that is idle longer than that keeps its connection.
  const session = connectRaw(socketPath);
  await new Promise((r) => setTimeout(r, 600));
  const ok = await rawCall(session, 'localhost', '/runtime.v1.RuntimeService/Version', encodeMessage('VersionRequest', {}));
  assert.equal(ok.grpcStatus, '0');
  // With the session and one more socket open, a third connection is closed at once.
  const second = net.connect(socketPath);
  second.on('error', () => undefined);
  cleanups.push(() => void second.destroy());
  await new Promise((r) => second.once('connect', r));
  await new Promise((r) => setTimeout(r, 50));
  const third = net.connect(socketPath);
  third.on('error', () => undefined);
  cleanups.push(() => void third.destroy());
  const thirdClosedAfter = await closed(third);
  assert.ok(thirdClosedAfter < 250, `third connection closed after ${thirdClosedAfter} ms`);
  assert.ok(lines.some((l) => l.msg === 'cri connection refused: too many connections'));
  second.destroy();
  session.destroy();
});

test('refuses to start when another daemon listens; replaces a stale socket; refuses a non-socket file', async () => {
  const { socketPath } = await startServer();
  await assert.rejects(
    CriServer.start({ socketPath, logger: pino({ level: 'silent' }), runtimeHandlers: {}, imageHandlers: {} }),
    /another daemon is listening on/,
  );
  // A stale socket: bind a listener then close it without unlinking the file.
  const stale = tempSocket();
  await import('node:fs/promises').then((f) => f.mkdir(path.dirname(stale), { recursive: true }));
  const l = net.createServer();
  await new Promise<void>((r) => l.listen(stale, r));
  const fd = (l as any)._handle.fd;
  assert.ok(fd >= 0);
  // Closing normally unlinks the file; simulate a crash by keeping a hard link of the socket instead.
  const keep = stale + '.keep';
  (await import('node:fs')).linkSync(stale, keep);
  await new Promise<void>((r) => l.close(() => r()));
  (await import('node:fs')).renameSync(keep, stale);
  assert.ok(statSync(stale).isSocket());
  const s2 = await CriServer.start({ socketPath: stale, logger: pino({ level: 'silent' }), runtimeHandlers: { Version: versionHandler }, imageHandlers: {} });
  cleanups.push(() => s2.shutdown(0));
  const client = createRuntimeClient(stale);
  try {
    assert.equal((await call(client, 'Version', {})).runtimeName, 'corral');
  } finally {
    client.close();
  }
  const notSock = path.join(path.dirname(stale), 'plain-file');
  writeFileSync(notSock, 'x');
  await assert.rejects(
    CriServer.start({ socketPath: notSock, logger: pino({ level: 'silent' }), runtimeHandlers: {}, imageHandlers: {} }),
    /is not a socket/,
  );
});

test('shutdown waits for an in-flight slow call, then closes', async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const { server, socketPath } = await startServer({
    StopPodSandbox: async () => {
      await gate;
      return {};
    },
  });
  const client = createRuntimeClient(socketPath);
  cleanups.push(() => client.close());
  const slow = call(client, 'StopPodSandbox', { podSandboxId: 'p1' }, { deadlineMs: 10_000 });
  await waitFor(() => server.inFlight() > 0, { intervalMs: 5, what: 'the call to reach the server' });
  const t0 = Date.now();
  let done = false;
  const stopping = server.shutdown(10_000).then(() => (done = true));
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(done, false, 'shutdown must wait for the in-flight call');
  assert.equal(server.inFlight(), 1);
  // the listening socket is already closed for new connections
  await assert.rejects(new Promise((res, rej) => net.connect(socketPath).on('connect', res).on('error', rej)));
  release();
  assert.deepEqual(await slow, {});
  await stopping;
  assert.ok(Date.now() - t0 < 5000);
  assert.equal(server.inFlight(), 0);
  client.close();
});

test('shutdown forces after the grace period when a call never ends', async () => {
  const { server, socketPath } = await startServer({ StopPodSandbox: () => new Promise(() => undefined) });
  const client = createRuntimeClient(socketPath);
  cleanups.push(() => client.close());
  const slow = call(client, 'StopPodSandbox', { podSandboxId: 'p2' }, { deadlineMs: 10_000 });
  slow.catch(() => undefined);
  await waitFor(() => server.inFlight() > 0, { intervalMs: 5, what: 'the call to reach the server' });
  const t0 = Date.now();
  await server.shutdown(300);
  const took = Date.now() - t0;
  assert.ok(took >= 250 && took < 3000, `took ${took} ms`);
  await assert.rejects(slow, (e: any) => e.code === grpc.status.UNAVAILABLE || e.code === grpc.status.CANCELLED || e.code === grpc.status.INTERNAL);
  client.close();
});
