/**
 * The streaming listener (src/streaming/listener.ts): the port is bound at start, the server
 * is loaded only when first needed, a connection that arrives before it is loaded waits and
 * is then served in full, and a port that is taken fails the start.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { StreamingListener, type AcceptingServer } from '../../src/streaming/listener.js';
import { StreamingServer } from '../../src/streaming/server.js';
import type { StreamingRuntime } from '../../src/streaming/runtime.js';
import { silentLogger } from '../../src/util/log.js';
import { TestSpdyClient } from '../helpers/spdy-client.js';

const V4 = ['v4.channel.k8s.io'];
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const runtime: StreamingRuntime = {
  async exec(_id, cmd, io) {
    io.stdout!.end(`ran ${cmd.join(' ')}`);
    return 0;
  },
  attach: async () => undefined,
  portForward: async () => undefined,
};

const execReq = { kind: 'exec' as const, containerId: 'c1', cmd: ['echo', 'hi'], tty: false, stdin: false, stdout: true, stderr: false };

/** A listener whose load() builds a real StreamingServer after `delayMs`, counting loads. */
async function listen(delayMs = 0): Promise<{ listener: StreamingListener; loads: () => number }> {
  let loads = 0;
  const listener = await StreamingListener.listen({
    address: '127.0.0.1',
    port: 0,
    tls: false,
    logger: silentLogger(),
    async load(baseUrl, tokens): Promise<AcceptingServer> {
      loads++;
      await new Promise((r) => setTimeout(r, delayMs));
      return StreamingServer.create({ baseUrl, tokens, address: '127.0.0.1', port: 0, tlsCertFile: '', tlsKeyFile: '', idleTimeoutMs: 0, runtime, logger: silentLogger() });
    },
  });
  cleanups.push(() => listener.shutdown());
  return { listener, loads: () => loads };
}

async function execThrough(url: string): Promise<string> {
  const c = await TestSpdyClient.connect(url, V4);
  cleanups.push(() => void c.socket.destroy());
  const error = await c.open({ streamtype: 'error' });
  const stdout = await c.open({ streamtype: 'stdout' });
  await c.until(() => error.fin, 5000, 'the status');
  assert.equal(c.text(error), '{"metadata":{},"status":"Success"}');
  return c.text(stdout);
}

test('the server is not loaded at start; the first URL loads it, once, and the exec is served', async () => {
  const { listener, loads } = await listen();
  assert.match(listener.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  assert.equal(listener.loaded, false);
  assert.equal(loads(), 0);
  const url = listener.urlFor(execReq);
  assert.ok(url.startsWith(`${listener.url}exec/`));
  assert.equal(await execThrough(url), 'ran echo hi');
  assert.equal(await execThrough(listener.urlFor(execReq)), 'ran echo hi');
  assert.equal(loads(), 1);
});

test('a connection that arrives while the server is still loading waits for it and is served in full', async () => {
  const { listener, loads } = await listen(300);
  // A token issued without loading (as a restarted kubelet's retry would present one).
  const url = `${listener.url}exec/${listener.tokens.insert(execReq)}`;
  assert.equal(listener.loaded, false);
  assert.equal(await execThrough(url), 'ran echo hi');
  assert.equal(loads(), 1);
});

test('a port that is taken fails the start, before anything is loaded', async () => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => blocker.close(() => r())));
  const port = (blocker.address() as net.AddressInfo).port;
  let loaded = false;
  await assert.rejects(
    StreamingListener.listen({
      address: '127.0.0.1',
      port,
      tls: false,
      logger: silentLogger(),
      load: async () => {
        loaded = true;
        throw new Error('not reached');
      },
    }),
    /EADDRINUSE/,
  );
  assert.equal(loaded, false);
});

test('a failed load drops the waiting connection and the next request loads again', async () => {
  let attempts = 0;
  const listener = await StreamingListener.listen({
    address: '127.0.0.1',
    port: 0,
    tls: false,
    logger: silentLogger(),
    async load(baseUrl, tokens) {
      if (++attempts === 1) throw new Error('transient');
      return StreamingServer.create({ baseUrl, tokens, address: '127.0.0.1', port: 0, tlsCertFile: '', tlsKeyFile: '', idleTimeoutMs: 0, runtime, logger: silentLogger() });
    },
  });
  cleanups.push(() => listener.shutdown());
  await assert.rejects(listener.server(), /transient/);
  assert.equal(await execThrough(listener.urlFor(execReq)), 'ran echo hi');
  assert.equal(attempts, 2);
});
