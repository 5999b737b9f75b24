// Hostile HTTP/2 and gRPC input against a real `corral serve`: random, truncated, mutated and
// oversized frames over the unix socket (fixed seed, bounded iterations). The daemon must
// stay up, keep its memory bounded and keep answering a well-behaved client throughout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { TestDaemon } from '../helpers/daemon.js';
import { createRuntimeClient, call } from '../../src/cri/client.js';
import { encodeMessage } from '../../src/cri/proto.js';

/** mulberry32: a small seeded PRNG, so every run sends the same bytes. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    int: (n: number) => Math.floor(next() * n),
    bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(next() * 256))),
    pick: <T>(xs: readonly T[]) => xs[Math.floor(next() * xs.length)]!,
  };
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const SETTINGS = frame(0x4, 0, 0, Buffer.alloc(0));

function frame(type: number, flags: number, stream: number, payload: Buffer, claimedLength = payload.length): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(Math.min(claimedLength, 0xffffff), 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream >>> 0, 5);
  return Buffer.concat([h, payload]);
}

function lit(name: string, value: string): Buffer {
  const n = Buffer.from(name, 'latin1');
  const v = Buffer.from(value, 'latin1');
  assert.ok(n.length < 127 && v.length < 127);
  return Buffer.concat([Buffer.from([0x00, n.length]), n, Buffer.from([v.length]), v]);
}

/** A request header block (static indices and literals only). */
function requestBlock(method: string, authority: string, extra: Buffer[] = []): Buffer {
  return Buffer.concat([
    Buffer.from([0x83, 0x86]), // POST, http
    lit(':path', `/runtime.v1.RuntimeService/${method}`),
    lit(':authority', authority),
    lit('content-type', 'application/grpc'),
    lit('te', 'trailers'),
    ...extra,
  ]);
}

function grpcMessage(body: Buffer, opts: { compressed?: boolean; claimedLength?: number } = {}): Buffer {
  const p = Buffer.alloc(5);
  p[0] = opts.compressed ? 1 : 0;
  p.writeUInt32BE(opts.claimedLength ?? body.length, 1);
  return Buffer.concat([p, body]);
}

/** A whole valid connection: preface, settings, one Version call. */
function validConnection(authority: string): Buffer {
  return Buffer.concat([
    PREFACE, SETTINGS,
    frame(0x1, 0x4, 1, requestBlock('Version', authority)),
    frame(0x0, 0x1, 1, grpcMessage(encodeMessage('VersionRequest', { version: 'v1' }))),
  ]);
}

type Case = { name: string; bytes: Buffer[] };

