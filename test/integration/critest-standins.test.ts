/**
 * The stand-ins for the e2e-test-images critest runs (test/helpers/critest-images.ts) do
 * what critest's specs rely on, checked through Corral without critest itself (which CI may
 * lack): the busybox shell runs what PATH finds (a masked /bin/ls is "Permission denied"),
 * pgrep and ipcs work; the nonewprivs program gains root through its setuid bit unless
 * no_new_privs is set; the nginx stand-in is a process named nginx whose command line says
 * "master process" and whose PID is in /var/run/nginx.pid.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { TestDaemon, podConfig } from '../helpers/daemon.js';
import { pushImage, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { buildLayer, busyboxImage } from '../helpers/test-images.js';
import { critestBusyboxImage, nginxStandIn, nonewprivsImage } from '../helpers/critest-images.js';
import { startContainer } from '../helpers/busybox-daemon.js';
import { eventually } from '../helpers/wait.js';
import { createImageClient, call } from '../../src/cri/client.js';

let reg: TestRegistry;
let d: TestDaemon;
const image = (name: string) => `${reg.host}/standin/${name}:1`;

before(async () => {
  reg = await startRegistry();
  const nginx = nginxStandIn('/tmp');
  await pushImage(reg, 'standin/busybox', '1', await critestBusyboxImage());
  await pushImage(reg, 'standin/nonewprivs', '1', await nonewprivsImage());
  await pushImage(reg, 'standin/nginx', '1', await busyboxImage({ allApplets: true, extraLayers: [await buildLayer(nginx.layer)], config: nginx.config }));
  d = new TestDaemon();
  await d.start();
  const images = createImageClient(d.socket);
  try {
    for (const name of ['busybox', 'nonewprivs', 'nginx']) await call(images, 'PullImage', { image: { image: image(name) } }, { deadlineMs: 60_000 });
  } finally {
    images.close();
  }
});

after(async () => {
  try {
    await d?.cleanup();
  } finally {
    await reg?.stop();
  }
});

async function exec(containerId: string, cmd: string[]) {
  const r = await d.rpc('ExecSync', { containerId, cmd, timeout: 10 });
  return { exitCode: r.exitCode ?? 0, stdout: Buffer.from(r.stdout ?? '').toString(), stderr: Buffer.from(r.stderr ?? '').toString() };
}

async function withPod(fn: (pod: { podSandboxId: string; sandboxConfig: any }) => Promise<void>) {
  const sandboxConfig = podConfig();
  const { podSandboxId } = await d.rpc('RunPodSandbox', { config: sandboxConfig });
  try {
    await fn({ podSandboxId, sandboxConfig });
  } finally {
    await d.rpc('RemovePodSandbox', { podSandboxId }).catch(() => undefined);
    await fs.rm(sandboxConfig.logDirectory, { recursive: true, force: true });
  }
}

test('busybox stand-in: its sh runs the masked /bin/ls and fails as upstream busybox does; pgrep and ipcs work', async () => {
  await withPod(async (pod) => {
    const id = await startContainer(d, pod, image('busybox'), 'masked', ['sleep', '3600'], { linux: { securityContext: { maskedPaths: ['/bin/ls'] } } });
    const ls = await exec(id, ['/bin/sh', '-c', 'ls']);
    assert.notEqual(ls.exitCode, 0);
    assert.equal(ls.stderr, '/bin/sh: ls: Permission denied\n', 'critest MaskedPaths expects exactly this');
    const pgrep = await exec(id, ['sh', '-c', 'pgrep sleep']);
    assert.deepEqual([pgrep.exitCode, pgrep.stdout.trim(), pgrep.stderr], [0, '1', ''], 'the container\'s sleep is its PID 1');
    const ipcs = await exec(id, ['ipcs', '-m']);
    assert.equal(ipcs.exitCode, 0, ipcs.stderr);
    assert.match(ipcs.stdout, /Shared Memory Segments/);
  });
});

for (const noNewPrivs of [false, true]) {
  test(`nonewprivs stand-in, no_new_privs ${noNewPrivs}: run as uid 1000, its setuid-root program prints effective uid ${noNewPrivs ? 1000 : 0}`, async () => {
    await withPod(async (pod) => {
      const id = await startContainer(d, pod, image('nonewprivs'), 'nnp', [], { linux: { securityContext: { noNewPrivs, runAsUser: { value: 1000 } } } });
      await eventually(async () => assert.equal((await d.rpc('ContainerStatus', { containerId: id })).status.state, 'CONTAINER_EXITED'), { timeoutMs: 10_000, what: 'nnp to exit' });
      const log = await fs.readFile(path.join(pod.sandboxConfig.logDirectory, 'nnp.log'), 'utf8');
      assert.match(log, new RegExp(` stdout F Effective uid: ${noNewPrivs ? 1000 : 0}\n`), log);
    });
  });
}

test('nginx stand-in: a process named nginx, PID 1 of its container, with "master process" in its command line and its PID in /var/run/nginx.pid', async () => {
  await withPod(async (pod) => {
    const id = await startContainer(d, pod, image('nginx'), 'nginx', []);
    const seen = await eventually(async () => {
      const r = await exec(id, ['sh', '-c', 'cat /var/run/nginx.pid; pidof nginx; tr "\\0" " " < /proc/1/cmdline']);
      assert.equal(r.exitCode, 0, r.stderr);
      return r.stdout.split('\n');
    }, { timeoutMs: 10_000, what: 'the nginx stand-in to run' });
    assert.equal(seen[0], '1', 'the pid file names the server');
    assert.equal(seen[1], '1', 'pidof nginx finds it');
    assert.match(seen[2] ?? '', /^nginx: master process /);
  });
});
