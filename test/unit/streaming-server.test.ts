/**
 * The streaming server and its SPDY session against a Go-shaped test client (never sends
 * WINDOW_UPDATE) and a test-double runtime: end-of-session order, backpressure without a
 * send window, port-forward pairs, hostile input, client departure, idle timeout.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import http from 'node:http';
import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import { StreamingServer } from '../../src/streaming/server.js';
import type { StreamingRuntime, StreamIO, TerminalSize } from '../../src/streaming/runtime.js';
import { silentLogger } from '../../src/util/log.js';
import { TestSpdyClient } from '../helpers/spdy-client.js';
import { FrameType } from '../../src/streaming/spdy-frames.js';

const V4 = ['v4.channel.k8s.io', 'v3.channel.k8s.io', 'v2.channel.k8s.io', 'channel.k8s.io'];
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A runtime double: exec runs `fn` with the session's streams. */
function fakeRuntime(over: Partial<StreamingRuntime>): StreamingRuntime {
  return {
    exec: async () => 0,
    attach: async () => undefined,
    portForward: async () => undefined,
    ...over,
  };
}

async function startServer(runtime: StreamingRuntime, idleTimeoutMs = 0, maxStreamsPerSession?: number): Promise<StreamingServer> {
  const s = await StreamingServer.start({ address: '127.0.0.1', port: 0, tlsCertFile: '', tlsKeyFile: '', idleTimeoutMs, runtime, logger: silentLogger(), maxStreamsPerSession });
  cleanups.push(() => s.shutdown());
  return s;
}

async function connect(url: string, protocols = V4): Promise<TestSpdyClient> {
  const c = await TestSpdyClient.connect(url, protocols);
  cleanups.push(() => void c.socket.destroy());
  return c;
}

const execReq = (o: Partial<{ tty: boolean; stdin: boolean; stdout: boolean; stderr: boolean }> = {}) => ({
  kind: 'exec' as const,
  containerId: 'c1',
  cmd: ['x'],
  tty: false,
  stdin: false,
  stdout: true,
  stderr: true,
  ...o,
});

test('exec: 10 MiB of stdout with no WINDOW_UPDATE ever, then FIN stdout/stderr, status, FIN error, GOAWAY', async () => {
  const total = 10 * 1024 * 1024;
  const server = await startServer(
    fakeRuntime({
      async exec(_id, _cmd, io) {
        const chunk = Buffer.alloc(64 * 1024, 'y');
        for (let sent = 0; sent < total; sent += chunk.length) {
          if (!io.stdout!.write(chunk)) await once(io.stdout!, 'drain');
        }
        io.stderr!.write('warn');
        return 3;
      },
    }),
  );
  const c = await connect(server.urlFor(execReq()));
  assert.equal(c.protocol, 'v4.channel.k8s.io');
  assert.equal(c.headBytes, 0, 'nothing may follow the 101 before the client speaks');
  const error = await c.open({ streamtype: 'error' });
  const stdout = await c.open({ streamtype: 'stdout' });
  const stderr = await c.open({ streamtype: 'stderr' });
  await c.until(() => error.fin, 20_000, 'the error stream FIN');
  assert.equal(Buffer.concat(stdout.data).length, total);
  assert.ok(stdout.fin && stderr.fin);
  assert.equal(c.text(stderr), 'warn');
  const status = JSON.parse(c.text(error));
  assert.equal(status.reason, 'NonZeroExitCode');
  assert.equal(status.details.causes[0].message, '3');
  // Order: stdout and stderr FINs before the first byte of status.
  const idx = (pred: (f: any) => boolean) => c.frames.findIndex(pred);
  const statusAt = idx((f) => f.kind === 'data' && f.streamId === error.id && f.payload.length > 0);
  assert.ok(idx((f) => f.kind === 'data' && f.streamId === stdout.id && f.fin) < statusAt);
  assert.ok(idx((f) => f.kind === 'data' && f.streamId === stderr.id && f.fin) < statusAt);
  await c.until(() => c.frames.some((f) => f.kind === 'goaway'), 5000, 'GOAWAY');
  assert.ok(!c.frames.some((f) => f.kind === 'data' && f.streamId === stdout.id && f.payload.length > 32 * 1024), 'DATA frames of at most 32 KiB');
});

