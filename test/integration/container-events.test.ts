/**
 * GetContainerEvents against a real daemon, over the real gRPC client: the whole lifecycle of
 * a pod and a container that exits by itself (STOPPED from conmon's exit file, with nobody
 * asking for its status), in order; and a subscriber that never reads while 50 events happen
 * does not keep the daemon from answering, nor the other subscriber from getting them.
 * (crictl v1.26.1 has no `events` command: `crictl events --help` says "No help topic".)
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { TestDaemon, podConfig } from '../helpers/daemon.js';
import type { TestRegistry } from '../helpers/registry.js';
import { startDaemonWithBusybox } from '../helpers/busybox-daemon.js';
import { call, createRuntimeClient } from '../../src/cri/client.js';
import { encodeMessage } from '../../src/cri/proto.js';
import { waitFor } from '../helpers/wait.js';

let reg: TestRegistry;
let d: TestDaemon;
let image: string;
const clients: grpc.Client[] = [];
const sessions: http2.ClientHttp2Session[] = [];

before(async () => {
  ({ reg, d, image } = await startDaemonWithBusybox({ tag: 'events' }));
});

after(async () => {
  for (const s of sessions) s.destroy();
  for (const c of clients) c.close();
  await d?.cleanup();
  await reg?.stop();
});

function client(): grpc.Client {
  const c = createRuntimeClient(d.socket);
  clients.push(c);
  return c;
}

/**
 * A GetContainerEvents subscription on `c`. Calls made later on the same client travel on the
 * same connection after it, and the server subscribes as the call arrives: nothing they cause
 * can be missed.
 */
function subscribe(c: grpc.Client) {
  const stream = (c as any).GetContainerEvents({}) as grpc.ClientReadableStream<any>;
  const events: any[] = [];
  let error: grpc.ServiceError | undefined;
  stream.on('data', (m) => events.push(m));
  stream.on('error', (e: grpc.ServiceError) => (error = e));
  return { stream, events, error: () => error };
}

const short = (t: string) => t.replace(/^CONTAINER_(\w+)_EVENT$/, '$1');

test('a subscriber sees the whole lifecycle in order: pod created/started, container created/started, its own exit as STOPPED, deleted, pod stopped/deleted', async () => {
  const c = client();
  const sub = subscribe(c);
  const cfg = podConfig();
  const { podSandboxId } = await call(c, 'RunPodSandbox', { config: cfg }, { deadlineMs: 60_000 });
  const { containerId } = await call(c, 'CreateContainer', {
    podSandboxId,
    config: { metadata: { name: 'quitter', attempt: 0 }, image: { image }, command: ['sh', '-c', 'sleep 1; exit 3'], logPath: 'quitter.log', linux: {} },
    sandboxConfig: cfg,
  }, { deadlineMs: 60_000 });
  await call(c, 'StartContainer', { containerId }, { deadlineMs: 60_000 });
  const label = (id: string) => (id === podSandboxId ? 'pod' : id === containerId ? 'ctr' : `other:${id.slice(0, 8)}`);
  const mine = () => sub.events.filter((e) => e.containerId === podSandboxId || e.containerId === containerId);

  // Nobody asks for the container's status: its exit must come from conmon's exit file alone.
  await waitFor(() => mine().some((e) => e.containerId === containerId && short(e.containerEventType) === 'STOPPED'), {
    timeoutMs: 30_000,
    what: 'STOPPED of the container that exits by itself',
  });
  const stoppedEvent = mine().find((e) => e.containerId === containerId && short(e.containerEventType) === 'STOPPED');
  assert.equal(stoppedEvent.podSandboxStatus.id, podSandboxId);
  assert.equal(stoppedEvent.podSandboxStatus.metadata.uid, cfg.metadata.uid, 'kubelet finds the pod by the status metadata');
  assert.equal(stoppedEvent.podSandboxStatus.state, 'SANDBOX_READY');
  const status = stoppedEvent.containersStatuses.find((s: any) => s.id === containerId);
  assert.deepEqual([status.state, status.exitCode, status.reason], ['CONTAINER_EXITED', 3, 'Error']);
  assert.ok(BigInt(stoppedEvent.createdAt) > BigInt(status.finishedAt) - 5_000_000_000n, 'createdAt is a time in ns');

  await call(c, 'RemoveContainer', { containerId });
  await call(c, 'StopPodSandbox', { podSandboxId });
  await call(c, 'RemovePodSandbox', { podSandboxId });
  await waitFor(() => mine().length >= 8, { timeoutMs: 10_000, what: 'the events of the removals' });
  assert.deepEqual(
    mine().map((e) => `${short(e.containerEventType)} ${label(e.containerId)}`),
    ['CREATED pod', 'STARTED pod', 'CREATED ctr', 'STARTED ctr', 'STOPPED ctr', 'DELETED ctr', 'STOPPED pod', 'DELETED pod'],
  );
  const deleted = mine().at(-1);
  assert.equal(deleted.podSandboxStatus?.id, podSandboxId, 'DELETED of the pod still carries its status');
  assert.equal(deleted.podSandboxStatus.state, 'SANDBOX_NOTREADY');
  const times = mine().map((e) => BigInt(e.createdAt));
  assert.deepEqual([...times].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), times, 'createdAt never goes back');
  assert.equal(sub.error(), undefined);
  sub.stream.cancel();
});

