/**
 * In-memory fakes of the service ports (network, namespace pinner, pause runtime, sandbox
 * image, image service, OCI runtime, container rootfs, container monitor) for unit tests of
 * SandboxService and ContainerService: no root, no real pods. Each fake records what it
 * holds and what was called, so "nothing leaked" and "undone in this order" are plain looks
 * at the fakes. Undoing what is not there (unmounting what is not mounted, removing monitor
 * files never written) is a no-op, as with the real parts, and is not recorded in events.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { defaultConfig, type CorralConfig } from '../../src/config/config.js';
import { silentLogger } from '../../src/util/log.js';
import type { RuntimeObserver } from '../../src/observer.js';
import { SandboxStore } from '../../src/store/sandbox-store.js';
import { SandboxService, type NamespacePinner, type PodNetworkDriver, type SandboxContainerRuntime } from '../../src/sandbox/service.js';
import { ContainerService, type ContainerMonitor, type ContainerRootfs } from '../../src/container/service.js';
import type { ImageService } from '../../src/image/image-service.js';
import type { OciRuntime } from '../../src/oci/runtime.js';
import { nowNs } from '../../src/util/time.js';
import type { PodSandboxConfig } from '../../src/cri-api/types.js';
import type { ImageRuntimeConfig } from '../../src/image/image-config.js';

/** A promise the test settles by hand, and one that says when the fake reached it. */
export function gate() {
  let open!: () => void;
  let fail!: (e: Error) => void;
  const opened = new Promise<void>((res, rej) => {
    open = res;
    fail = rej;
  });
  let reached!: () => void;
  const arrived = new Promise<void>((r) => (reached = r));
  return { open, fail, opened, arrived, reached };
}
export type Gate = ReturnType<typeof gate>;

/** Whether p settles within ms (the fakes answer at once: 150 ms is ages for them). */
export const settled = async (p: Promise<unknown>, ms = 150) => {
  let done = false;
  p.then(() => (done = true), () => (done = true));
  await new Promise((r) => setTimeout(r, ms));
  return done;
};

export interface Fakes {
  events: string[];
  pins: Set<string>;
  attachments: Set<string>;
  containers: Set<string>;
  /** Application containers the runtime holds (made by the monitor's create, gone at runtime delete). */
  appContainers: Set<string>;
  /** Mounted container root filesystems (targets). */
  mounts: Set<string>;
  /** Containers whose monitor files (exit file, attach link) exist. */
  monitorFiles: Set<string>;
  /** The exits the monitor recorded (conmon's exit files), by container ID. */
  exits: Map<string, { code: number; finishedAt: string }>;
  /** The container IDs the monitor's readExit was asked about, in order. */
  exitReads: string[];
  /** false (the default): the fake image's layers are not unpacked, so mounting its rootfs fails. */
  layersUnpacked: boolean;
  /**
   * Set to make the next call wait on it (cleared when reached). `exit`: the exit a signal
   * causes is recorded only once the test opens the gate (a container slow to stop, or never).
   */
  gates: { setUp?: Gate; create?: Gate; runtimeConfig?: Gate; exit?: Gate };
  failures: { start?: boolean; tearDown?: boolean; runtimeConfig?: boolean; conmonCreate?: boolean; containerStart?: boolean };
}

const dirs: string[] = [];
/** Removes the temp dirs of every service made so far: register with afterEach. */
export async function removeServiceDirs(): Promise<void> {
  for (const d of dirs.splice(0)) await fs.rm(d, { recursive: true, force: true });
}