function hostileCase(r: ReturnType<typeof prng>, socketPath: string): Case {
  const authority = r.pick(['localhost', socketPath]);
  const kind = r.int(12);
  switch (kind) {
    case 0:
      return { name: 'random bytes', bytes: [r.bytes(1 + r.int(4096))] };
    case 1: {
      const p = Buffer.from(PREFACE);
      p[r.int(p.length)] ^= 1 + r.int(255);
      return { name: 'preface garbage', bytes: [p, r.bytes(r.int(512))] };
    }
    case 2: {
      const frames = [PREFACE, SETTINGS];
      for (let i = 0, n = 1 + r.int(20); i < n; i++) {
        const len = r.int(300);
        frames.push(frame(r.int(12), r.int(256), r.pick([0, 1, 3, 2 ** 31 - 1, r.int(2 ** 31)]), r.bytes(len), r.int(4) === 0 ? r.int(0x1000000) : len));
      }
      return { name: 'random frames', bytes: frames };
    }
    case 3:
      return { name: 'HEADERS claiming 16 MB', bytes: [PREFACE, SETTINGS, frame(0x1, 0x4, 1, r.bytes(16 * 1024), 0xffffff)] };
    case 4: {
      // A header block that never ends: CONTINUATION after CONTINUATION, ~400 KB in all.
      const out = [PREFACE, SETTINGS, frame(0x1, 0, 1, requestBlock('Version', authority))];
      for (let i = 0; i < 100; i++) out.push(frame(0x9, 0, 1, Buffer.alloc(4000, 0x82)));
      return { name: 'endless CONTINUATION', bytes: out };
    }
    case 5: {
      const bad = r.pick([Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]), Buffer.from([0x80]), Buffer.from([0xbf]), Buffer.from([0x7f, 0xff, 0xff, 0xff, 0xff, 0x7f])]);
      return { name: 'bad HPACK index', bytes: [PREFACE, SETTINGS, frame(0x1, 0x4, 1, Buffer.concat([requestBlock('Version', authority).subarray(0, 2), bad]))] };
    }
    case 6:
      return {
        name: 'gRPC length prefix of 4 GB',
        bytes: [PREFACE, SETTINGS, frame(0x1, 0x4, 1, requestBlock('Version', authority)), frame(0x0, 0x1, 1, grpcMessage(r.bytes(100), { claimedLength: 0xffffffff }))],
      };
    case 7:
      return {
        name: 'compressed flag without compression',
        bytes: [PREFACE, SETTINGS, frame(0x1, 0x4, 1, requestBlock('Version', authority)), frame(0x0, 0x1, 1, grpcMessage(r.bytes(1 + r.int(200)), { compressed: true }))],
      };
    case 8:
      return {
        name: 'gzip-declared garbage',
        bytes: [PREFACE, SETTINGS, frame(0x1, 0x4, 1, requestBlock('Version', authority, [lit('grpc-encoding', 'gzip')])), frame(0x0, 0x1, 1, grpcMessage(r.bytes(1 + r.int(200)), { compressed: true }))],
      };
    case 9: {
      const v = validConnection(authority);
      return { name: 'truncated valid stream', bytes: [v.subarray(0, r.int(v.length))] };
    }
    case 10: {
      const v = Buffer.from(validConnection(authority));
      for (let i = 0, n = 1 + r.int(4); i < n; i++) v[PREFACE.length + r.int(v.length - PREFACE.length)] = r.int(256);
      return { name: 'mutated valid stream', bytes: [v] };
    }
    default:
      return { name: 'garbage protobuf', bytes: [PREFACE, SETTINGS, frame(0x1, 0x4, 1, requestBlock(r.pick(['Version', 'Status', 'PodSandboxStatus', 'ContainerStatus', 'NoSuchMethod']), authority)), frame(0x0, 0x1, 1, grpcMessage(r.bytes(r.int(500))))] };
  }
}

/** Sends one case on a fresh connection, in odd-sized pieces; returns when the server closes or after a short while. */
function send(socketPath: string, c: Case & { step: number }): Promise<void> {
  return new Promise((resolve) => {
    const sock = net.connect(socketPath);
    const done = () => {
      clearTimeout(timer);
      sock.destroy();
      resolve();
    };
    const timer = setTimeout(done, 300);
    sock.on('error', done);
    sock.on('close', done);
    sock.on('data', () => undefined);
    sock.on('connect', () => {
      const all = Buffer.concat(c.bytes);
      for (let i = 0; i < all.length; i += c.step) sock.write(all.subarray(i, i + c.step));
    });
  });
}

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

/** The daemon's peak RSS, sampled every 50 ms from creation until stop() (which returns it). */
function sampleRss(pid: number): { baseline: number; stop(): number } {
  const baseline = rssBytes(pid);
  let peak = baseline;
  const sampler = setInterval(() => {
    try {
      peak = Math.max(peak, rssBytes(pid));
    } catch {
      /* gone: asserted by the caller */
    }
  }, 50);
  return {
    baseline,
    stop: () => {
      clearInterval(sampler);
      return peak;
    },
  };
}

