/**
 * The daemon TestDaemon starts (as every launcher does: src/cli/node-flags.ts) runs with the
 * daemon's environment: its /proc/<pid>/environ has our GLIBC_TUNABLES, and glibc takes it.
 * It is the daemon's own: a container's processes (and ExecSync's) see only their spec's.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { podConfig, type TestDaemon } from '../helpers/daemon.js';
import type { TestRegistry } from '../helpers/registry.js';
import { startContainer, startDaemonWithBusybox } from '../helpers/busybox-daemon.js';
import { tunablesInEffect } from '../helpers/glibc-tunables.js';
import { DAEMON_ENV, DAEMON_GLIBC_TUNABLES } from '../../src/cli/node-flags.js';

let reg: TestRegistry;
let d: TestDaemon;
let image: string;

before(async () => {
  ({ reg, d, image } = await startDaemonWithBusybox());
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
});

const environOf = (pid: number) => readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);

test('the daemon runs with DAEMON_ENV: GLIBC_TUNABLES in its environ, in effect for glibc', async () => {
  const environ = environOf(d.pid!);
  const value = (name: string) => environ.find((e) => e.startsWith(`${name}=`))?.slice(name.length + 1);
  for (const name of Object.keys(DAEMON_ENV)) assert.ok(value(name) !== undefined, `${name} is in the daemon's environment`);
  const tunables = value('GLIBC_TUNABLES')!;
  // Ours first; a GLIBC_TUNABLES of the test run's own would follow it.
  assert.ok(tunables === DAEMON_GLIBC_TUNABLES || tunables.startsWith(`${DAEMON_GLIBC_TUNABLES}:`), tunables);
  const effect = await tunablesInEffect(tunables);
  for (const [name, v] of DAEMON_GLIBC_TUNABLES.split(':').map((kv) => kv.split('=') as [string, string])) {
    if (process.env.GLIBC_TUNABLES?.includes(`${name}=`)) continue; // the user's own wins
    assert.equal(Number(effect.get(name)), Number(v), `${name} in effect`);
  }
});

test("a container's process and ExecSync get their spec's environment, not the daemon's", async () => {
  const config = podConfig();
  const { podSandboxId } = await d.rpc('RunPodSandbox', { config, runtimeHandler: '' });
  try {
    const id = await startContainer(d, { podSandboxId, sandboxConfig: config }, image, 'app', ['sleep', '100000']);
    const { containers } = await d.rpc('ListContainers', { filter: { id } });
    assert.equal(containers.length, 1);
    const r = await d.rpc('ExecSync', { containerId: id, cmd: ['sh', '-c', 'cat /proc/1/environ | tr "\\0" "\\n"; echo ---; env'], timeout: 10 });
    assert.equal(r.exitCode, 0, r.stderr?.toString());
    const out = r.stdout.toString();
    assert.match(out, /PATH=/, 'the environments are there to look at');
    for (const name of Object.keys(DAEMON_ENV)) assert.doesNotMatch(out, new RegExp(`^${name}=`, 'm'), `${name} leaked into the container:\n${out}`);
  } finally {
    await d.rpc('StopPodSandbox', { podSandboxId }).catch(() => {});
    await d.rpc('RemovePodSandbox', { podSandboxId }).catch(() => {});
  }
});
