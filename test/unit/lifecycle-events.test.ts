/**
 * The sandbox and container services publish each committed change of state, in order, with
 * the pod's records as of then (service fakes: no root). The gRPC side is in
 * test/unit/cri-events-stream.test.ts, the real daemon in test/integration/container-events.test.ts.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { lifecycleHub, type LifecycleEvent } from '../../src/events/lifecycle.js';
import { stateChangeEvent } from '../../src/container/service.js';
import { containerConfig } from '../helpers/cri-messages.js';
import { containerService, makeService, pod, removeServiceDirs } from '../helpers/service-fakes.js';

afterEach(removeServiceDirs);

const appConfig = (name: string) => containerConfig({ metadata: { name, attempt: 0 }, image: { image: 'img' } });

async function setup() {
  const { svc, fakes, cfg } = await makeService();
  const containers = containerService(svc, cfg, fakes);
  fakes.layersUnpacked = true;
  const hub = lifecycleHub();
  svc.events = containers.events = hub;
  const sub = hub.subscribe();
  const seen: LifecycleEvent[] = [];
  /** The events published since the last call, as "type id-label". */
  const drain = async (label: (id: string) => string) => {
    const out: string[] = [];
    while (sub.pending > 0) {
      const e = (await sub.next()).value as LifecycleEvent;
      seen.push(e);
      out.push(`${e.type} ${label(e.containerId)}`);
    }
    return out;
  };
  return { svc, fakes, containers, hub, sub, seen, drain };
}

test('the whole lifecycle, in order: sandbox created/started, containers created/started/stopped/deleted, sandbox stopped/deleted', async () => {
  const { svc, fakes, containers, seen, drain } = await setup();
  const sandboxId = await svc.run(pod(), '');
  const names = new Map<string, string>([[sandboxId, 'pod']]);
  const label = (id: string) => names.get(id) ?? id;
  assert.deepEqual(await drain(label), ['created pod', 'started pod']);
  const podEvent = seen[0]!;
  assert.equal(podEvent.sandboxId, sandboxId, 'a sandbox event names the sandbox as its container');
  assert.equal(podEvent.sandbox?.state, 'ready');

  const a = await containers.create(sandboxId, appConfig('a'));
  names.set(a, 'a');
  await containers.start(a);
  const b = await containers.create(sandboxId, appConfig('b'));
  names.set(b, 'b');
  await containers.start(b);
  assert.deepEqual(await drain(label), ['created a', 'started a', 'created b', 'started b']);
  const startedB = seen.at(-1)!;
  assert.deepEqual(startedB.containers.map((r) => [r.metadata.name, r.state]), [['a', 'running'], ['b', 'running']], "the event carries every container of the pod, as of the event");
  assert.equal(startedB.sandbox?.id, sandboxId);

  // `a` exits by itself: noticed from the monitor's exit file alone, nobody asked for its status.
  fakes.exits.set(a, { code: 0, finishedAt: '123' });
  await containers.noticeExit(a);
  await containers.noticeExit(a); // a second notice of the same exit publishes nothing
  assert.deepEqual(await drain(label), ['stopped a']);
  assert.deepEqual(seen.at(-1)!.containers.find((r) => r.id === a)?.state, 'exited');

  await containers.stop(b, 0);
  await containers.remove(a);
  assert.deepEqual(await drain(label), ['stopped b', 'deleted a']);
  assert.deepEqual(seen.at(-1)!.containers.map((r) => r.metadata.name), ['b'], 'a deleted container is no longer among the statuses');

  await svc.stop(sandboxId);
  await svc.stop(sandboxId); // already stopped: no second STOPPED
  assert.deepEqual(await drain(label), ['stopped pod']);
  assert.equal(seen.at(-1)!.sandbox?.state, 'notready');
  await svc.remove(sandboxId);
  assert.deepEqual(await drain(label), ['deleted b', 'deleted pod']);
  const deleted = seen.at(-1)!;
  assert.equal(deleted.sandbox?.id, sandboxId, 'DELETED of a sandbox carries its last record (kubelet takes the pod from it)');
  assert.equal(deleted.sandbox?.state, 'notready');
  assert.deepEqual(deleted.containers, []);
});

test('removing a ready pod with a running container: container stopped and deleted, then the sandbox stopped and deleted', async () => {
  const { svc, containers, drain } = await setup();
  const sandboxId = await svc.run(pod(), '');
  const c = await containers.create(sandboxId, appConfig('c'));
  await containers.start(c);
  await drain((id) => id);
  await svc.remove(sandboxId);
  const label = (id: string) => (id === sandboxId ? 'pod' : id === c ? 'c' : id);
  assert.deepEqual(await drain(label), ['stopped c', 'deleted c', 'stopped pod', 'deleted pod']);
});

test('a failed start is STOPPED; a sweep finds exits nobody reported; a failing publisher does not fail the call', async () => {
  const { svc, fakes, containers, drain } = await setup();
  const sandboxId = await svc.run(pod(), '');
  const x = await containers.create(sandboxId, appConfig('x'));
  fakes.failures.containerStart = true;
  await assert.rejects(containers.start(x));
  fakes.failures.containerStart = false;
  const y = await containers.create(sandboxId, appConfig('y'));
  await containers.start(y);
  fakes.exits.set(y, { code: 2, finishedAt: '5' });
  await containers.noticeExits();
  const label = (id: string) => (id === x ? 'x' : id === y ? 'y' : 'pod');
  assert.deepEqual(await drain(label), ['created pod', 'started pod', 'created x', 'stopped x', 'created y', 'started y', 'stopped y']);

  containers.events = { publish: () => { throw new Error('listener on fire'); } };
  const z = await containers.create(sandboxId, appConfig('z'));
  await containers.start(z);
  assert.equal((await containers.status(z)).state, 'running');
});

test('stateChangeEvent: only changes of state are events', () => {
  assert.equal(stateChangeEvent(undefined, 'created'), 'created');
  assert.equal(stateChangeEvent('created', 'running'), 'started');
  assert.equal(stateChangeEvent('running', 'exited'), 'stopped');
  assert.equal(stateChangeEvent('created', 'exited'), 'stopped');
  assert.equal(stateChangeEvent('running', 'running'), null, 'a resources update is no event');
  assert.equal(stateChangeEvent(undefined, 'exited'), null);
  assert.equal(stateChangeEvent('exited', 'exited'), null);
});

test('a ready pod whose namespaces go (its pause died) is announced STOPPED once; its Stop then announces nothing more', async () => {
  const { svc, fakes, drain } = await setup();
  const sandboxId = await svc.run(pod({ pid: 'CONTAINER' }), ''); // pinned: its namespaces are held by the pins
  await drain((id) => id);
  await svc.noticeDeadSandboxes();
  assert.deepEqual(await drain(() => 'pod'), [], 'alive: nothing to announce');
  const [pin] = [...fakes.pins];
  fakes.pins.delete(pin!); // the namespace is gone
  await svc.noticeDeadSandboxes();
  await svc.noticeDeadSandboxes();
  assert.deepEqual(await drain(() => 'pod'), ['stopped pod']);
  await svc.stop(sandboxId);
  await svc.remove(sandboxId);
  assert.deepEqual(await drain(() => 'pod'), ['deleted pod']);
});
