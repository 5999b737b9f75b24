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
import { findExecutable } from '../../src/util/paths.js';
import { runscProcessesOf } from '../../src/oci/runsc.js';
import { waitFor } from '../helpers/wait.js';

const runsc = await findExecutable('runsc');
const skip = runsc ? false : 'runsc is not installed (apt-get install runsc; scripts/install-deps.sh does it)';

let env: BusyboxDaemon | undefined;
const d = () => env!.d;
const root = () => path.join(d().stateDir, 'runsc');
const untrustedRoot = () => path.join(d().stateDir, 'untrusted');

/** Every runsc process on the host under this daemon's runsc roots (sandbox, gofer, exec waiters). */
async function runscProcesses(): Promise<string[]> {
  const r = await execFile('ps', ['-eo', 'pid=,args=']);
  return r.stdout
    .split('\n')
    .filter((l) => /runsc/.test(l) && (l.includes(`root=${root()}`) || l.includes(`root=${untrustedRoot()}`) || l.includes(`root ${root()}`)))
    .map((l) => l.trim());
}

/** Containers in runsc's state under the handler roots. */
async function runscState(): Promise<string[]> {
  const out: string[] = [];
  for (const r of [root(), untrustedRoot()]) {
    const l = await execFile('runsc', ['--root', r, 'list', '--quiet']);
    out.push(...l.stdout.split('\n').map((s) => s.trim()).filter((s) => s && s !== 'ID'));
  }
  return out;
}

before(async () => {
  if (skip) return;
  env = await startDaemonWithBusybox({
    tag: 'runsc',
    daemon: {
      extraToml: ['[runtimes.runc]', 'path = "runc"', '[runtimes.runsc]', 'path = "runsc"', 'type = "vm"', '[runtimes.untrusted]', 'path = "runsc"', 'type = "vm"'].join('\n'),
    },
  });
});

afterEach(async () => {
  if (skip || !env) return;
  const { items } = await d().rpc('ListPodSandbox', {});
  for (const i of items) await d().rpc('RemovePodSandbox', { podSandboxId: i.id }).catch(() => {});
});

after(async () => {
  if (!env) return;
  if (process.env.CORRAL_TEST_LOG) await fs.copyFile(env.d.logFile, process.env.CORRAL_TEST_LOG).catch(() => {});
  try {
    // Whatever a failed test left: the runtime's state, then the processes.
    for (const r of [root(), untrustedRoot()]) {
      const l = await execFile('runsc', ['--root', r, 'list', '--quiet']).catch(() => undefined);
      for (const id of (l?.stdout ?? '').split('\n').map((s) => s.trim()).filter((s) => s && s !== 'ID')) {
        await execFile('runsc', ['--root', r, 'delete', '--force', id]).catch(() => {});
      }
    }
    for (const line of await runscProcesses()) {
      const pid = Number(line.split(/\s+/)[0]);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
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