/** Runs `body` against a daemon without CNI, a runtime client and its RSS sampler; cleans all up however `body` ends. */
async function withSampledDaemon(body: (d: TestDaemon, client: grpc.Client, rss: ReturnType<typeof sampleRss>) => Promise<void>): Promise<void> {
  const d = new TestDaemon({ conflist: null });
  await d.start();
  const client = createRuntimeClient(d.socket, { timeoutMs: 10_000 });
  let rss: ReturnType<typeof sampleRss> | undefined;
  try {
    rss = sampleRss(d.pid!);
    await body(d, client, rss);
  } finally {
    rss?.stop();
    client.close();
    await d.cleanup();
  }
}

/** A valid call whose protobuf is 100 MB, sent by Node's HTTP/2 client (flow control respected). */
function hugeMessageCall(socketPath: string): Promise<{ grpcStatus?: string; rstCode: number }> {
  return new Promise((resolve) => {
    const session = http2.connect('http://localhost', { createConnection: () => net.connect(socketPath) });
    session.on('error', () => undefined);
    const req = session.request({
      ':method': 'POST', ':path': '/runtime.v1.RuntimeService/Version', 'content-type': 'application/grpc', te: 'trailers',
    });
    const result: { grpcStatus?: string; rstCode: number } = { rstCode: 0 };
    req.on('response', (h) => {
      if (h['grpc-status'] !== undefined) result.grpcStatus = String(h['grpc-status']);
    });
    req.on('trailers', (t) => (result.grpcStatus = String(t['grpc-status'])));
    req.on('data', () => undefined);
    req.on('error', () => undefined);
    req.on('close', () => {
      result.rstCode = req.rstCode ?? 0;
      session.destroy();
      resolve(result);
    });
    const total = 100 * 1024 * 1024;
    req.write(grpcMessage(Buffer.alloc(0), { claimedLength: total }));
    const chunk = Buffer.alloc(1024 * 1024, 0x0a);
    let sent = 0;
    const pump = () => {
      while (sent < total && !req.destroyed) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', pump);
      }
      if (!req.destroyed) req.end();
    };
    pump();
  });
}