test('exec: the runtime starts only once every expected stream is there; stdin, its FIN and resizes reach it', async () => {
  let started = false;
  const sizes: TerminalSize[] = [];
  const server = await startServer(
    fakeRuntime({
      async exec(_id, _cmd, io: StreamIO) {
        started = true;
        const resizes = (async () => {
          for await (const s of io.resize!) sizes.push(s);
        })();
        const chunks: Buffer[] = [];
        for await (const c of io.stdin!) chunks.push(c as Buffer);
        io.stdout!.end(Buffer.concat(chunks).toString().toUpperCase());
        void resizes;
        return 0;
      },
    }),
  );
  const c = await connect(server.urlFor(execReq({ tty: true, stdin: true, stderr: false })));
  const error = await c.open({ streamtype: 'error' });
  const stdin = await c.open({ streamtype: 'stdin' });
  const stdout = await c.open({ streamtype: 'stdout' });
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(started, false, 'resize stream still missing');
  const resize = await c.open({ streamtype: 'resize' });
  c.write(resize, '{"Width":80,"Heig');
  c.write(resize, 'ht":24}\n');
  c.write(stdin, 'hello ');
  c.write(stdin, 'world', true);
  await c.until(() => error.fin, 5000, 'the status');
  assert.equal(c.text(stdout), 'HELLO WORLD');
  assert.equal(c.text(error), '{"metadata":{},"status":"Success"}');
  assert.deepEqual(sizes, [{ width: 80, height: 24 }]);
});

test('exec: a runtime failure is an InternalError status, not a success', async () => {
  const server = await startServer(fakeRuntime({ exec: async () => Promise.reject(new Error('no such binary')) }));
  const c = await connect(server.urlFor(execReq()));
  const error = await c.open({ streamtype: 'error' });
  await c.open({ streamtype: 'stdout' });
  await c.open({ streamtype: 'stderr' });
  await c.until(() => error.fin, 5000, 'the status');
  const status = JSON.parse(c.text(error));
  assert.equal(status.reason, 'InternalError');
  assert.match(status.message, /error executing command in container: no such binary/);
});

test('exec: a client that goes away aborts the session signal', async () => {
  let aborted: () => void;
  const abortSeen = new Promise<void>((r) => (aborted = r));
  const server = await startServer(
    fakeRuntime({
      exec: (_id, _cmd, io) =>
        new Promise((resolve) => {
          io.signal.addEventListener('abort', () => {
            aborted();
            resolve(137);
          });
        }),
    }),
  );
  const c = await connect(server.urlFor(execReq()));
  await c.open({ streamtype: 'error' });
  await c.open({ streamtype: 'stdout' });
  await c.open({ streamtype: 'stderr' });
  c.close();
  await Promise.race([abortSeen, new Promise((_, rej) => setTimeout(() => rej(new Error('no abort')), 5000))]);
});

test('session: PINGs echoed; malformed input ends the connection with GOAWAY PROTOCOL_ERROR', async () => {
  const server = await startServer(fakeRuntime({ exec: () => new Promise(() => undefined) }));
  const c = await connect(server.urlFor(execReq()));
  const ping = Buffer.alloc(4);
  ping.writeUInt32BE(1);
  c.sendControl(FrameType.PING, 0, ping);
  await c.until(() => c.frames.some((f) => f.kind === 'ping' && f.id === 1), 5000, 'the PING echo');
  c.sendControl(10, 0, Buffer.alloc(0)); // CREDENTIAL: not in SPDY/3.1's set
  await c.until(() => c.closed, 5000, 'the close');
  assert.ok(c.frames.some((f) => f.kind === 'goaway' && f.status === 1));
});

test('session: a header block that is not valid zlib ends the connection', async () => {
  const server = await startServer(fakeRuntime({}));
  const c = await connect(server.urlFor(execReq()));
  const body = Buffer.alloc(10);
  body.writeUInt32BE(1);
  c.sendControl(FrameType.SYN_STREAM, 0, Buffer.concat([body, Buffer.from('not zlib at all')]));
  await c.until(() => c.closed, 5000, 'the close');
  assert.ok(c.frames.some((f) => f.kind === 'goaway' && f.status === 1));
});

