/**
 * Races on one pod against the real daemon (runc, CNI bridge, pinned namespaces): Stop or
 * Remove arriving while Run is between steps (as kubelet does after a Run deadline), and
 * CreateContainer racing RemovePodSandbox. Each iteration checks that what answered
 * "stopped" or "removed" holds nothing; the end checks the host and, after a restart,
 * that no record comes back.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { TestDaemon, hostTraces, podConfig, vethCount } from '../helpers/daemon.js';
import type { TestRegistry } from '../helpers/registry.js';
import { startDaemonWithBusybox } from '../helpers/busybox-daemon.js';

let reg: TestRegistry;
let d: TestDaemon;
let image: string;
let vethsBefore = 0;

before(async () => {
  ({ reg, d, image } = await startDaemonWithBusybox());
  vethsBefore = await vethCount(d);
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
});

const ITERATIONS = 12;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const podShapes = [
  { network: 'POD', pid: 'POD', ipc: 'POD' }, // a pause container
  { network: 'POD', pid: 'CONTAINER', ipc: 'POD' }, // pinned namespaces only
];
const pod = (i: number) => podConfig({ linux: { securityContext: { namespaceOptions: podShapes[i % podShapes.length] } } });

/**
 * The ID of the pod a Run in flight is creating. Status and List do not show a pod being
 * created, so read it where it first appears: its record directory (written at Run's first step).
 */
async function idOfRunInFlight(run: Promise<unknown>): Promise<string | undefined> {
  let done = false;
  run.then(() => (done = true), () => (done = true));
  const dir = path.join(d.rootDir, 'sandboxes');
  for (;;) {
    const [id] = await fs.readdir(dir).catch(() => [] as string[]);
    if (id) return id;
    if (done) return undefined;
    await sleep(1);
  }
}

/** Nothing of this pod is left on the host: no pause, no netns pin, no state dir. */
async function assertPodHoldsNothing(id: string, what: string) {
  const traces = await hostTraces(d);
  assert.deepEqual(traces.runtimeContainers.filter((c) => c === id), [], `${what}: no runtime container of the pod`);
  assert.deepEqual(traces.netns.filter((n) => n.includes(id)), [], `${what}: no netns pin of the pod`);
  assert.deepEqual(traces.mounts.filter((m) => m.includes(id)), [], `${what}: no mount of the pod`);
}

test('Stop arriving while Run is between steps: both answer OK, and the pod is stopped with nothing held', async () => {
  for (let i = 0; i < ITERATIONS; i++) {
    const config = pod(i);
    const run = d.rpc('RunPodSandbox', { config });
    const id = await idOfRunInFlight(run);
    assert.ok(id, 'Run wrote its record');
    await sleep((i * 13) % 40); // land on different steps of Run
    const [ran, stopped] = await Promise.allSettled([run, d.rpc('StopPodSandbox', { podSandboxId: id })]);
    assert.equal(ran.status, 'fulfilled', `Run: ${ran.status === 'rejected' ? (ran.reason as Error).message : ''}`);
    assert.equal(stopped.status, 'fulfilled', `Stop: ${stopped.status === 'rejected' ? (stopped.reason as Error).message : ''}`);
    assert.equal((ran as PromiseFulfilledResult<any>).value.podSandboxId, id);
    const st = await d.rpc('PodSandboxStatus', { podSandboxId: id, verbose: true });
    assert.equal(st.status.state, 'SANDBOX_NOTREADY', `iteration ${i}: stopped, not ready`);
    const res = JSON.parse(st.info.info).resources;
    assert.deepEqual({ pins: res.pins, cniAttached: res.cniAttached, container: res.container }, { pins: [], cniAttached: false, container: false });
    await assertPodHoldsNothing(id, `iteration ${i} after Stop`);
    assert.equal((await hostTraces(d)).reservations.length, 0, `iteration ${i}: the IP is released`);
    await d.rpc('RemovePodSandbox', { podSandboxId: id });
  }
});