test('malformed HTTP/2 and gRPC input: the daemon stays up, memory stays bounded, other clients are answered', { timeout: 120_000 }, async (t) => {
  await withSampledDaemon(async (d, client, rss) => {
    const pid = d.pid!;
    const baseline = rss.baseline;

    // A well-behaved client keeps calling throughout; every call must succeed.
    let stop = false;
    let goodCalls = 0;
    const goodFailures: string[] = [];
    const goodLoop = (async () => {
      while (!stop) {
        try {
          const v = await call<any>(client, 'Version', { version: 'v1' }, { deadlineMs: 5000 });
          if (v.runtimeName !== 'corral') goodFailures.push(JSON.stringify(v));
          goodCalls++;
        } catch (e) {
          goodFailures.push((e as Error).message);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();

    const r = prng(0xc077a1);
    const counts = new Map<string, number>();
    const t0 = Date.now();
    const CONNECTIONS = 400;
    const PARALLEL = 8;
    // All cases are drawn before sending, so the bytes do not depend on timing.
    const cases = Array.from({ length: CONNECTIONS }, () => ({ ...hostileCase(r, d.socket), step: 1 + r.int(3) * 700 }));
    for (const c of cases) counts.set(c.name, (counts.get(c.name) ?? 0) + 1);
    let next = 0;
    await Promise.all(Array.from({ length: PARALLEL }, async () => {
      while (next < cases.length) await send(d.socket, cases[next++]!);
    }));
    // Two valid calls with a 100 MB message: refused by the 16 MiB receive limit, not buffered.
    for (let i = 0; i < 2; i++) {
      const res = await hugeMessageCall(d.socket);
      assert.equal(res.grpcStatus, String(grpc.status.RESOURCE_EXHAUSTED), JSON.stringify(res));
    }
    const fuzzMs = Date.now() - t0;
    stop = true;
    await goodLoop;
    const peak = rss.stop();

    assert.ok(counts.size >= 10, `every kind of input was sent: ${JSON.stringify([...counts])}`);
    assert.ok(process.kill(pid, 0), 'the daemon process is alive');
    const v = await call<any>(client, 'Version', { version: 'v1' }, { deadlineMs: 5000 });
    assert.equal(v.runtimeName, 'corral');
    assert.deepEqual(goodFailures, [], 'the well-behaved client was answered every time');
    assert.ok(goodCalls > 10, `good calls: ${goodCalls}`);
    const growth = peak - baseline;
    t.diagnostic(`${CONNECTIONS} hostile connections in ${fuzzMs} ms; ${goodCalls} good calls; RSS ${Math.round(baseline / 1048576)} MiB, peak +${Math.round(growth / 1048576)} MiB; ${JSON.stringify([...counts])}`);
    assert.ok(growth < 200 * 1024 * 1024, `RSS grew by ${Math.round(growth / 1048576)} MiB (baseline ${Math.round(baseline / 1048576)} MiB)`);
    assert.ok(fuzzMs < 60_000, `fuzzing took ${fuzzMs} ms`);
    const lines = await d.logLines();
    assert.deepEqual(lines.filter((l) => l.level >= 60 || /unhandled|uncaught/.test(l.msg ?? '')), [], 'no fatal or unhandled errors logged');
  });
});

/** Opens `streams` calls on one connection and sends each a partial message of `perStream` bytes (never finished). */
function partialMessages(socketPath: string, streams: number, perStream: number): Promise<{ closedByServer: boolean; fullySent: number }> {
  return new Promise((resolve) => {
    const session = http2.connect('http://localhost', { createConnection: () => net.connect(socketPath) });
    let fullySent = 0;
    let settled = false;
    const finish = (closedByServer: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      resolve({ closedByServer, fullySent });
    };
    const timer = setTimeout(() => finish(false), 30_000);
    session.on('error', () => finish(true));
    session.on('close', () => finish(true));
    const chunk = Buffer.alloc(256 * 1024, 0x0a);
    for (let s = 0; s < streams; s++) {
      const req = session.request({ ':method': 'POST', ':path': '/runtime.v1.RuntimeService/Version', 'content-type': 'application/grpc', te: 'trailers' });
      req.on('error', () => undefined);
      req.on('data', () => undefined);
      req.write(grpcMessage(Buffer.alloc(0), { claimedLength: perStream + 1 }));
      let sent = 0;
      const pump = () => {
        while (sent < perStream && !req.destroyed) {
          sent += chunk.length;
          if (!req.write(chunk)) return void req.once('drain', pump);
        }
        if (sent >= perStream && ++fullySent === streams) setTimeout(() => finish(false), 500);
      };
      pump();
    }
  });
}

test('many streams with unfinished 15 MB messages: the connection is closed, memory stays bounded', { timeout: 120_000 }, async (t) => {
  await withSampledDaemon(async (d, client, rss) => {
    const pid = d.pid!;
    const baseline = rss.baseline;
    // Each message is under the 16 MiB receive limit, so grpc-js would hold all 40 (600 MB).
    const res = await partialMessages(d.socket, 40, 15 * 1024 * 1024);
    const growth = rss.stop() - baseline;
    t.diagnostic(`${JSON.stringify(res)}; RSS ${Math.round(baseline / 1048576)} MiB, peak +${Math.round(growth / 1048576)} MiB`);
    assert.equal(res.closedByServer, true, 'the daemon closed the connection');
    assert.ok(growth < 200 * 1024 * 1024, `RSS grew by ${Math.round(growth / 1048576)} MiB`);
    assert.ok(process.kill(pid, 0));
    assert.equal((await call<any>(client, 'Version', {}, { deadlineMs: 5000 })).runtimeName, 'corral');
    assert.ok((await d.logLines()).some((l) => l.msg === 'cri connection closed: the client went over a limit'));
  });
});
