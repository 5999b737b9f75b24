/**
 * Restarts: pods outlive a graceful daemon stop and are found again with their state and
 * IPs; a sandbox half-created when the daemon was killed is rolled back on the next start;
 * an unreadable record never stops the daemon.
 */
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { TestDaemon, hostTraces, podConfig, vethCount } from '../helpers/daemon.js';
import { isNetnsPinned } from '../../src/network/netns.js';
import { waitFor } from '../helpers/wait.js';
import { podCgroupDirs, podPauseProcesses } from '../helpers/pod-pause.js';

// runc, but `create` announces itself and then takes two seconds: a window to kill the daemon in.
const SLOW_CREATE_RUNTIME = `#!/bin/bash
dir=$(dirname "$0")
for a in "$@"; do
  if [ "$a" = create ]; then touch "$dir/create-started"; sleep 2; runc "$@" </dev/null >"$dir/create.out" 2>&1; rc=$?; echo $rc > "$dir/create-done"; exit $rc; fi
done
exec runc "$@"
`;

const d = new TestDaemon({
  // type "vm": a pause container through the OCI runtime (non-VM handlers run Corral's own pause).
  extraToml: (t) => `[runtimes.runc]\npath = "runc"\n[runtimes.slow]\npath = "${t.binDir}/slow-runtime"\ntype = "vm"\n`,
});

before(async () => {
  await d.writeScript('bin/slow-runtime', SLOW_CREATE_RUNTIME);
  await d.start();
});
after(async () => {
  await d.cleanup();
});
afterEach(async () => {
  const { items } = await d.rpc('ListPodSandbox', {});
  for (const i of items) await d.rpc('RemovePodSandbox', { podSandboxId: i.id }).catch(() => {});
});

const pausePod = () => podConfig({ linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'POD', ipc: 'POD' } } } });


test('SIGTERM exits 0, pods keep running, and a restarted daemon finds them with state and IPs', async () => {
  const { podSandboxId: pauseId } = await d.rpc('RunPodSandbox', { config: pausePod() });
  const pinnedConfig = podConfig();
  const { podSandboxId: pinnedId } = await d.rpc('RunPodSandbox', { config: pinnedConfig });
  const before = await Promise.all([pauseId, pinnedId].map((id) => d.rpc('PodSandboxStatus', { podSandboxId: id, verbose: true })));
  const pausePid: number = JSON.parse(before[0].info.info).pid;

  assert.equal(await d.stopDaemon('SIGTERM'), 0, 'graceful shutdown exits 0');
  process.kill(pausePid, 0); // still alive: throws if not
  assert.ok(await isNetnsPinned(JSON.parse(before[1].info.info).netnsPath), 'pinned netns survives the daemon');

  await d.spawnDaemon();
  for (const [i, id] of [pauseId, pinnedId].entries()) {
    const st = await d.rpc('PodSandboxStatus', { podSandboxId: id });
    assert.equal(st.status.state, 'SANDBOX_READY');
    assert.equal(st.status.network.ip, before[i].status.network.ip);
    assert.deepEqual(st.status.metadata, before[i].status.metadata);
  }
  // A retry of the same pod after the restart still gets the same ID (names were re-reserved).
  const again = await d.rpc('RunPodSandbox', { config: pinnedConfig });
  assert.equal(again.podSandboxId, pinnedId);

  process.kill(pausePid, 'SIGKILL');
  await waitFor(async () => (await d.rpc('PodSandboxStatus', { podSandboxId: pauseId })).status.state === 'SANDBOX_NOTREADY', { timeoutMs: 15_000, what: 'pause to die' });
  const vethsBefore = await vethCount(d);
  await d.rpc('StopPodSandbox', { podSandboxId: pauseId });
  await d.rpc('RemovePodSandbox', { podSandboxId: pauseId });
  await d.rpc('RemovePodSandbox', { podSandboxId: pinnedId });
  assert.equal(await vethCount(d), vethsBefore - 2);
  const traces = await hostTraces(d);
  assert.deepEqual([traces.netns, traces.reservations, traces.runtimeContainers], [[], [], []]);
});

