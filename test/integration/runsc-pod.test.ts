/**
 * gVisor (runsc, Debian's package) as a `vm` runtime handler, end to end against the real
 * runsc: the sandbox in the pinned, pre-wired network namespace; containers in the pod;
 * ExecSync; logs; stop and remove; and no runsc process or state left behind, after a
 * Stop as after a failed Run. Skipped, saying why, when runsc is not installed.
 */
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { podConfig, hostTraces } from '../helpers/daemon.js';
import { startDaemonWithBusybox, startContainer, type BusyboxDaemon } from '../helpers/busybox-daemon.js';
import { execFile } from '../../src/util/exec.js';
import { findExecutable, packageRoot } from '../../src/util/paths.js';
import { runscProcessesOf } from '../../src/oci/runsc.js';
import { waitFor } from '../helpers/wait.js';
import { mkdtempSync } from 'node:fs';

const runsc = await findExecutable('runsc');
const skip = runsc ? false : 'runsc is not installed (apt-get install runsc; scripts/install-deps.sh does it)';

/** runsc, except that `start` fails while <failDir>/fail-start exists: a Run that fails after create. */
const failDir = mkdtempSync('/run/corral-runsc-fail-');
const failingRunsc = path.join(failDir, 'runsc-failstart');
const FAILING_RUNSC_SCRIPT = `#!/bin/sh
for a in "$@"; do
  if [ "$a" = start ] && [ -e '${failDir}/fail-start' ]; then echo 'forced start failure' >&2; exit 1; fi
done
exec runsc "$@"
`;

let env: BusyboxDaemon | undefined;
const d = () => env!.d;
const root = () => path.join(d().stateDir, 'runsc');
const untrustedRoot = () => path.join(d().stateDir, 'untrusted');
const failRoot = () => path.join(d().stateDir, 'runscfail');
const roots = () => [root(), untrustedRoot(), failRoot()];

/** Every runsc process on the host under this daemon's runsc roots (sandbox, gofer, exec waiters). */
async function runscProcesses(): Promise<string[]> {
  const r = await execFile('ps', ['-eo', 'pid=,args=']);
  return r.stdout
    .split('\n')
    .filter((l) => /runsc/.test(l) && roots().some((r) => l.includes(`root=${r}`) || l.includes(`root ${r}`)))
    .map((l) => l.trim());
}

/** Containers in runsc's state under the handler roots. */
async function runscState(): Promise<string[]> {
  const out: string[] = [];
  for (const r of roots()) {
    const l = await execFile('runsc', ['--root', r, 'list', '--quiet']);
    out.push(...l.stdout.split('\n').map((s) => s.trim()).filter((s) => s && s !== 'ID'));
  }
  return out;
}

before(async () => {
  if (skip) return;
  await fs.writeFile(failingRunsc, FAILING_RUNSC_SCRIPT, { mode: 0o755 });
  env = await startDaemonWithBusybox({
    tag: 'runsc',
    daemon: {
      extraToml: ['[runtimes.runc]', 'path = "runc"', '[runtimes.runsc]', 'path = "runsc"', 'type = "vm"', '[runtimes.untrusted]', 'path = "runsc"', 'type = "vm"', '[runtimes.runscfail]', `path = "${failingRunsc}"`, 'type = "vm"'].join('\n'),
    },
  });
});

afterEach(async () => {
  await fs.rm(path.join(failDir, 'fail-start'), { force: true });
  if (skip || !env) return;
  const { items } = await d().rpc('ListPodSandbox', {});
  for (const i of items) await d().rpc('RemovePodSandbox', { podSandboxId: i.id }).catch(() => {});
});

after(async () => {
  await fs.rm(failDir, { recursive: true, force: true });
  if (!env) return;
  if (process.env.CORRAL_TEST_LOG) await fs.copyFile(env.d.logFile, process.env.CORRAL_TEST_LOG).catch(() => {});
  try {
    // Whatever a failed test left in runsc's state.
    for (const r of roots()) {
      const l = await execFile('runsc', ['--root', r, 'list', '--quiet']).catch(() => undefined);
      for (const id of (l?.stdout ?? '').split('\n').map((s) => s.trim()).filter((s) => s && s !== 'ID')) {
        await execFile('runsc', ['--root', r, 'delete', '--force', id]).catch(() => {});
      }
    }
    // The processes: TestDaemon.cleanup kills every runsc process under the daemon's roots.
  } finally {
    await env.d.cleanup();
    await env.reg.stop();
  }
});