test('session: a deflate bomb in a header block is cut off at the cap', async () => {
  const server = await startServer(fakeRuntime({}));
  const c = await connect(server.urlFor(execReq()));
  const huge = Buffer.alloc(4 + 8 + 2 * 1024 * 1024);
  huge.writeUInt32BE(1, 0);
  huge.writeUInt32BE(1, 4);
  huge.writeUInt32BE(2 * 1024 * 1024, 9 + 2);
  const block = await new Promise<Buffer>((resolve) => {
    const chunks: Buffer[] = [];
    const d = (c as any).deflater as import('node:zlib').Deflate;
    const on = (x: Buffer) => chunks.push(x);
    d.on('data', on);
    d.write(huge);
    d.flush(2, () => {
      d.off('data', on);
      resolve(Buffer.concat(chunks));
    });
  });
  assert.ok(block.length < 16 * 1024, 'small on the wire');
  const body = Buffer.alloc(10);
  body.writeUInt32BE(1);
  c.sendControl(FrameType.SYN_STREAM, 0, Buffer.concat([body, block]));
  await c.until(() => c.closed, 5000, 'the close');
});

test('session: unknown stream types are answered and drained (never wedge the connection); an even stream ID is reset', async () => {
  const server = await startServer(fakeRuntime({ exec: () => new Promise(() => undefined) }));
  const c = await connect(server.urlFor(execReq({ stdout: true, stderr: true })));
  // Unknown stream types are answered and drained, not counted.
  for (let i = 0; i < 5; i++) {
    const s = await c.open({ streamtype: 'bogus' });
    assert.ok(s.replied);
    c.write(s, Buffer.alloc(100_000));
  }
  const block = await c.compress({ streamtype: 'stdout' });
  const body = Buffer.alloc(10);
  body.writeUInt32BE(2);
  c.sendControl(FrameType.SYN_STREAM, 0, Buffer.concat([body, block]));
  await c.until(() => c.frames.some((f) => f.kind === 'rst_stream' && f.streamId === 2), 5000, 'RST of the even stream');
});

test('idle timeout: a silent session is closed', async () => {
  const server = await startServer(fakeRuntime({ exec: () => new Promise(() => undefined) }), 300);
  const c = await connect(server.urlFor(execReq()));
  await c.open({ streamtype: 'error' });
  await c.until(() => c.closed, 5000, 'the idle close');
});

test('port-forward: pairs by requestid, many at once, bytes both ways, half-close; a failure goes on that pair’s error stream only', async () => {
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => echo.close(() => r())));
  const echoPort = (echo.address() as net.AddressInfo).port;
  const server = await startServer(
    fakeRuntime({
      async portForward(_pod, port, stream: Duplex, signal) {
        if (port !== echoPort) throw new Error(`dial tcp 127.0.0.1:${port}: connect: connection refused`);
        const sock = net.connect(port, '127.0.0.1');
        signal.addEventListener('abort', () => sock.destroy());
        stream.pipe(sock).pipe(stream);
        await once(sock, 'close');
      },
    }),
  );
  const c = await connect(server.urlFor({ kind: 'portforward', podSandboxId: 'p1', ports: [] }), ['portforward.k8s.io']);
  assert.equal(c.protocol, 'portforward.k8s.io');
  const pairs: Array<{ error: Awaited<ReturnType<TestSpdyClient['open']>>; data: Awaited<ReturnType<TestSpdyClient['open']>> }> = [];
  for (let i = 0; i < 5; i++) {
    const error = await c.open({ streamtype: 'error', port: String(echoPort), requestid: String(i) }, { fin: true });
    const data = await c.open({ streamtype: 'data', port: String(echoPort), requestid: String(i) });
    pairs.push({ error, data });
  }
  const payload = Buffer.alloc(1024 * 1024, 7);
  for (const p of pairs) {
    for (let o = 0; o < payload.length; o += 32 * 1024) c.write(p.data, payload.subarray(o, o + 32 * 1024));
    c.write(p.data, '', true);
  }
  await c.until(() => pairs.every((p) => p.data.fin && p.error.fin), 20_000, 'every echo');
  for (const p of pairs) {
    assert.equal(Buffer.concat(p.data.data).length, payload.length);
    assert.equal(c.text(p.error), '');
  }
  const badErr = await c.open({ streamtype: 'error', port: '1', requestid: '99' }, { fin: true });
  await c.open({ streamtype: 'data', port: '1', requestid: '99' });
  await c.until(() => badErr.fin, 5000, 'the error text');
  assert.match(c.text(badErr), /^error forwarding port 1 to pod p1, uid : dial tcp .*connection refused/);
  const noPort = await c.open({ streamtype: 'data', requestid: '100' });
  assert.equal(noPort.reset, 3, 'a stream without a port is refused');
  c.close();
});

