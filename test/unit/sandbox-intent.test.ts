/**
 * The intent record of RunPodSandbox: written before the first side effect and fsynced
 * beside the pins and files, but durable before anything that outlives a power loss (CNI
 * ADD, the pause) starts. No root: every port is a fake, the store is real.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { defaultConfig } from '../../src/config/config.js';
import { silentLogger } from '../../src/util/log.js';
import { SandboxStore } from '../../src/store/sandbox-store.js';
import { SandboxService } from '../../src/sandbox/service.js';
import { podConfig } from '../helpers/cri-messages.js';

/** A store whose fsync of the intent waits for the test. */
class GatedStore extends SandboxStore {
  release!: () => void;
  readonly gate = new Promise<void>((r) => (this.release = r));
  constructor(root: string, private readonly calls: string[]) {
    super(root);
  }
  override async sync(id: string): Promise<void> {
    this.calls.push('fsync intent begins');
    await this.gate;
    await super.sync(id);
    this.calls.push('fsync intent done');
  }
}

async function setup(t: { after: (fn: () => Promise<void>) => void }) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-intent-unit-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const config = { ...defaultConfig(), rootDir: path.join(dir, 'root'), stateDir: path.join(dir, 'state'), netnsDir: path.join(dir, 'netns') };
  const calls: string[] = [];
  const store = new GatedStore(config.rootDir, calls);
  const svc = new SandboxService({
    config,
    store,
    logger: silentLogger(),
    network: () => ({
      setUp: async () => (calls.push('cni add'), { podIp: '10.0.0.2', additionalIps: [], attachments: [] }),
      tearDown: async () => void calls.push('cni del'),
    }),
    pinner: {
      pathFor: (id) => path.join(config.netnsDir, `corral-${id}`),
      create: async () => void calls.push('pin'),
      remove: async () => void calls.push('unpin'),
      isPinned: async () => true,
    },
    runtime: { create: async () => process.pid, start: async () => {}, destroy: async () => {} },
    podInit: {
      start: async () => (calls.push('pause start'), { pid: process.pid, startTime: '' }),
      stop: async () => void calls.push('pause stop'),
    },
    sandboxImage: { resolve: async () => ({ path: '/nonexistent', args: ['/pause'] }), mount: async () => {}, unmount: async () => {} },
    prepareSysctls: (s) => s,
  });
  return { svc, store, calls, config };
}

const until = async (cond: () => boolean) => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
};

for (const [what, pid, persistent] of [['CNI ADD', 'CONTAINER', 'cni add'], ["Corral's own pause (start-first)", 'POD', 'pause start']] as const) {
  test(`the intent is readable at once, the pins are made while it is fsynced, and ${what} waits for the fsync`, async (t) => {
    const { svc, store, calls, config } = await setup(t);
    // Host IPC: no /dev/shm tmpfs to mount, so no root needed.
    const cfg = podConfig({
      metadata: { name: `p-${pid}`, namespace: 'ns', uid: `u-${pid}`, attempt: 0 },
      annotations: pid === 'POD' ? { 'io.corral.sandbox.network-order': 'start-first' } : {},
      linux: { securityContext: { namespaceOptions: { network: 'POD', pid, ipc: 'NODE' } } },
    });
    const run = svc.run(cfg, '');
    await until(() => calls.includes('pin'));
    assert.deepEqual(calls, ['fsync intent begins', 'pin'], 'the pins do not wait for the fsync');
    const [id] = await fs.readdir(path.join(config.rootDir, 'sandboxes'));
    const onDisk = JSON.parse(await fs.readFile(path.join(config.rootDir, 'sandboxes', id!, 'sandbox.json'), 'utf8'));
    assert.equal(onDisk.state, 'creating', 'the intent is on disk (a daemon crash finds it)');
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(!calls.includes(persistent), `${persistent} must wait for the intent to be durable`);
    store.release();
    assert.equal(await run, id);
    assert.ok(calls.indexOf('fsync intent done') < calls.indexOf(persistent), calls.join(', '));
    await svc.remove(id!);
  });
}