test('a subscriber that never reads while 50 events happen: the daemon keeps answering and the reading subscriber gets them all', async () => {
  // A raw HTTP/2 client with a small flow-control window that never reads what it is sent.
  const session = http2.connect('http://localhost', { createConnection: () => net.connect(d.socket), settings: { initialWindowSize: 1024 } });
  sessions.push(session);
  session.on('error', () => undefined);
  const stuck = session.request({ ':method': 'POST', ':path': '/runtime.v1.RuntimeService/GetContainerEvents', 'content-type': 'application/grpc', te: 'trailers' });
  stuck.on('error', () => undefined);
  stuck.pause();
  const body = encodeMessage('GetEventsRequest', {});
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  body.copy(frame, 5);
  stuck.end(frame);

  const c = client();
  const reader = subscribe(c);
  const cfg = podConfig();
  const { podSandboxId } = await call(c, 'RunPodSandbox', { config: cfg }, { deadlineMs: 60_000 });
  let slowest = 0;
  const timed = async <T>(p: Promise<T>) => {
    const t0 = Date.now();
    const r = await p;
    slowest = Math.max(slowest, Date.now() - t0);
    return r;
  };
  // 2 pod events, then 12 containers × created/started/stopped/deleted: 50 events.
  for (let i = 0; i < 12; i++) {
    const { containerId } = await call(c, 'CreateContainer', {
      podSandboxId,
      config: { metadata: { name: `c${i}`, attempt: 0 }, image: { image }, command: ['sleep', '1000'], logPath: `c${i}.log`, linux: {} },
      sandboxConfig: cfg,
    }, { deadlineMs: 60_000 });
    await call(c, 'StartContainer', { containerId }, { deadlineMs: 60_000 });
    // The daemon answers other calls (on another connection) all along.
    assert.equal((await timed(d.rpc('Version', {}, 10_000))).runtimeName, 'corral');
    await timed(d.rpc('ListContainers', {}, 10_000));
    await call(c, 'StopContainer', { containerId, timeout: 0 }, { deadlineMs: 60_000 });
    await call(c, 'RemoveContainer', { containerId }, { deadlineMs: 60_000 });
  }
  const ofPod = () => reader.events.filter((e) => e.podSandboxStatus?.id === podSandboxId);
  await waitFor(() => ofPod().length >= 50, { timeoutMs: 20_000, what: '50 events on the reading subscriber' });
  assert.deepEqual(ofPod().slice(2, 6).map((e) => short(e.containerEventType)), ['CREATED', 'STARTED', 'STOPPED', 'DELETED']);
  assert.ok(slowest < 5_000, `Version/ListContainers answered within ${slowest} ms while a subscriber read nothing`);
  assert.equal(reader.error(), undefined);
  // The stuck subscriber is still just a subscriber: dropping its connection frees it.
  session.destroy();
  assert.equal((await d.rpc('Version', {}, 10_000)).runtimeName, 'corral');
  reader.stream.cancel();
  await call(c, 'RemovePodSandbox', { podSandboxId });
});

test("a pod whose pause process dies is announced STOPPED (the daemon's sweep), and its status says NOTREADY", async () => {
  const c = client();
  const sub = subscribe(c);
  const cfg = podConfig({ linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'POD', ipc: 'POD' } } } });
  const { podSandboxId } = await call(c, 'RunPodSandbox', { config: cfg }, { deadlineMs: 60_000 });
  const { info } = await call(c, 'PodSandboxStatus', { podSandboxId, verbose: true });
  const pid = JSON.parse(info.info).pid as number;
  assert.ok(pid > 0, 'the pause process');
  process.kill(pid, 'SIGKILL');
  const ofPod = () => sub.events.filter((e) => e.containerId === podSandboxId).map((e) => short(e.containerEventType));
  await waitFor(() => ofPod().includes('STOPPED'), { timeoutMs: 20_000, what: 'STOPPED of the pod whose pause died' });
  const stopped = sub.events.find((e) => e.containerId === podSandboxId && short(e.containerEventType) === 'STOPPED');
  assert.equal(stopped.podSandboxStatus.state, 'SANDBOX_NOTREADY');
  await call(c, 'StopPodSandbox', { podSandboxId });
  await call(c, 'RemovePodSandbox', { podSandboxId });
  await waitFor(() => ofPod().includes('DELETED'), { timeoutMs: 10_000, what: 'DELETED of the pod' });
  assert.deepEqual(ofPod(), ['CREATED', 'STARTED', 'STOPPED', 'DELETED'], 'STOPPED once: its Stop did not announce it again');
  sub.stream.cancel();
});