async function runPod(handler = 'runsc', overrides: Record<string, any> = {}) {
  const config = podConfig(overrides);
  const { podSandboxId } = await d().rpc('RunPodSandbox', { config, runtimeHandler: handler }, 120_000);
  return { podSandboxId: podSandboxId as string, sandboxConfig: config };
}

test('runsc pod: sandbox in the pinned netns, reachable on its IP from the host; containers, exec, logs, stop and remove leave nothing', { skip, timeout: 240_000 }, async () => {
  const pod = await runPod();
  const st = await d().rpc('PodSandboxStatus', { podSandboxId: pod.podSandboxId });
  assert.equal(st.status.state, 'SANDBOX_READY');
  const ip: string = st.status.network.ip;
  assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/);

  // A server in the pod (gVisor's own network stack), reached from the host on the pod IP.
  const server = await startContainer(d(), pod, env!.image, 'web', ['sh', '-c', 'echo hello-from-gvisor > /tmp/index.html && echo started && exec httpd -f -p 8080 -h /tmp']);
  await waitFor(async () => {
    const r = await execFile('wget', ['-q', '-T', '2', '-O', '-', `http://${ip}:8080/index.html`], { timeoutMs: 5_000 });
    return r.code === 0 && r.stdout.includes('hello-from-gvisor');
  }, { timeoutMs: 30_000, what: `http://${ip}:8080 answering from the runsc pod` });

  // ExecSync runs inside the sandbox's kernel: gVisor's uname, not the host's.
  const ex = await d().rpc('ExecSync', { containerId: server, cmd: ['sh', '-c', 'echo out; echo err >&2; dmesg | head -1; exit 3'], timeout: 30 });
  assert.equal(ex.exitCode, 3);
  assert.match(Buffer.from(ex.stdout).toString(), /^out\n/);
  assert.match(Buffer.from(ex.stdout).toString(), /gVisor/i, 'the command ran inside gVisor');
  assert.equal(Buffer.from(ex.stderr).toString(), 'err\n');

  // A second container of the pod shares its network (same sandbox): it reaches the server on localhost.
  const client = await startContainer(d(), pod, env!.image, 'client', ['sh', '-c', 'wget -q -O - http://127.0.0.1:8080/index.html; echo done']);
  await waitFor(async () => (await d().rpc('ContainerStatus', { containerId: client })).status.state === 'CONTAINER_EXITED', { timeoutMs: 30_000, what: 'client exited' });
  const cst = await d().rpc('ContainerStatus', { containerId: client });
  assert.equal(cst.status.exitCode, 0);
  const log = await fs.readFile(path.join(pod.sandboxConfig.logDirectory, 'client.log'), 'utf8');
  assert.match(log, /stdout F hello-from-gvisor/);
  assert.match(log, /stdout F done/);
  const serverLog = await fs.readFile(path.join(pod.sandboxConfig.logDirectory, 'web.log'), 'utf8');
  assert.match(serverLog, /stdout F started/);

  // Both containers and the sandbox are in runsc's state, and its processes run.
  const ids = await runscState();
  assert.ok(ids.includes(pod.podSandboxId) && ids.includes(server), `runsc list: ${ids.join(' ')}`);
  assert.ok((await runscProcessesOf(root(), pod.podSandboxId)).length > 0, 'the sandbox has runsc processes');

  await d().rpc('StopContainer', { containerId: server, timeout: 5 });
  assert.equal((await d().rpc('ContainerStatus', { containerId: server })).status.state, 'CONTAINER_EXITED');
  await d().rpc('StopPodSandbox', { podSandboxId: pod.podSandboxId });
  assert.deepEqual(await runscProcesses(), [], 'no runsc process after StopPodSandbox');
  await d().rpc('RemovePodSandbox', { podSandboxId: pod.podSandboxId });
  assert.deepEqual(await runscState(), []);
  assert.deepEqual(await runscProcesses(), []);
  const traces = await hostTraces(d());
  assert.deepEqual(traces.netns, []);
  assert.deepEqual(traces.reservations, []);
  assert.deepEqual(traces.mounts, []);
});