test('HTTP: unknown routes and tokens are 404; a plain request with a token is 400', async () => {
  const server = await startServer(fakeRuntime({}));
  const get = (url: string) =>
    new Promise<number>((resolve, reject) => {
      http.get(url, (res) => {
        res.resume();
        resolve(res.statusCode!);
      }).on('error', reject);
    });
  assert.equal(await get(server.url + 'exec/abcdefgh'), 404);
  assert.equal(await get(server.url + 'nothing'), 404);
  assert.equal(await get(server.urlFor(execReq())), 400);
});

test('session: streams past the per-session cap are refused (REFUSED_STREAM), the session lives on', async () => {
  const server = await startServer(fakeRuntime({ portForward: () => new Promise(() => undefined) }), 0, 4);
  const c = await connect(server.urlFor({ kind: 'portforward', podSandboxId: 'p1', ports: [] }), ['portforward.k8s.io']);
  const opened = [];
  for (let i = 0; i < 6; i++) opened.push(await c.open({ streamtype: i % 2 ? 'data' : 'error', port: '80', requestid: String(i >> 1) }));
  assert.deepEqual(opened.map((s) => s.reset), [undefined, undefined, undefined, undefined, 3, 3]);
});

test('backpressure: a client that stops reading stops the producer (bounded buffering), and all arrives after', async () => {
  let written = 0;
  let blockedAt = -1;
  const total = 64 * 1024 * 1024;
  const server = await startServer(
    fakeRuntime({
      async exec(_id, _cmd, io) {
        const chunk = Buffer.alloc(64 * 1024, 'z');
        while (written < total) {
          written += chunk.length;
          if (!io.stdout!.write(chunk)) {
            const drained = once(io.stdout!, 'drain');
            const t = await Promise.race([drained.then(() => 'drained'), new Promise((r) => setTimeout(() => r('stuck'), 500))]);
            if (t === 'stuck' && blockedAt < 0) blockedAt = written;
            if (t === 'stuck') await drained;
          }
        }
        return 0;
      },
    }),
  );
  const c = await connect(server.urlFor(execReq({ stderr: false })));
  const error = await c.open({ streamtype: 'error' });
  const stdout = await c.open({ streamtype: 'stdout' });
  c.socket.pause();
  await new Promise((r) => setTimeout(r, 1500));
  assert.ok(blockedAt > 0 && blockedAt < 16 * 1024 * 1024, `the producer stalled after ${blockedAt} bytes`);
  c.socket.resume();
  await c.until(() => error.fin, 30_000, 'the end');
  assert.equal(Buffer.concat(stdout.data).length, total);
});

test('a runtime that fails at once: every stream gets its SYN_REPLY before any RST (else the Go client fails CreateStream with "Stream reset")', async () => {
  const server = await startServer(fakeRuntime({ exec: async () => Promise.reject(new Error('exec with a TTY is not served yet')) }));
  const c = await connect(server.urlFor(execReq({ tty: true, stdin: true, stderr: false })));
  const streams = [];
  for (const t of ['error', 'stdin', 'stdout', 'resize']) streams.push(await c.open({ streamtype: t }));
  await c.until(() => c.closed || c.frames.some((f) => f.kind === 'goaway'), 5000, 'the end');
  for (const s of streams) {
    const reply = c.frames.findIndex((f) => f.kind === 'syn_reply' && f.streamId === s.id);
    const rst = c.frames.findIndex((f) => f.kind === 'rst_stream' && f.streamId === s.id);
    assert.ok(reply >= 0 && (rst < 0 || reply < rst), `stream ${s.id}: reply at ${reply}, RST at ${rst}`);
  }
  assert.match(JSON.parse(c.text(streams[0]!)).message, /not served yet/);
});

test('a stream that filled its buffer and then FINs does not leave the connection paused (PINGs still answered)', async () => {
  let readAll: () => void;
  const allRead = new Promise<void>((r) => (readAll = r));
  const server = await startServer(
    fakeRuntime({
      async exec(_id, _cmd, io) {
        for await (const _ of io.stdin!) void _;
        readAll();
        await new Promise((r) => io.signal.addEventListener('abort', r));
        return 0;
      },
    }),
  );
  const c = await connect(server.urlFor(execReq({ stdin: true, stderr: false })));
  await c.open({ streamtype: 'error' });
  const stdin = await c.open({ streamtype: 'stdin' });
  await c.open({ streamtype: 'stdout' });
  for (let i = 0; i < 4; i++) c.write(stdin, Buffer.alloc(32 * 1024));
  c.write(stdin, '', true);
  await allRead;
  const ping = Buffer.alloc(4);
  ping.writeUInt32BE(7);
  c.sendControl(FrameType.PING, 0, ping);
  await c.until(() => c.frames.some((f) => f.kind === 'ping' && f.id === 7), 3000, 'the PING echo');
  c.close();
});