export async function makeService(opts: { observer?: RuntimeObserver } = {}): Promise<{ svc: SandboxService; fakes: Fakes; cfg: CorralConfig; dir: string }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-sandbox-unit-'));
  dirs.push(dir);
  // A sandbox image keeps pid-POD pods on the OCI pause path these fakes model (Corral's
  // own pause, mode 'init', forks a real process: covered by the integration tests).
  const cfg = { ...defaultConfig(), sandboxImage: 'fake.local/pause:1', rootDir: path.join(dir, 'root'), stateDir: path.join(dir, 'state'), netnsDir: path.join(dir, 'netns') };
  const fakes: Fakes = {
    events: [],
    pins: new Set(),
    attachments: new Set(),
    containers: new Set(),
    appContainers: new Set(),
    mounts: new Set(),
    monitorFiles: new Set(),
    exits: new Map(),
    exitReads: [],
    layersUnpacked: false,
    gates: {},
    failures: {},
  };
  const wait = async (name: keyof Fakes['gates']) => {
    const g = fakes.gates[name];
    if (!g) return;
    delete fakes.gates[name];
    g.reached();
    await g.opened;
  };
  const network: PodNetworkDriver = {
    async setUp(req) {
      fakes.events.push('cni add');
      fakes.attachments.add(req.containerId); // IPAM reserved before the plugin could fail
      await wait('setUp');
      return { podIp: '10.0.0.2', additionalIps: [], attachments: [] };
    },
    async tearDown(req) {
      fakes.events.push('cni del');
      if (fakes.failures.tearDown) throw new Error('injected DEL failure');
      fakes.attachments.delete(req.containerId);
    },
  };
  const pinner: NamespacePinner = {
    pathFor: (id) => path.join(cfg.netnsDir, `corral-${id}`),
    async create(netnsPath, opts) {
      fakes.events.push('pin');
      if (netnsPath) fakes.pins.add(netnsPath);
      if (opts.utsPath) fakes.pins.add(opts.utsPath);
      if (opts.ipcPath) fakes.pins.add(opts.ipcPath);
    },
    async remove(paths) {
      fakes.events.push('unpin');
      for (const p of paths) fakes.pins.delete(p);
    },
    isPinned: async (p) => fakes.pins.has(p),
  };
  const runtime: SandboxContainerRuntime = {
    async create(_h, record) {
      fakes.events.push('pause create');
      fakes.containers.add(record.id);
      await wait('create');
      return process.pid; // a live process, so the pod reads as READY
    },
    async start() {
      fakes.events.push('pause start');
      if (fakes.failures.start) throw new Error('injected start failure');
    },
    async destroy(_h, id) {
      fakes.events.push('pause destroy');
      fakes.containers.delete(id);
    },
  };
  const svc = new SandboxService({
    config: cfg,
    store: new SandboxStore(cfg.rootDir),
    logger: silentLogger(),
    network: () => network,
    pinner,
    runtime,
    podInit: {
      start: async () => assert.fail('the fakes run pid-POD pods through the OCI pause path'),
      stop: async () => {},
    },
    sandboxImage: {
      resolve: async () => ({ path: '/nonexistent-rootfs', args: ['/pause'] }),
      mount: async () => {},
      unmount: async () => {},
    },
    prepareSysctls: (s) => s,
    observer: opts.observer,
  });
  return { svc, fakes, cfg, dir };
}

let n = 0;
/** Host IPC (no /dev/shm tmpfs to mount, so no root needed); pid POD = a pause container. */
export function pod(over: { name?: string; namespace?: string; uid?: string; pid?: string } = {}) {
  n++;
  return {
    metadata: { name: over.name ?? `pod-${n}`, namespace: over.namespace ?? 'ns', uid: over.uid ?? `uid-${n}`, attempt: 0 },
    hostname: 'pod',
    linux: { securityContext: { namespaceOptions: { network: 'POD', pid: over.pid ?? 'POD', ipc: 'NODE' } } },
  } as PodSandboxConfig; // a partial message: see test/helpers/cri-messages.ts
}

export async function assertNothingHeld(fakes: Fakes) {
  assert.deepEqual([...fakes.pins], [], 'no pinned namespace');
  assert.deepEqual([...fakes.attachments], [], 'no CNI attachment');
  assert.deepEqual([...fakes.containers], [], 'no pause container');
  assertNoContainerHeld(fakes);
}

/** Nothing of an application container: runtime container, rootfs mount, monitor files (the pod may live on). */
export function assertNoContainerHeld(fakes: Fakes) {
  assert.deepEqual([...fakes.appContainers], [], 'no runtime container');
  assert.deepEqual([...fakes.mounts], [], 'no rootfs mount');
  assert.deepEqual([...fakes.monitorFiles], [], 'no monitor files');
}

const SIGNAL_NUMBERS: Record<string, number> = { HUP: 1, INT: 2, QUIT: 3, KILL: 9, USR1: 10, USR2: 12, TERM: 15 };