test('runsc: a Run that fails after create (start refused) leaves no runsc process, no runsc state, no netns', { skip, timeout: 180_000 }, async () => {
  await fs.writeFile(path.join(failDir, 'fail-start'), '');
  await assert.rejects(runPod('runscfail'), (e: any) => {
    assert.equal(e.code, status.INTERNAL);
    assert.match(e.details, /forced start failure/);
    return true;
  });
  assert.deepEqual((await d().rpc('ListPodSandbox', {})).items, [], 'the failed Run was rolled back completely');
  assert.deepEqual(await runscProcesses(), [], 'no runsc-sandbox or runsc-gofer left running');
  assert.deepEqual(await runscState(), [], 'no container left in runsc state');
  const traces = await hostTraces(d());
  assert.deepEqual(traces.netns, []);
  assert.deepEqual(traces.mounts, []);
});

test('runsc: the untrusted-workload annotation runs the pod with the "untrusted" handler (runsc)', { skip, timeout: 180_000 }, async () => {
  const pod = await runPod('', { annotations: { 'io.kubernetes.cri.untrusted-workload': 'true' } });
  const st = await d().rpc('PodSandboxStatus', { podSandboxId: pod.podSandboxId });
  assert.equal(st.status.runtimeHandler, 'untrusted');
  const ids = (await execFile('runsc', ['--root', untrustedRoot(), 'list', '--quiet'])).stdout;
  assert.match(ids, new RegExp(pod.podSandboxId), 'the sandbox runs under the untrusted handler\'s runsc root');
  const c = await startContainer(d(), pod, env!.image, 'sleeper', ['sleep', '300']);
  const ex = await d().rpc('ExecSync', { containerId: c, cmd: ['sh', '-c', 'echo in-untrusted'], timeout: 30 });
  assert.equal(ex.exitCode, 0);
  assert.equal(Buffer.from(ex.stdout).toString(), 'in-untrusted\n');
  await d().rpc('StopPodSandbox', { podSandboxId: pod.podSandboxId });
  assert.equal((await d().rpc('ContainerStatus', { containerId: c })).status.state, 'CONTAINER_EXITED');
  assert.deepEqual(await runscProcesses(), [], 'StopPodSandbox left no runsc process');
  await d().rpc('RemovePodSandbox', { podSandboxId: pod.podSandboxId });
  assert.deepEqual(await runscState(), []);
});

test('runsc: ExecSync past its timeout is killed inside the sandbox and answers DEADLINE_EXCEEDED', { skip, timeout: 180_000 }, async () => {
  const pod = await runPod();
  const c = await startContainer(d(), pod, env!.image, 'sleeper', ['sleep', '300']);
  const t0 = Date.now();
  await assert.rejects(d().rpc('ExecSync', { containerId: c, cmd: ['sleep', '100'], timeout: 2 }), (e: any) => e.code === status.DEADLINE_EXCEEDED);
  assert.ok(Date.now() - t0 < 30_000, 'answered soon after the deadline');
  const ps = await d().rpc('ExecSync', { containerId: c, cmd: ['ps', '-o', 'args'], timeout: 30 });
  assert.doesNotMatch(Buffer.from(ps.stdout).toString(), /sleep 100/, 'the timed-out command no longer runs in the sandbox');
  await d().rpc('RemovePodSandbox', { podSandboxId: pod.podSandboxId });
  assert.deepEqual(await runscProcesses(), []);
});

test('corral doctor checks the configured runsc handlers: runsc answers, and corral-runsc hides what trips its check', { skip, timeout: 60_000 }, async () => {
  const r = await execFile(process.execPath, [path.join(packageRoot(), 'dist/src/cli/main.js'), 'doctor', '--config', d().configFile], { timeoutMs: 50_000 });
  const lines = r.stdout.split('\n').filter((l) => l.includes('(gVisor)'));
  for (const h of ['runsc', 'untrusted', 'runscfail']) {
    assert.ok(lines.some((l) => l.startsWith('[ok  ]') && l.includes(`"${h}" (gVisor): runsc `)), `runsc version for ${h}:\n${lines.join('\n')}`);
  }
  // This kernel (6.x) shows the sysctl in every netns: doctor says so, and that the wrapper really hides it.
  const check = lines.find((l) => l.includes('"runsc" (gVisor)') && /rmem_default/.test(l));
  assert.ok(check, lines.join('\n'));
  assert.match(check!, /^\[ok  \]/);
  assert.ok(!lines.some((l) => l.startsWith('[FAIL]')), lines.join('\n'));
});