test('Remove arriving while Run is between steps: the pod is gone with everything it had', async () => {
  for (let i = 0; i < ITERATIONS; i++) {
    const run = d.rpc('RunPodSandbox', { config: pod(i) });
    const id = await idOfRunInFlight(run);
    assert.ok(id);
    await sleep((i * 11) % 40);
    const [ran, removed] = await Promise.allSettled([run, d.rpc('RemovePodSandbox', { podSandboxId: id })]);
    assert.equal(ran.status, 'fulfilled', `Run: ${ran.status === 'rejected' ? (ran.reason as Error).message : ''}`);
    assert.equal(removed.status, 'fulfilled', `Remove: ${removed.status === 'rejected' ? (removed.reason as Error).message : ''}`);
    await assert.rejects(d.rpc('PodSandboxStatus', { podSandboxId: id }), (e: any) => e.code === status.NOT_FOUND);
    await assertPodHoldsNothing(id, `iteration ${i} after Remove`);
    assert.deepEqual(await fs.readdir(path.join(d.rootDir, 'sandboxes')), [], `iteration ${i}: no record left`);
  }
});

test('CreateContainer (and StartContainer) racing RemovePodSandbox: the container fails cleanly or goes with its pod', async () => {
  let created = 0;
  for (let i = 0; i < ITERATIONS; i++) {
    const config = pod(i);
    const { podSandboxId } = await d.rpc('RunPodSandbox', { config });
    // Even iterations: Create first, Remove lands during it. Odd ones: Remove first, Create lands during it.
    const createFirst = i % 2 === 0;
    let removal: Promise<unknown> | undefined;
    if (!createFirst) {
      removal = d.rpc('RemovePodSandbox', { podSandboxId });
      await sleep((i * 7) % 30);
    }
    const container = (async () => {
      const { containerId } = await d.rpc('CreateContainer', {
        podSandboxId,
        config: { metadata: { name: 'app', attempt: 0 }, image: { image }, command: ['sleep', '1000'], linux: {} },
        sandboxConfig: config,
      });
      created++;
      await d.rpc('StartContainer', { containerId });
      return containerId as string;
    })();
    if (createFirst) {
      await sleep((i * 17) % 60);
      removal = d.rpc('RemovePodSandbox', { podSandboxId });
    }
    const [made, removed] = await Promise.allSettled([container, removal!]);
    assert.equal(removed.status, 'fulfilled', `Remove: ${removed.status === 'rejected' ? (removed.reason as Error).message : ''}`);
    if (made.status === 'rejected') {
      const e = made.reason as any;
      assert.ok([status.NOT_FOUND, status.FAILED_PRECONDITION].includes(e.code), `a clean refusal, got ${e.code}: ${e.details}`);
    }
    assert.deepEqual((await d.rpc('ListContainers', {})).items ?? [], [], `iteration ${i}: no container outlives its pod`);
    await assertPodHoldsNothing(podSandboxId, `iteration ${i}`);
    assert.deepEqual((await hostTraces(d)).runtimeContainers, [], `iteration ${i}: no runtime container left`);
    assert.deepEqual(await fs.readdir(path.join(d.rootDir, 'containers')).catch(() => []), [], `iteration ${i}: no container record left`);
  }
  // Not an assertion on the race's outcome (timing decides), but the loop must have covered both.
  console.log(`# containers created before their pod's removal: ${created}/${ITERATIONS}`);
});

test('after the races: nothing leaked on the host, and nothing comes back after a restart', async () => {
  const traces = await hostTraces(d);
  assert.deepEqual(traces.netns, [], 'no netns pin');
  assert.deepEqual(traces.reservations, [], 'no IP reservation');
  assert.deepEqual(traces.runtimeContainers, [], 'no runtime container');
  assert.deepEqual(traces.mounts.filter((m) => m.includes('/sandboxes/') || m.includes('/containers/')), [], 'no pod or container mount');
  assert.equal(await vethCount(d), vethsBefore, 'no veth');
  assert.deepEqual(await fs.readdir(path.join(d.rootDir, 'sandboxes')).catch(() => []), [], 'no sandbox record');
  assert.deepEqual(await fs.readdir(path.join(d.stateDir, 'sandboxes')).catch(() => []), [], 'no sandbox state dir');
  await d.stopDaemon();
  await d.spawnDaemon();
  assert.deepEqual((await d.rpc('ListPodSandbox', {})).items ?? [], [], 'no pod resurrected');
  assert.deepEqual((await d.rpc('ListContainers', {})).items ?? [], [], 'no container resurrected');
});
