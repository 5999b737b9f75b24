/**
 * WebSocket port-forward (v4) has no way for a client to end its side of a connection, so
 * the pod's end must end it: a runtime that, like corral-streamhelper, returns only once both
 * directions are done must still let the session close when the pod closes the connection.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { WebSocket } from 'ws';
import { StreamingServer } from '../../src/streaming/server.js';
import { silentLogger } from '../../src/util/log.js';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

test('WebSocket port-forward: the pod closing the connection ends the session, with everything it sent', async () => {
  const pod = net.createServer((c) => c.end('bye from the pod'));
  await new Promise<void>((r) => pod.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => pod.close(() => r())));
  const port = (pod.address() as net.AddressInfo).port;
  const server = await StreamingServer.start({
    address: '127.0.0.1', port: 0, tlsCertFile: '', tlsKeyFile: '', idleTimeoutMs: 0, logger: silentLogger(),
    runtime: {
      exec: async () => 0,
      attach: async () => undefined,
      // As the native helper: each direction's end is passed on; done when both are.
      async portForward(_pod, p, stream) {
        const sock = net.connect(p, '127.0.0.1');
        stream.pipe(sock);
        sock.pipe(stream);
        await Promise.all([once(sock, 'close'), once(stream, 'end')]);
      },
    },
  });
  cleanups.push(() => server.shutdown());
  const ws = new WebSocket(server.urlFor({ kind: 'portforward', podSandboxId: 'p1', ports: [port] }).replace(/^http/, 'ws'), ['v4.channel.k8s.io']);
  cleanups.push(() => ws.terminate());
  const data: Buffer[] = [];
  ws.on('message', (m: Buffer) => m[0] === 0 && data.push(m.subarray(1)));
  const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
  const outcome = await Promise.race([closed, new Promise<string>((r) => setTimeout(() => r('still open after 5 s'), 5000).unref())]);
  assert.equal(outcome, 1000);
  assert.equal(Buffer.concat(data).subarray(2).toString(), 'bye from the pod');
});
