/**
 * GetContainerEvents over a real CriServer (in-process, on a unix socket in /tmp) with a hub
 * fed by the test: messages in order and in CRI shape, subscribers removed when the client
 * cancels, a client that never reads dropped without holding the daemon, shutdown ending the
 * stream, and the other server-streaming RPCs still UNIMPLEMENTED.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { CriServer } from '../../src/cri/server.js';
import { call, createRuntimeClient } from '../../src/cri/client.js';
import { encodeMessage } from '../../src/cri/proto.js';
import { eventsHandlers } from '../../src/cri/events-rpc.js';
import { EventHub } from '../../src/events/hub.js';
import type { LifecycleEvent, LifecycleEventType } from '../../src/events/lifecycle.js';
import type { SandboxRecord } from '../../src/sandbox/record.js';
import type { ContainerRecord } from '../../src/container/record.js';
import { silentLogger } from '../../src/util/log.js';
import { waitFor } from '../helpers/wait.js';

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
});

const sandbox = (id: string, state: SandboxRecord['state'] = 'ready') =>
  ({
    id,
    state,
    metadata: { name: `pod-${id}`, uid: `uid-${id}`, namespace: 'ns', attempt: 0 },
    createdAt: '1000',
    network: { podIp: '10.0.0.2', additionalIps: [], attachments: [] },
    config: { labels: { app: 'x' }, annotations: {} },
    runtimeHandler: 'runc',
  }) as unknown as SandboxRecord;

const container = (id: string, sandboxId: string, state: ContainerRecord['state']) =>
  ({
    id,
    sandboxId,
    state,
    name: `c-${id}`,
    metadata: { name: `c-${id}`, attempt: 0 },
    imageRef: 'busybox',
    imageId: 'sha256:abc',
    createdAt: '2000',
    startedAt: '3000',
    finishedAt: '0',
    exitCode: 0,
    reason: '',
    message: '',
    logPath: '',
    config: { labels: {}, annotations: {}, mounts: [] },
  }) as unknown as ContainerRecord;

let seq = 0;
const event = (type: LifecycleEventType, sb: SandboxRecord, containers: ContainerRecord[], containerId = containers[0]?.id ?? sb.id): LifecycleEvent => ({
  type,
  containerId,
  sandboxId: sb.id,
  at: String(1_000_000 + seq++),
  sandbox: sb,
  containers,
});

async function startServer(opts: { queueLimit?: number } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-events-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = path.join(dir, 'corral.sock');
  const hub = new EventHub<LifecycleEvent>({ queueLimit: opts.queueLimit ?? 64, maxSubscribers: 8 });
  // liveState: a ready record is READY (no pause process to check in a unit test).
  const sandboxes = { liveState: async (r: SandboxRecord) => (r.state === 'ready' ? 'SANDBOX_READY' as const : 'SANDBOX_NOTREADY' as const) };
  const server = await CriServer.start({
    socketPath,
    logger: silentLogger(),
    runtimeHandlers: { Version: async () => ({ version: '0.1.0', runtimeName: 'corral', runtimeVersion: 't', runtimeApiVersion: 'v1' }) },
    imageHandlers: {},
    runtimeStreamHandlers: eventsHandlers(hub, sandboxes, { linuxResourcesOf: () => null }),
  });
  cleanups.push(() => server.shutdown(0));
  const client = createRuntimeClient(socketPath);
  cleanups.push(() => client.close());
  return { server, hub, socketPath, client };
}

function grpcFrame(message: Buffer): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(message.length, 1);
  return Buffer.concat([prefix, message]);
}

/** A GetContainerEvents call read by the test: every message, and the end (status) once it comes. */
function subscribe(client: grpc.Client) {
  const stream = (client as any).GetContainerEvents({}) as grpc.ClientReadableStream<any>;
  const messages: any[] = [];
  stream.on('data', (m) => messages.push(m));
  const ended = new Promise<grpc.StatusObject | grpc.ServiceError>((resolve) => {
    stream.on('error', resolve);
    stream.on('status', (s) => s.code === grpc.status.OK && resolve(s));
  });
  return { stream, messages, ended };
}