test('TLS: with a certificate and key the URLs are https and the routes answer over TLS', async () => {
  const { mkdtemp, rm } = await import('node:fs/promises');
  const os = await import('node:os');
  const path = await import('node:path');
  const { execFile } = await import('../../src/util/exec.js');
  const https = await import('node:https');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'corral-tls-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const cert = path.join(dir, 'c.pem');
  const key = path.join(dir, 'k.pem');
  await execFile('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
  const runtime = fakeRuntime({});
  const s = await StreamingServer.start({ address: '127.0.0.1', port: 0, tlsCertFile: cert, tlsKeyFile: key, idleTimeoutMs: 0, runtime, logger: silentLogger() });
  cleanups.push(() => s.shutdown());
  const url = s.urlFor(execReq());
  assert.match(url, /^https:\/\/127\.0\.0\.1:\d+\/exec\//);
  const code = await new Promise<number>((resolve, reject) => {
    https.get(url.replace(/exec\/.*/, 'exec/unknown1'), { rejectUnauthorized: false }, (res) => {
      res.resume();
      resolve(res.statusCode!);
    }).on('error', reject);
  });
  assert.equal(code, 404);
});

test('v2.channel.k8s.io: nothing on the error stream on success, the message as text on failure', async () => {
  let code = 0;
  const server = await startServer(fakeRuntime({ exec: async () => code }));
  for (const [exit, want] of [[0, ''], [2, 'command terminated with non-zero exit code: exit status 2']] as const) {
    code = exit;
    const c = await connect(server.urlFor(execReq({ stderr: false })), ['v2.channel.k8s.io']);
    assert.equal(c.protocol, 'v2.channel.k8s.io');
    const error = await c.open({ streamtype: 'error' });
    await c.open({ streamtype: 'stdout' });
    await c.until(() => error.fin, 5000, 'the error stream FIN');
    assert.equal(c.text(error), want);
  }
});

test('shutdown ends live sessions and stops listening', async () => {
  const server = await StreamingServer.start({ address: '127.0.0.1', port: 0, tlsCertFile: '', tlsKeyFile: '', idleTimeoutMs: 0, runtime: fakeRuntime({ exec: () => new Promise(() => undefined) }), logger: silentLogger() });
  const c = await connect(server.urlFor(execReq()));
  await c.open({ streamtype: 'error' });
  const idle = net.connect((new URL(server.url).port as unknown as number), '127.0.0.1'); // a connection that never sends a request
  cleanups.push(() => void idle.destroy());
  await once(idle, 'connect');
  await server.shutdown();
  await c.until(() => c.closed, 5000, 'the session to end');
});

test('HTTP: an expired token is a 404 before any upgrade, a fresh one upgrades', async () => {
  const { TokenCache } = await import('../../src/streaming/token-cache.js');
  let now = 0;
  const tokens = new TokenCache(60_000, 1000, () => now);
  const s = await StreamingServer.start({ address: '127.0.0.1', port: 0, tlsCertFile: '', tlsKeyFile: '', idleTimeoutMs: 0, runtime: fakeRuntime({}), logger: silentLogger(), tokens });
  cleanups.push(() => s.shutdown());
  const stale = s.urlFor(execReq());
  now += 61_000;
  await assert.rejects(TestSpdyClient.connect(stale, V4), /no upgrade: 404/);
  const fresh = await connect(s.urlFor(execReq()));
  assert.equal(fresh.protocol, 'v4.channel.k8s.io');
});

test('a client that does not open every expected stream in time is disconnected, and nothing runs', async () => {
  let ran = false;
  const s = await StreamingServer.start({
    address: '127.0.0.1', port: 0, tlsCertFile: '', tlsKeyFile: '', idleTimeoutMs: 0, logger: silentLogger(), streamCreationTimeoutMs: 200,
    runtime: fakeRuntime({ exec: async () => ((ran = true), 0) }),
  });
  cleanups.push(() => s.shutdown());
  const c = await connect(s.urlFor(execReq()));
  await c.open({ streamtype: 'error' });
  await c.until(() => c.closed, 5000, 'the disconnect');
  assert.equal(ran, false);
});