test('kill -9 in the middle of RunPodSandbox: the next start rolls the half-created sandbox back', async () => {
  const vethsBefore = await vethCount(d);
  const started = path.join(d.binDir, 'create-started');
  const done = path.join(d.binDir, 'create-done');
  await fs.rm(started, { force: true });
  await fs.rm(done, { force: true });
  const run = d.rpc('RunPodSandbox', { config: pausePod(), runtimeHandler: 'slow' }).then(
    () => 'answered',
    () => 'failed',
  );
  await waitFor(() => fs.access(started).then(() => true, () => false), { timeoutMs: 15_000, what: 'runtime create to start' });
  // By now the netns is pinned and wired (network first) and the record says "creating".
  const mid = await hostTraces(d);
  assert.equal(mid.netns.length, 1);
  assert.equal(mid.reservations.length, 1);
  assert.equal(await d.stopDaemon('SIGKILL'), null);
  assert.equal(await run, 'failed');
  // The runtime call the daemon started finishes on its own and leaves a created container behind.
  await waitFor(() => fs.access(done).then(() => true, () => false), { timeoutMs: 15_000, what: 'the orphaned runtime create to finish' });
  const createOut = await fs.readFile(path.join(d.binDir, 'create.out'), 'utf8');
  assert.equal((await hostTraces(d)).runtimeContainers.length, 1, `orphaned create: ${createOut}`);

  await d.spawnDaemon();
  assert.deepEqual((await d.rpc('ListPodSandbox', {})).items, [], 'the half-created sandbox is not surfaced');
  const traces = await hostTraces(d);
  assert.deepEqual(traces.netns, [], 'netns removed');
  assert.deepEqual(traces.reservations, [], 'IP released');
  assert.deepEqual(traces.runtimeContainers, [], 'runtime container deleted');
  assert.deepEqual(traces.mounts.filter((m) => m.includes('/sandboxes/')), [], 'shm unmounted');
  assert.equal(await vethCount(d), vethsBefore);
  assert.deepEqual(await fs.readdir(path.join(d.rootDir, 'sandboxes')), []);
  const logs = await d.logLines();
  assert.ok(logs.some((l) => /half-created sandbox .* rolled back/.test(l.msg)), 'the rollback is logged');
});

test("kill -9 after Corral's own pause started, before the pod was ready: the next start kills the pause and removes its cgroups", async () => {
  const { podSandboxId: id } = await d.rpc('RunPodSandbox', { config: pausePod() });
  const info = JSON.parse((await d.rpc('PodSandboxStatus', { podSandboxId: id, verbose: true })).info.info);
  assert.equal(info.infraMode, 'init');
  const pausePid: number = info.pid;
  assert.deepEqual(await podPauseProcesses(id), [pausePid]);
  assert.ok((await podCgroupDirs(id)).length > 0, 'the pause has cgroups of its own');
  assert.equal(await d.stopDaemon('SIGKILL'), null);
  // The record as a crash between the pause's start and the final save leaves it.
  const file = path.join(d.rootDir, 'sandboxes', id, 'sandbox.json');
  const rec = JSON.parse(await fs.readFile(file, 'utf8'));
  await fs.writeFile(file, JSON.stringify({ ...rec, state: 'creating', pid: 0, pidStartTime: '' }));
  process.kill(pausePid, 0); // the pause outlived the daemon

  await d.spawnDaemon();
  assert.deepEqual((await d.rpc('ListPodSandbox', {})).items, [], 'the half-created sandbox is not surfaced');
  assert.deepEqual(await podPauseProcesses(id), [], 'the pause is killed');
  assert.deepEqual(await podCgroupDirs(id), [], 'its cgroups are removed');
  const traces = await hostTraces(d);
  assert.deepEqual([traces.netns, traces.reservations], [[], []]);
});

test('a Run whose client deadline expires keeps going; the retry gets the same sandbox', async () => {
  const config = pausePod();
  await assert.rejects(d.rpc('RunPodSandbox', { config, runtimeHandler: 'slow' }, 500), (e: any) => e.code === status.DEADLINE_EXCEEDED);
  const { podSandboxId } = await d.rpc('RunPodSandbox', { config, runtimeHandler: 'slow' });
  assert.equal((await d.rpc('PodSandboxStatus', { podSandboxId })).status.state, 'SANDBOX_READY');
  const { items } = await d.rpc('ListPodSandbox', {});
  assert.deepEqual(items.map((i: any) => i.id), [podSandboxId], 'exactly one sandbox for the name');
});

test('an unreadable record is reported and skipped; the daemon serves the others', async () => {
  const { podSandboxId } = await d.rpc('RunPodSandbox', { config: podConfig() });
  const bogus = path.join(d.rootDir, 'sandboxes', 'e'.repeat(64));
  await fs.mkdir(bogus, { recursive: true });
  await fs.writeFile(path.join(bogus, 'sandbox.json'), '{ not json');
  try {
    assert.equal(await d.stopDaemon('SIGTERM'), 0);
    await d.spawnDaemon();
    const { items } = await d.rpc('ListPodSandbox', {});
    assert.deepEqual(items.map((i: any) => i.id), [podSandboxId]);
    assert.ok((await d.logLines()).some((l) => l.msg === 'unreadable sandbox record skipped' && l.dir === bogus));
  } finally {
    await fs.rm(bogus, { recursive: true, force: true });
  }
});
