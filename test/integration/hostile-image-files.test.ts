/**
 * Hostile files in images and from clients, end to end through a real daemon: an image
 * whose /etc/passwd is a FIFO, one whose /etc/passwd is a symlink to a host file, a
 * localhost seccomp profile that is a FIFO, and an image config over the 4 MiB cap.
 * Each call is answered promptly with a clear status, the daemon keeps serving (a normal
 * container still runs), and it still shuts down promptly on SIGTERM.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { TestDaemon, podConfig } from '../helpers/daemon.js';
import { pushImage, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { buildImage, buildLayer, busyboxEntries, busyboxImage } from '../helpers/test-images.js';
import { createImageClient, call } from '../../src/cri/client.js';

let reg: TestRegistry;
let d: TestDaemon;
let images: ReturnType<typeof createImageClient>;
let daemonStopped = false;
const ref = { busybox: '', fifoPasswd: '', hugePasswd: '', symlinkPasswd: '', hugeConfig: '', mistypedConfig: '' };
let hostPasswd = '';
let fifoProfile = '';

const pull = (image: string, deadlineMs = 60_000) => call<any>(images, 'PullImage', { image: { image } }, { deadlineMs });

before(async () => {
  reg = await startRegistry();
  d = new TestDaemon();
  await d.start();
  images = createImageClient(d.socket);
  // Host files an image or a client points at: a passwd with a user only the host knows, a FIFO profile.
  hostPasswd = path.join(d.dir, 'host-passwd');
  await fs.writeFile(hostPasswd, 'intruder:x:4242:4242::/:/bin/sh\n');
  fifoProfile = path.join(d.dir, 'profile-fifo.json');
  execFileSync('mkfifo', [fifoProfile]);

  const base = await buildLayer(busyboxEntries());
  const over = async (entry: object) => buildLayer([{ path: 'etc/', type: 'directory' }, entry as any]);
  const images_ = {
    busybox: await busyboxImage(),
    fifoPasswd: buildImage({ layers: [base, await over({ path: 'etc/passwd', type: 'fifo', mode: 0o644 })], config: { User: 'app' } }),
    // 5 MiB of real-looking entries: over the 4 MiB cap of an image's /etc/passwd.
    hugePasswd: buildImage({ layers: [base, await over({ path: 'etc/passwd', content: hugePasswdText() })], config: { User: 'app' } }),
    symlinkPasswd: buildImage({ layers: [base, await over({ path: 'etc/passwd', type: 'symlink', linkname: hostPasswd })], config: { User: 'intruder' } }),
    // 5 MiB of labels: over the 4 MiB cap of an image's JSON documents.
    hugeConfig: buildImage({ layers: [base], configExtra: { padding: 'x'.repeat(5 << 20) } }),
    // Env as a string where a list of strings belongs.
    mistypedConfig: buildImage({ layers: [base], config: { Env: 'PATH=/bin' } as never }),
  };
  for (const [k, img] of Object.entries(images_)) {
    await pushImage(reg, `hostile/${k.toLowerCase()}`, '1', img);
    ref[k as keyof typeof ref] = `${reg.host}/hostile/${k.toLowerCase()}:1`;
  }
  for (const k of ['busybox', 'fifoPasswd', 'hugePasswd', 'symlinkPasswd', 'mistypedConfig'] as const) await pull(ref[k]);
});

after(async () => {
  if (process.env.DEBUG_LOG) console.log(await d.logTail(150));
  images?.close();
  if (d && !daemonStopped) {
    // If a blocked daemon ignores SIGTERM (the defect), do not hang the suite: kill it.
    const timer = setTimeout(() => d.pid && process.kill(d.pid, 'SIGKILL'), 15_000);
    await d.cleanup();
    clearTimeout(timer);
  } else await d?.cleanup();
  await reg?.stop();
});

function hugePasswdText(): string {
  const lines = ['root:x:0:0:root:/root:/bin/sh\n'];
  for (let uid = 2000, size = 0; size < 5 << 20; uid++) size += lines[lines.push(`user${uid}:x:${uid}:${uid}:generated user ${uid}:/home/user${uid}:/bin/sh\n`) - 1]!.length;
  return lines.join('');
}

const containerConfig = (name: string, image: string, extra: object = {}) => ({
  metadata: { name, attempt: 0 },
  image: { image },
  command: ['sh', '-c', 'exec sleep 1000'],
  logPath: `${name}.log`,
  linux: {},
  ...extra,
});

test('an image config over the 4 MiB cap is refused at pull, before it is downloaded, with a clear INVALID_ARGUMENT', async () => {
  let configHex = '';
  await assert.rejects(pull(ref.hugeConfig), (e: any) => {
    assert.equal(e.code, status.INVALID_ARGUMENT, e.message);
    const m = /hostile\/hugeconfig:1: its config: blob sha256:([0-9a-f]{64}) is \d+ bytes, more than the 4194304-byte limit/.exec(e.message);
    assert.ok(m, e.message);
    configHex = m[1]!;
    assert.match(e.message, /cannot be used/);
    return true;
  });
  // Refused from the manifest's descriptor: the 5 MiB blob never reached the content store.
  const blobs = await fs.readdir(path.join(d.rootDir, 'images', 'blobs', 'sha256')).catch(() => [] as string[]);
  assert.ok(!blobs.some((f) => f.startsWith(configHex)), `the config blob (or a partial of it) is in the store: ${blobs.join(' ')}`);
  const listed = (await call<any>(images, 'ListImages', {}, { deadlineMs: 10_000 })).images.map((i: any) => i.repoTags).flat();
  assert.ok(!listed.includes(ref.hugeConfig), 'the image is not registered');
});

test('FIFO /etc/passwd and FIFO seccomp profiles: every call answers at once, the daemon keeps serving and stops on SIGTERM', async () => {
  const cfg = podConfig();
  const podId = (await d.rpc('RunPodSandbox', { config: cfg })).podSandboxId;
  const started = Date.now();
  // More concurrent calls than libuv has pool threads (4): blocking opens would starve the daemon.
  const hostile = [
    ...Array.from({ length: 6 }, (_, i) => d.rpc('CreateContainer', { podSandboxId: podId, config: containerConfig(`fifo-${i}`, ref.fifoPasswd, i % 2 ? { linux: { securityContext: { runAsUser: { value: 1000 } } } } : {}), sandboxConfig: cfg }, 20_000)),
    ...Array.from({ length: 2 }, (_, i) =>
      d.rpc('CreateContainer', { podSandboxId: podId, config: containerConfig(`seccomp-${i}`, ref.busybox, { linux: { securityContext: { seccomp: { profileType: 'Localhost', localhostRef: fifoProfile } } } }), sandboxConfig: cfg }, 20_000),
    ),
    d.rpc('RunPodSandbox', { config: podConfig({ linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'POD', ipc: 'POD' }, seccompProfilePath: `localhost/${fifoProfile}` } } }) }, 20_000),
  ];
  const outcomes = await Promise.allSettled(hostile);
  const elapsed = Date.now() - started;
  for (const [i, o] of outcomes.entries()) {
    assert.equal(o.status, 'rejected', `call ${i} should be refused`);
    const e = (o as PromiseRejectedResult).reason;
    assert.equal(e.code, status.INVALID_ARGUMENT, `call ${i}: ${e.message}`);
    // Even a numeric user: runc opens /etc/passwd in the container and would block there.
    if (i < 6) assert.match(e.message, /the image's \/etc\/passwd: is a FIFO, not a regular file: the OCI runtime would block reading it/);
    else assert.match(e.message, /cannot read the seccomp profile .*profile-fifo\.json: is a FIFO, not a regular file/);
  }
  assert.ok(elapsed < 15_000, `the refusals took ${elapsed} ms`);

  // The daemon still serves: Version, lists, and a normal container runs.
  assert.ok((await d.rpc('Version', {}, 5000)).runtimeName);
  assert.deepEqual((await d.rpc('ListPodSandbox', {}, 5000)).items.map((p: any) => p.id), [podId], 'the refused RunPodSandbox left no pod');
  assert.deepEqual((await d.rpc('ListContainers', {}, 5000)).containers, [], 'no refused container is left');
  const ok = (await d.rpc('CreateContainer', { podSandboxId: podId, config: containerConfig('normal', ref.busybox), sandboxConfig: cfg })).containerId;
  await d.rpc('StartContainer', { containerId: ok });
  assert.equal((await d.rpc('ExecSync', { containerId: ok, cmd: ['id', '-u'], timeout: 10 })).stdout.toString().trim(), '0');
  // A passwd over the cap is unreadable: a name cannot be looked up, a numeric user runs.
  // (The names of the refused creates were released: fifo-0 is free again.)
  await assert.rejects(d.rpc('CreateContainer', { podSandboxId: podId, config: containerConfig('fifo-0', ref.hugePasswd), sandboxConfig: cfg }, 20_000), (e: any) => {
    assert.equal(e.code, status.INVALID_ARGUMENT, e.message);
    assert.match(e.message, /cannot look up user "app": the image's \/etc\/passwd: is \d+ bytes, more than the 4194304-byte limit/);
    return true;
  });
  const numeric = (await d.rpc('CreateContainer', { podSandboxId: podId, config: containerConfig('fifo-0', ref.hugePasswd, { linux: { securityContext: { runAsUser: { value: 1000 } } } }), sandboxConfig: cfg })).containerId;
  await d.rpc('StartContainer', { containerId: numeric });
  assert.equal((await d.rpc('ExecSync', { containerId: numeric, cmd: ['id', '-u'], timeout: 10 })).stdout.toString().trim(), '1000', 'a numeric user needs no /etc/passwd');

  await d.rpc('RemovePodSandbox', { podSandboxId: podId });
  const t0 = Date.now();
  const killer = setTimeout(() => d.pid && process.kill(d.pid, 'SIGKILL'), 15_000);
  const code = await d.stopDaemon('SIGTERM');
  clearTimeout(killer);
  daemonStopped = true;
  assert.ok(Date.now() - t0 < 15_000, `SIGTERM took ${Date.now() - t0} ms`);
  assert.equal(code, 0, await d.logTail());
  await d.spawnDaemon(); // for the next test and cleanup
  daemonStopped = false;
});

test('an image /etc/passwd symlinked to a host file resolves inside the image, never reading the host file', async () => {
  const cfg = podConfig();
  const podId = (await d.rpc('RunPodSandbox', { config: cfg })).podSandboxId;
  await assert.rejects(d.rpc('CreateContainer', { podSandboxId: podId, config: containerConfig('intruder', ref.symlinkPasswd), sandboxConfig: cfg }, 20_000), (e: any) => {
    assert.equal(e.code, status.INVALID_ARGUMENT, e.message);
    assert.match(e.message, /user "intruder" is not in the image's \/etc\/passwd/);
    return true;
  });
  await d.rpc('RemovePodSandbox', { podSandboxId: podId });
});

test('an image config whose fields have the wrong types refuses the container with INVALID_ARGUMENT naming the field', async () => {
  const cfg = podConfig();
  const podId = (await d.rpc('RunPodSandbox', { config: cfg })).podSandboxId;
  await assert.rejects(d.rpc('CreateContainer', { podSandboxId: podId, config: containerConfig('mistyped', ref.mistypedConfig), sandboxConfig: cfg }, 20_000), (e: any) => {
    assert.equal(e.code, status.INVALID_ARGUMENT, e.message);
    assert.match(e.message, /hostile\/mistypedconfig:1: its config: config\.Env must be a list of strings, so this image cannot be used/);
    return true;
  });
  // Refused before anything was made: the same name is free for a good image.
  const ok = (await d.rpc('CreateContainer', { podSandboxId: podId, config: containerConfig('mistyped', ref.busybox), sandboxConfig: cfg })).containerId;
  assert.match(ok, /^[0-9a-f]{64}$/);
  await d.rpc('RemovePodSandbox', { podSandboxId: podId });
});