test('a subscriber gets every event in order, in CRI shape: the pod status and its containers statuses', async () => {
  const { hub, client } = await startServer();
  const sub = subscribe(client);
  await waitFor(() => hub.subscriberCount === 1, { what: 'the subscription' });
  const sb = sandbox('s1');
  const c1 = container('c1', 's1', 'created');
  const c1Running = { ...c1, state: 'running' } as ContainerRecord;
  const c1Exited = { ...c1, state: 'exited', exitCode: 3, reason: 'Error' } as ContainerRecord;
  hub.publish(event('created', sb, [], 's1'));
  hub.publish(event('started', sb, [], 's1'));
  hub.publish(event('created', sb, [c1]));
  hub.publish(event('started', sb, [c1Running]));
  hub.publish(event('stopped', sb, [c1Exited]));
  hub.publish(event('deleted', sb, [], 'c1'));
  const stopped = sandbox('s1', 'notready');
  hub.publish(event('stopped', stopped, [], 's1'));
  hub.publish(event('deleted', stopped, [], 's1'));
  await waitFor(() => sub.messages.length === 8, { what: '8 events' });
  assert.deepEqual(
    sub.messages.map((m) => `${m.containerEventType} ${m.containerId} ${m.podSandboxStatus?.state} [${m.containersStatuses.map((s: any) => s.state).join(',')}]`),
    [
      'CONTAINER_CREATED_EVENT s1 SANDBOX_READY []',
      'CONTAINER_STARTED_EVENT s1 SANDBOX_READY []',
      'CONTAINER_CREATED_EVENT c1 SANDBOX_READY [CONTAINER_CREATED]',
      'CONTAINER_STARTED_EVENT c1 SANDBOX_READY [CONTAINER_RUNNING]',
      'CONTAINER_STOPPED_EVENT c1 SANDBOX_READY [CONTAINER_EXITED]',
      'CONTAINER_DELETED_EVENT c1 SANDBOX_READY []',
      'CONTAINER_STOPPED_EVENT s1 SANDBOX_NOTREADY []',
      'CONTAINER_DELETED_EVENT s1 SANDBOX_NOTREADY []',
    ],
  );
  const stoppedC1 = sub.messages[4];
  assert.equal(stoppedC1.podSandboxStatus.metadata.uid, 'uid-s1', 'kubelet finds the pod by the metadata uid');
  assert.equal(stoppedC1.podSandboxStatus.network.ip, '10.0.0.2');
  assert.equal(stoppedC1.containersStatuses[0].exitCode, 3);
  assert.equal(stoppedC1.createdAt, String(1_000_000 + seq - 4), 'createdAt: when the change was committed (ns)');
  sub.stream.cancel();
});

test('many subscribers each get everything; one that cancels is removed from the hub', async () => {
  const { hub, client, socketPath } = await startServer();
  const other = createRuntimeClient(socketPath);
  cleanups.push(() => other.close());
  const subs = [subscribe(client), subscribe(client), subscribe(other)];
  await waitFor(() => hub.subscriberCount === 3, { what: '3 subscriptions' });
  const sb = sandbox('s2');
  for (let i = 0; i < 20; i++) hub.publish(event('created', sb, [container(`c${i}`, 's2', 'created')]));
  for (const s of subs) await waitFor(() => s.messages.length === 20, { what: 'all 20 events on every subscriber' });
  for (const s of subs) assert.deepEqual(s.messages.map((m) => m.containerId), Array.from({ length: 20 }, (_, i) => `c${i}`));
  subs[0]!.stream.cancel();
  await waitFor(() => hub.subscriberCount === 2, { what: 'the cancelled subscriber to be removed' });
  subs[1]!.stream.cancel();
  subs[2]!.stream.cancel();
  await waitFor(() => hub.subscriberCount === 0, { what: 'no subscriber left' });
  // A connection that just goes away (a killed client) takes its subscription with it.
  const session = http2.connect('http://localhost', { createConnection: () => net.connect(socketPath) });
  session.on('error', () => undefined);
  const req = session.request({ ':method': 'POST', ':path': '/runtime.v1.RuntimeService/GetContainerEvents', 'content-type': 'application/grpc', te: 'trailers' });
  req.on('error', () => undefined);
  req.end(grpcFrame(encodeMessage('GetEventsRequest', {})));
  await waitFor(() => hub.subscriberCount === 1, { what: 'the raw subscription' });
  session.destroy();
  await waitFor(() => hub.subscriberCount === 0, { what: 'a dropped connection to remove its subscriber' });
});