/**
 * ContainerService in front of the fake pod, with an image whose config read fails on demand,
 * a rootfs that mounts only once fakes.layersUnpacked, and a runtime and monitor that record
 * their calls: a killed container exits with 128 + the signal's number (see gates.exit).
 */
export function containerService(svc: SandboxService, cfg: CorralConfig, fakes: Fakes) {
  const image = { id: 'sha256:img', chainIds: ['sha256:layer'] };
  const images = {
    find: async () => image,
    runtimeConfig: async () => {
      const g = fakes.gates.runtimeConfig;
      if (g) {
        delete fakes.gates.runtimeConfig;
        g.reached();
        await g.opened;
      }
      if (fakes.failures.runtimeConfig) throw new Error('injected config read failure');
      const config: ImageRuntimeConfig = { Entrypoint: null, Cmd: ['/bin/true'], Env: null, WorkingDir: '', User: '', StopSignal: '' };
      return config;
    },
  } as unknown as ImageService;
  const runtime = {
    binary: '/nonexistent-runtime',
    root: path.join(cfg.stateDir, 'runtime'),
    async start(id: string) {
      fakes.events.push('runtime start');
      if (fakes.failures.containerStart) throw new Error('injected container start failure');
    },
    async kill(id: string, signal: string) {
      fakes.events.push(`runtime kill ${signal}`);
      if (!fakes.appContainers.has(id) || fakes.exits.has(id)) return;
      const exit = () => {
        if (fakes.appContainers.has(id) && !fakes.exits.has(id)) fakes.exits.set(id, { code: 128 + (SIGNAL_NUMBERS[signal] ?? 15), finishedAt: nowNs() });
      };
      const g = fakes.gates.exit;
      if (!g) return exit();
      delete fakes.gates.exit;
      g.reached();
      void g.opened.then(exit, () => {});
    },
    async delete(id: string) {
      fakes.events.push(`runtime delete ${id}`);
      fakes.appContainers.delete(id);
    },
  } as unknown as OciRuntime;
  const rootfs: ContainerRootfs = {
    async mount(chain, target, layerDir) {
      // As the real one: the folders first, then the layers, then the mount.
      await fs.mkdir(path.join(layerDir, 'upper'), { recursive: true });
      await fs.mkdir(target, { recursive: true });
      if (!fakes.layersUnpacked) throw new Error('no image layers in unit tests');
      assert.ok(chain.length > 0);
      fakes.events.push('mount');
      fakes.mounts.add(target);
    },
    async unmount(target) {
      if (fakes.mounts.delete(target)) fakes.events.push('unmount');
    },
  };
  const monitor: ContainerMonitor = {
    async create(opts) {
      fakes.events.push('conmon create');
      // The runtime's create can half-succeed: the runtime container exists before the failure.
      fakes.appContainers.add(opts.id);
      if (fakes.failures.conmonCreate) throw new Error('injected conmon create failure');
      fakes.monitorFiles.add(opts.id);
      return { pid: process.pid };
    },
    readExit: async (id) => {
      fakes.exitReads.push(id);
      const exit = fakes.exits.get(id);
      return exit ? { ...exit } : null;
    },
    exitedIds: () => new Set(fakes.exits.keys()),
    async waitForExit(id, timeoutMs) {
      fakes.events.push(`monitor wait ${timeoutMs}`);
      const deadline = Date.now() + timeoutMs;
      while (!fakes.exits.has(id) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      return fakes.exits.get(id)?.code ?? null;
    },
    async removeFiles(id) {
      fakes.exits.delete(id);
      if (fakes.monitorFiles.delete(id)) fakes.events.push('remove monitor files');
    },
    async reopenLog(o) {
      fakes.events.push(`monitor reopen log ${o.logPath}`);
    },
  };
  const containers = new ContainerService({
    config: cfg,
    logger: silentLogger(),
    sandboxes: svc,
    images,
    runtimeFor: () => runtime,
    rootfs,
    monitor,
    availableCapabilities: [],
    oomScoreAdjFloor: -1000,
  });
  svc.containers = { stopAll: (id) => containers.stopAllIn(id), removeAll: (id) => containers.removeAllIn(id), records: (id) => containers.recordsIn(id) };
  return containers;
}
