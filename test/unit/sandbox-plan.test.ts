/**
 * planSandbox (pure: everything RunPodSandbox refuses before touching the host), the
 * service refusing a bad plan before its first side effect, and runWithRollback, the one
 * failure policy of RunPodSandbox and CreateContainer. No root.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { grpcCode } from '../../src/cri/errors.js';
import { defaultConfig } from '../../src/config/config.js';
import { silentLogger } from '../../src/util/log.js';
import { UndoStack, runWithRollback } from '../../src/util/undo.js';
import { SandboxStore } from '../../src/store/sandbox-store.js';
import { SandboxService } from '../../src/sandbox/service.js';
import { planSandbox, type PlanInputs } from '../../src/sandbox/plan.js';
import { DEFAULT_BANDWIDTH_BURST } from '../../src/network/cni/capabilities.js';
import type { PodSandboxConfig } from '../../src/cri-api/types.js';
import { podConfig } from '../helpers/cri-messages.js';

const cfg = defaultConfig();
const inputs: PlanInputs = { stateDir: '/state/sb1', netnsPath: '/netns/corral-sb1', nodeHostname: 'node', prepareSysctls: (s) => s };
const INGRESS = 'kubernetes.io/ingress-bandwidth';
const EGRESS = 'kubernetes.io/egress-bandwidth';

function pod(over: { annotations?: Record<string, string>; network?: string; pid?: string; ipc?: string; sysctls?: Record<string, string>; logDirectory?: string } = {}) {
  return {
    metadata: { name: 'web', namespace: 'ns', uid: 'uid-1', attempt: 0 },
    hostname: 'web',
    annotations: over.annotations ?? {},
    logDirectory: over.logDirectory,
    linux: {
      sysctls: over.sysctls ?? {},
      securityContext: { namespaceOptions: { network: over.network ?? 'POD', pid: over.pid ?? 'CONTAINER', ipc: over.ipc ?? 'POD' } },
    },
  } as PodSandboxConfig; // a partial message: see test/helpers/cri-messages.ts
}

const invalid = (re: RegExp) => (e: any) => grpcCode(e) === status.INVALID_ARGUMENT && re.test(e.message);

test('planSandbox: gVisor (runsc) pods refuse start-first (runsc takes the interfaces at start), whichever annotation asks, and host network (runsc would give an empty netns)', () => {
  const withRunsc = { ...cfg, runtimes: { ...cfg.runtimes, runsc: { name: 'runsc', path: '/usr/bin/runsc', root: '/run/corral/runsc', type: 'vm' as const, cniConfDir: '', cniMaxNetworks: 0 } } };
  assert.throws(() => planSandbox(pod({ annotations: { 'io.corral.sandbox.network-order': 'start-first' } }), 'runsc', withRunsc, inputs), invalid(/gVisor.*start-first/));
  assert.throws(() => planSandbox(pod({ annotations: { 'cri.sandbox.network.setup.v2': 'false' } }), 'runsc', withRunsc, inputs), invalid(/cannot be wired after start/));
  assert.equal(planSandbox(pod(), 'runsc', withRunsc, inputs).order, 'network-first');
  assert.throws(() => planSandbox(pod({ network: 'NODE' }), 'runsc', withRunsc, inputs), invalid(/gVisor.*host-network/));
  assert.equal(planSandbox(pod({ network: 'NODE' }), 'runc', withRunsc, inputs).hostNetwork, true);
  // Other handlers keep start-first.
  assert.equal(planSandbox(pod({ annotations: { 'io.corral.sandbox.network-order': 'start-first' } }), 'runc', withRunsc, inputs).order, 'start-first');
});

test('planSandbox: a plain pod is pinned (no pause), network first, with its own netns, IPC, UTS and shm', () => {
  const plan = planSandbox(pod(), '', cfg, inputs);
  assert.equal(plan.handler.name, cfg.defaultRuntime);
  assert.equal(plan.mode, 'pinned');
  assert.equal(plan.order, 'network-first');
  assert.deepEqual(plan.namespaces, { network: 'pin', ipc: 'pin', uts: 'pin', pid: 'container' });
  assert.deepEqual(plan.pins.pins, ['/netns/corral-sb1', '/state/sb1/ipcns', '/state/sb1/utsns']);
  assert.equal(plan.shmPath, '/state/sb1/shm');
  assert.equal(plan.hostname, 'web');
  assert.equal(plan.bandwidth, undefined);
});

test('planSandbox: a shared PID namespace gets Corral\'s own pause (IPC and UTS pinned); with a sandbox image, a pause container holding them; host network pins nothing of the network', () => {
  const shared = planSandbox(pod({ pid: 'POD' }), '', cfg, inputs);
  assert.equal(shared.mode, 'init');
  assert.deepEqual(shared.namespaces, { network: 'pin', ipc: 'pin', uts: 'pin', pid: 'pause' });
  assert.deepEqual(shared.pins.pins, ['/netns/corral-sb1', '/state/sb1/ipcns', '/state/sb1/utsns']);
  const imaged = planSandbox(pod({ pid: 'POD' }), '', { ...cfg, sandboxImage: 'registry.k8s.io/pause:3.9' }, inputs);
  assert.equal(imaged.mode, 'pause');
  assert.deepEqual(imaged.pins.pins, ['/netns/corral-sb1']);
  const vm = planSandbox(pod({ pid: 'POD' }), '', { ...cfg, runtimes: { ...cfg.runtimes, runc: { ...cfg.runtimes.runc!, type: 'vm' } } }, inputs);
  assert.equal(vm.mode, 'pause', 'a VM handler keeps the OCI path');
  const host = planSandbox(pod({ network: 'NODE', ipc: 'NODE' }), '', cfg, inputs);
  assert.equal(host.pins.netnsPath, null);
  assert.equal(host.shmPath, null);
  assert.equal(host.namespaces.uts, 'host');
});

test('planSandbox: bandwidth annotations are parsed into CNI limits', () => {
  const plan = planSandbox(pod({ annotations: { [INGRESS]: '10M', [EGRESS]: '1Gi' } }), '', cfg, inputs);
  assert.deepEqual(plan.bandwidth, { ingressRate: 10_000_000, ingressBurst: DEFAULT_BANDWIDTH_BURST, egressRate: 2 ** 30, egressBurst: DEFAULT_BANDWIDTH_BURST });
});

test('planSandbox refuses a bad or unreasonable bandwidth annotation (INVALID_ARGUMENT)', () => {
  assert.throws(() => planSandbox(pod({ annotations: { [INGRESS]: 'fast' } }), '', cfg, inputs), invalid(/pod bandwidth annotation: .*kubernetes.io\/ingress-bandwidth.*not a valid quantity/));
  assert.throws(() => planSandbox(pod({ annotations: { [EGRESS]: '10' } }), '', cfg, inputs), invalid(/egress-bandwidth: 10 is unreasonably small/));
});

test('planSandbox refuses the rest of what RunPodSandbox refuses before the host is touched', () => {
  assert.throws(() => planSandbox(podConfig({ ...pod(), metadata: { name: 'web', namespace: '', uid: 'u' } }), '', cfg, inputs), invalid(/metadata.namespace/));
  assert.throws(() => planSandbox(pod(), 'nope', cfg, inputs), invalid(/unknown runtime handler "nope"/));
  assert.throws(() => planSandbox(pod({ annotations: { 'io.corral.sandbox.network-order': 'sideways' } }), '', cfg, inputs), invalid(/network-order/));
  assert.throws(() => planSandbox(pod({ logDirectory: 'relative/logs' }), '', cfg, inputs), invalid(/log_directory must be an absolute path/));
  assert.throws(() => planSandbox(pod({ network: 'NODE', sysctls: { 'net.ipv4.ip_forward': '1' } }), '', cfg, inputs), invalid(/host's net namespace/));
  const refusing: PlanInputs = { ...inputs, prepareSysctls: () => { throw new Error('sysctl "kernel.panic" is not namespaced'); } };
  assert.throws(() => planSandbox(pod(), '', cfg, refusing), invalid(/kernel.panic/));
});

test('RunPodSandbox with a bad bandwidth annotation is refused before anything is created; the name stays free', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-plan-unit-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const config = { ...defaultConfig(), rootDir: path.join(dir, 'root'), stateDir: path.join(dir, 'state'), netnsDir: path.join(dir, 'netns') };
  const calls: string[] = [];
  const pins = new Set<string>();
  const svc = new SandboxService({
    config,
    store: new SandboxStore(config.rootDir),
    logger: silentLogger(),
    network: () => ({
      setUp: async (req) => {
        calls.push(`cni add ${JSON.stringify(req.bandwidth)}`);
        return { podIp: '10.0.0.2', additionalIps: [], attachments: [] };
      },
      tearDown: async () => void calls.push('cni del'),
    }),
    pinner: {
      pathFor: (id) => path.join(config.netnsDir, `corral-${id}`),
      create: async (netnsPath, opts) => {
        calls.push('pin');
        for (const p of [netnsPath, opts.ipcPath, opts.utsPath]) if (p) pins.add(p);
      },
      remove: async (paths) => {
        calls.push('unpin');
        for (const p of paths) pins.delete(p);
      },
      isPinned: async (p) => pins.has(p),
    },
    runtime: {
      create: async () => (calls.push('pause create'), process.pid),
      start: async () => void calls.push('pause start'),
      destroy: async () => void calls.push('pause destroy'),
    },
    podInit: {
      start: async () => (calls.push('pod init start'), { pid: process.pid, startTime: '' }),
      stop: async () => void calls.push('pod init stop'),
    },
    sandboxImage: {
      resolve: async () => (calls.push('image'), { path: '/nonexistent-rootfs', args: ['/pause'] }),
      mount: async () => void calls.push('rootfs mount'),
      unmount: async () => void calls.push('rootfs unmount'),
    },
    prepareSysctls: (s) => s,
  });

  // Host IPC: no /dev/shm tmpfs to mount, so no root needed.
  await assert.rejects(svc.run(pod({ ipc: 'NODE', annotations: { [INGRESS]: '1x' } }), ''), invalid(/pod bandwidth annotation/));
  assert.deepEqual(calls, [], 'no pin, no image, no CNI call');
  assert.equal(svc.all().length, 0);
  const records = await fs.readdir(path.join(config.rootDir, 'sandboxes')).catch(() => []);
  assert.deepEqual(records, [], 'no record written');
  await assert.rejects(fs.stat(path.join(config.stateDir, 'sandboxes')), { code: 'ENOENT' }, 'no state folder made');

  // The same pod with a good annotation runs under the same name, the limits handed to CNI.
  const id = await svc.run(pod({ ipc: 'NODE', annotations: { [INGRESS]: '1M' } }), '');
  assert.deepEqual(calls, ['pin', `cni add ${JSON.stringify({ ingressRate: 1_000_000, ingressBurst: DEFAULT_BANDWIDTH_BURST, egressRate: 0, egressBurst: 0 })}`]);
  await svc.remove(id);
  assert.equal(pins.size, 0);
});

test('runWithRollback: undoes newest first, reports an incomplete rollback once, rethrows the step\'s own error', async () => {
  const order: string[] = [];
  const undo = new UndoStack();
  const boom = new Error('step 3 failed');
  let reported: string | undefined;
  let reports = 0;
  await assert.rejects(
    runWithRollback(
      undo,
      async () => {
        undo.push('one', async (failed) => void order.push(`one after ${failed} failures`));
        undo.push('two', async () => {
          order.push('two');
          throw new Error('two is stuck');
        });
        undo.push('three', async () => void order.push('three'));
        throw boom;
      },
      { logger: silentLogger(), what: 'Test', onIncomplete: async (m) => { reported = m; reports++; } },
    ),
    (e) => e === boom,
  );
  assert.deepEqual(order, ['three', 'two', 'one after 1 failures']);
  assert.equal(reports, 1);
  assert.equal(reported, 'step 3 failed; rollback incomplete: two: two is stuck');
  assert.equal(undo.size, 0);
});

test('runWithRollback: a complete rollback reports nothing; success keeps every effect', async () => {
  const undo = new UndoStack();
  let reports = 0;
  const policy = { logger: silentLogger(), what: 'Test', onIncomplete: async () => void reports++ };
  await assert.rejects(runWithRollback(undo, async () => { undo.push('a', async () => {}); throw new Error('x'); }, policy), /x/);
  assert.equal(reports, 0);
  let undone = false;
  const out = await runWithRollback(undo, async () => { undo.push('b', async () => void (undone = true)); return 42; }, policy);
  assert.equal(out, 42);
  assert.equal(undo.size, 0, 'committed');
  assert.equal(await undo.unwind().then((f) => f.length), 0);
  assert.equal(undone, false);
});