test('a client that never reads: it is dropped once it falls behind, its stream is reset, and the daemon answers meanwhile', async () => {
  const { hub, socketPath, client } = await startServer({ queueLimit: 32 });
  // A raw HTTP/2 client with a small flow-control window that never reads what it is sent.
  const session = http2.connect('http://localhost', { createConnection: () => net.connect(socketPath), settings: { initialWindowSize: 1024 } });
  session.on('error', () => undefined);
  cleanups.push(() => session.destroy());
  const req = session.request({ ':method': 'POST', ':path': '/runtime.v1.RuntimeService/GetContainerEvents', 'content-type': 'application/grpc', te: 'trailers' });
  req.on('error', () => undefined);
  req.pause();
  req.end(grpcFrame(encodeMessage('GetEventsRequest', {})));
  const closed = new Promise<number>((resolve) => req.on('close', () => resolve(req.rstCode ?? 0)));
  await waitFor(() => hub.subscriberCount === 1, { what: 'the raw subscription' });

  const reader = subscribe(client); // a reader that keeps up, beside it
  await waitFor(() => hub.subscriberCount === 2, { what: 'the reading subscription' });
  // Big messages (labels) so the 1 KiB window and the server's buffers fill quickly.
  const labels = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`label-${i}`, 'x'.repeat(50)]));
  const sb = { ...sandbox('s3'), config: { labels, annotations: {} } } as unknown as SandboxRecord;
  for (let i = 0; i < 200; i++) {
    const t0 = performance.now();
    hub.publish(event('started', sb, [container(`c${i}`, 's3', 'running')]));
    assert.ok(performance.now() - t0 < 50, 'publishing never waits for a subscriber');
    // The reading subscriber keeps up (it gets each event before the next is published)...
    await waitFor(() => reader.messages.length === i + 1, { intervalMs: 1, what: `the reader to get event ${i}` });
    // ...and the daemon answers other calls all along.
    if (i % 20 === 0) assert.equal((await call(client, 'Version', {})).runtimeName, 'corral');
  }
  // The one that never reads fell behind (its window, the server's buffer, then its queue filled up).
  assert.equal(hub.subscriberCount, 1, 'the stuck subscriber is dropped');
  await waitFor(() => reader.messages.length === 200, { what: 'the reading subscriber to get all 200 events' });
  assert.equal((await call(client, 'Version', {})).runtimeName, 'corral');
  reader.stream.cancel();
});

test('a slow reader that falls behind is told so: RESOURCE_EXHAUSTED, with what to do', async () => {
  const { hub, client } = await startServer({ queueLimit: 2 });
  const sub = subscribe(client);
  await waitFor(() => hub.subscriberCount === 1, { what: 'the subscription' });
  sub.stream.pause(); // stops reading for a while
  const big = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`l${i}`, 'y'.repeat(200)]));
  const sb = { ...sandbox('s4'), config: { labels: big, annotations: {} } } as unknown as SandboxRecord;
  for (let i = 0; i < 100; i++) hub.publish(event('started', sb, [container(`c${i}`, 's4', 'running')]));
  await waitFor(() => hub.subscriberCount === 0, { what: 'the slow subscriber to be dropped' });
  sub.stream.resume(); // reads again within the grace period: it gets the status
  const end = (await sub.ended) as grpc.ServiceError;
  assert.equal(end.code, grpc.status.RESOURCE_EXHAUSTED);
  assert.match(end.details, /fell more than 2 events behind .* subscribe again and relist/);
});

test('shutdown ends open streams at once (UNAVAILABLE) instead of waiting out the grace period; other streaming RPCs stay UNIMPLEMENTED', async () => {
  const { hub, client, server } = await startServer();
  for (const name of ['StreamPodSandboxes', 'StreamContainers', 'StreamContainerStats', 'StreamPodSandboxStats', 'StreamPodSandboxMetrics']) {
    const s = (client as any)[name]({});
    const err: any = await new Promise((resolve) => {
      s.on('error', resolve);
      s.on('data', () => undefined);
    });
    assert.equal(err.code, grpc.status.UNIMPLEMENTED, name);
  }
  const sub = subscribe(client);
  await waitFor(() => hub.subscriberCount === 1, { what: 'the subscription' });
  const t0 = Date.now();
  await server.shutdown(10_000);
  assert.ok(Date.now() - t0 < 5_000, `shutdown took ${Date.now() - t0} ms`);
  const end = (await sub.ended) as grpc.ServiceError;
  assert.equal(end.code, grpc.status.UNAVAILABLE);
  assert.equal(hub.subscriberCount, 0);
});