test('runsc: a privileged pod and container run (every capability the daemon holds that this runsc knows)', { skip, timeout: 180_000 }, async () => {
  const pod = await runPod('runsc', { linux: { securityContext: { privileged: true, namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } } });
  const c = await startContainer(d(), pod, env!.image, 'priv', ['sleep', '300'], { linux: { securityContext: { privileged: true } } });
  const ex = await d().rpc('ExecSync', { containerId: c, cmd: ['sh', '-c', 'grep CapEff /proc/self/status'], timeout: 30 });
  assert.equal(ex.exitCode, 0, Buffer.from(ex.stderr).toString());
  assert.notEqual(Buffer.from(ex.stdout).toString().trim(), 'CapEff:\t0000000000000000');
  await d().rpc('RemovePodSandbox', { podSandboxId: pod.podSandboxId });
  assert.deepEqual(await runscProcesses(), []);
});

test('runsc: ExecSync runs as the container\'s user with its groups and environment (runsc\'s own exec would run as root)', { skip, timeout: 180_000 }, async () => {
  const pod = await runPod();
  const c = await startContainer(d(), pod, env!.image, 'user', ['sleep', '300'], {
    envs: [{ key: 'GREETING', value: Buffer.from('hi') }],
    linux: { securityContext: { runAsUser: { value: 1001 }, runAsGroup: { value: 2002 }, supplementalGroups: [3003] } },
  });
  const ex = await d().rpc('ExecSync', { containerId: c, cmd: ['sh', '-c', 'echo $(id -u) $(id -g) $GREETING; id -G'], timeout: 30 });
  assert.equal(ex.exitCode, 0, Buffer.from(ex.stderr).toString());
  const [first, groups] = Buffer.from(ex.stdout).toString().split('\n');
  assert.equal(first, '1001 2002 hi', Buffer.from(ex.stdout).toString());
  assert.match(groups!, /\b3003\b/);
  await d().rpc('RemovePodSandbox', { podSandboxId: pod.podSandboxId });
});

test('runsc: a container created and never started is stopped with its pod (runsc cannot signal it) and nothing is left', { skip, timeout: 180_000 }, async () => {
  const pod = await runPod();
  const { containerId } = await d().rpc('CreateContainer', {
    podSandboxId: pod.podSandboxId,
    config: { metadata: { name: 'never-started', attempt: 0 }, image: { image: env!.image }, command: ['sleep', '300'], linux: {} },
    sandboxConfig: pod.sandboxConfig,
  });
  await d().rpc('StopPodSandbox', { podSandboxId: pod.podSandboxId });
  assert.equal((await d().rpc('ContainerStatus', { containerId })).status.state, 'CONTAINER_EXITED');
  assert.deepEqual(await runscProcesses(), [], 'no runsc process (sandbox, gofer, waiter) after StopPodSandbox');
  await d().rpc('RemovePodSandbox', { podSandboxId: pod.podSandboxId });
  assert.deepEqual(await runscState(), []);
});

test('runsc: ContainerStats of a running gVisor container has CPU and memory (from runsc events --stats)', { skip, timeout: 180_000 }, async () => {
  const pod = await runPod();
  const c = await startContainer(d(), pod, env!.image, 'busy', ['sh', '-c', 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 300']);
  await waitFor(async () => {
    const { stats } = await d().rpc('ContainerStats', { containerId: c });
    return Number(stats?.cpu?.usageCoreNanoSeconds?.value ?? 0) > 0 && Number(stats?.memory?.workingSetBytes?.value ?? 0) > 0;
  }, { timeoutMs: 30_000, what: 'CPU and memory in ContainerStats' });
  const { stats: list } = await d().rpc('ListContainerStats', { filter: { id: c } });
  assert.equal(list.length, 1);
  assert.ok(list[0].cpu && list[0].memory, 'ListContainerStats has CPU and memory too');
  await d().rpc('RemovePodSandbox', { podSandboxId: pod.podSandboxId });
});

test('runsc: start-first and host-network pods are refused (INVALID_ARGUMENT, saying why) before anything is made', { skip, timeout: 60_000 }, async () => {
  await assert.rejects(runPod('runsc', { annotations: { 'io.corral.sandbox.network-order': 'start-first' } }), (e: any) => e.code === status.INVALID_ARGUMENT && /takes the pod's network interfaces when the sandbox starts/.test(e.details));
  await assert.rejects(
    runPod('runsc', { linux: { securityContext: { namespaceOptions: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } } }),
    (e: any) => e.code === status.INVALID_ARGUMENT && /cannot run host-network pods/.test(e.details),
  );
  assert.deepEqual((await d().rpc('ListPodSandbox', {})).items, []);
  assert.deepEqual(await runscProcesses(), []);
  assert.deepEqual((await hostTraces(d())).netns, []);
});
