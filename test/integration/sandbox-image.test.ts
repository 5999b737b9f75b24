/**
 * A sandbox image from a registry instead of the built-in one: pulled on the first
 * RunPodSandbox, pinned, its layers mounted per pod through overlayfs as the pause
 * container's root, kept while a pod uses them even after RemoveImage, collected after.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { TestDaemon, hostTraces, podConfig } from '../helpers/daemon.js';
import { pushImage, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { buildImage, buildLayer, busyboxImage } from '../helpers/test-images.js';
import { createImageClient, call } from '../../src/cri/client.js';
import { nativeBinary } from '../../src/util/paths.js';

let reg: TestRegistry;
let d: TestDaemon;
let images: ReturnType<typeof createImageClient>;
let pauseRef: string;
let pauseId: string;
const irpc = (method: 'ImageStatus' | 'RemoveImage' | 'ListImages' | 'PullImage', req: object) => call<any>(images, method, req, { deadlineMs: 60_000 });

before(async () => {
  reg = await startRegistry();
  // A pause image the way registry.k8s.io/pause is made: one binary, run as its entrypoint.
  const busybox = await busyboxImage();
  const pauseLayer = await buildLayer([{ path: 'pause', content: readFileSync(nativeBinary('corral-pause')), mode: 0o755 }]);
  const pause = buildImage({ layers: [busybox.layers[0]!, pauseLayer], config: { Entrypoint: ['/pause'], Cmd: [] } });
  await pushImage(reg, 'test/pause', '3.9', pause);
  pauseRef = `${reg.host}/test/pause:3.9`;
  pauseId = pause.config.digest;
  d = new TestDaemon({ extraToml: `sandbox_image = "${pauseRef}"\n` });
  await d.start();
  images = createImageClient(d.socket);
});

after(async () => {
  images?.close();
  if (d) {
    for (const i of (await d.rpc('ListPodSandbox', {}).catch(() => ({ items: [] }))).items) await d.rpc('RemovePodSandbox', { podSandboxId: i.id });
    await d.cleanup();
  }
  await reg?.stop();
});

/** A pod that shares one PID namespace needs a pause process, so a sandbox container. */
const pausePod = () => podConfig({ linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'POD', ipc: 'POD' } } } });
const snapshotsDir = () => path.join(d.rootDir, 'images', 'snapshots');

test('the first pod pulls the sandbox image and runs its pause from an overlay of its layers; the image is pinned', async () => {
  assert.equal((await irpc('ImageStatus', { image: { image: pauseRef } })).image, null, 'not pulled before a pod needs it');
  const { podSandboxId: id } = await d.rpc('RunPodSandbox', { config: pausePod() });
  const st = await d.rpc('PodSandboxStatus', { podSandboxId: id, verbose: true });
  assert.equal(st.status.state, 'SANDBOX_READY');
  const info = JSON.parse(st.info.info);
  assert.equal(info.infraMode, 'pause');
  const img = (await irpc('ImageStatus', { image: { image: pauseRef } })).image;
  assert.equal(img.id, pauseId);
  assert.equal(img.pinned, true, 'kubelet must not garbage-collect the sandbox image');

  const rootfs = path.join(d.stateDir, 'sandboxes', id, 'rootfs');
  const mount = (await fs.readFile('/proc/self/mountinfo', 'utf8')).split('\n').find((l) => l.split(' ')[4] === rootfs);
  assert.ok(mount, `overlay mounted at ${rootfs}`);
  assert.match(mount!, / - overlay overlay .*lowerdir=/);
  const pid = info.pid as number;
  assert.ok(pid > 0);
  assert.equal(await fs.readlink(`/proc/${pid}/exe`).then((e) => path.basename(e)), 'pause');
  assert.ok((await fs.stat(`/proc/${pid}/root/bin/busybox`)).isFile(), "the pause sees the image's lower layer");
  const bundle = JSON.parse(await fs.readFile(path.join(d.stateDir, 'sandboxes', id, 'bundle', 'config.json'), 'utf8'));
  assert.deepEqual(bundle.process.args, ['/pause'], "the image's entrypoint");
  assert.equal(bundle.root.path, rootfs);
  assert.equal(bundle.annotations['io.kubernetes.cri.image-name'], pauseRef);

  // Removing the image while the pod runs: the image is gone, its layers stay for the pod.
  await irpc('RemoveImage', { image: { image: pauseRef } });
  assert.equal((await irpc('ImageStatus', { image: { image: pauseRef } })).image, null);
  assert.equal((await fs.readdir(snapshotsDir())).length, 2, 'layers in use are kept');
  assert.equal((await d.rpc('PodSandboxStatus', { podSandboxId: id })).status.state, 'SANDBOX_READY');

  await d.rpc('StopPodSandbox', { podSandboxId: id });
  assert.ok(!(await fs.readFile('/proc/self/mountinfo', 'utf8')).includes(rootfs), 'overlay unmounted at Stop');
  await d.rpc('RemovePodSandbox', { podSandboxId: id });
  assert.deepEqual(await fs.readdir(snapshotsDir()), [], 'released layers of a removed image are collected at once');
  const traces = await hostTraces(d);
  assert.deepEqual(traces.mounts.filter((m) => m.includes(id)), []);
});

test('two pods share the unpacked layers; each has its own overlay', async () => {
  const a = (await d.rpc('RunPodSandbox', { config: pausePod() })).podSandboxId;
  const b = (await d.rpc('RunPodSandbox', { config: pausePod() })).podSandboxId;
  assert.equal((await fs.readdir(snapshotsDir())).length, 2);
  const mounts = (await fs.readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => / - overlay /.test(l) && l.includes(d.stateDir));
  assert.equal(mounts.length, 2);
  for (const id of [a, b]) await d.rpc('RemovePodSandbox', { podSandboxId: id });
  assert.equal((await fs.readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => l.includes(d.stateDir) && / - overlay /.test(l)).length, 0);
  await irpc('RemoveImage', { image: { image: pauseRef } });
});

test('a sandbox image that cannot be pulled fails RunPodSandbox naming the image, and leaves nothing', async () => {
  const bad = new TestDaemon({ extraToml: `sandbox_image = "${reg.host}/test/no-such-pause:1"\n` });
  await bad.start();
  try {
    await assert.rejects(bad.rpc('RunPodSandbox', { config: pausePod() }), (e: any) => e.code === status.NOT_FOUND && e.details.includes(`sandbox image ${reg.host}/test/no-such-pause:1`));
    assert.deepEqual((await bad.rpc('ListPodSandbox', {})).items, []);
    const traces = await hostTraces(bad);
    assert.deepEqual([traces.netns, traces.mounts, traces.reservations, traces.runtimeContainers], [[], [], [], []]);
    // The name is free again: the same pod runs once the image exists.
    await pushImage(reg, 'test/no-such-pause', '1', buildImage({ layers: [await buildLayer([{ path: 'pause', content: readFileSync(nativeBinary('corral-pause')), mode: 0o755 }])], config: { Entrypoint: ['/pause'], Cmd: [] } }));
    const { podSandboxId } = await bad.rpc('RunPodSandbox', { config: pausePod() });
    await bad.rpc('RemovePodSandbox', { podSandboxId });
  } finally {
    await bad.cleanup();
  }
});
