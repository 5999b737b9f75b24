/**
 * The pod sandbox lifecycle: RunPodSandbox, StopPodSandbox, RemovePodSandbox, status,
 * listing, and recovery after a restart. Every side effect is recorded on disk before it
 * happens; RunPodSandbox undoes each finished step in reverse when a later one fails.
 *
 * Lock model: one shared/exclusive lock per sandbox ID. Run (from its first side effect to
 * its last, rollback included), Stop and Remove hold it exclusively; the container calls of
 * the pod hold it shared (see underSharedLock). A record is changed only through the
 * SandboxTx of an exclusive holder, which writes it to disk before it becomes the record
 * every reader sees, and replaces the in-memory record instead of mutating it. So a Stop
 * that arrives while Run is between steps waits for Run to finish or roll back, then stops
 * what Run made; a container being created keeps its pod from being removed under it.
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { CorralConfig, RuntimeHandlerConfig } from '../config/config.js';
import { CriError, invalidArgument, internalError, notFound } from '../cri/errors.js';
import type { Logger } from '../util/log.js';
import { UndoStack } from '../util/undo.js';
import type { SandboxStore } from '../store/sandbox-store.js';
import { IdIndex, generateId } from '../store/ids.js';
import { NameRegistry, sandboxName, sandboxNameKey } from '../store/names.js';
import {
  cniPortMappings,
  infraMode,
  isPrivileged,
  namespaceChoice,
  namespacePlan,
  networkOrder,
  podHostname,
  podMetadata,
  podPins,
  resolvConf,
  selectHandler,
} from './options.js';
import type { SandboxNetwork, SandboxRecord } from './record.js';
import { mountShm, sandboxFilePaths, unmountShm, writeSandboxFiles } from './files.js';
import { processStartTime } from '../util/process.js';
import { nowNs } from '../util/time.js';
import { SharedExclusiveLock } from '../util/keyed-lock.js';

/** What the sandbox lifecycle needs from the network layer (CNI) of one handler. */
export interface PodNetworkDriver {
  setUp(req: {
    containerId: string;
    netnsPath: string;
    podName: string;
    podNamespace: string;
    podUid: string;
    portMappings: ReturnType<typeof cniPortMappings>;
    annotations: Record<string, string>;
    dns?: { servers: string[]; searches: string[]; options: string[] };
    cgroupPath?: string;
  }): Promise<SandboxNetwork>;
  tearDown(req: { containerId: string; netnsPath: string; podName: string; podNamespace: string; podUid: string }): Promise<void>;
}

/** Pinning and unpinning namespaces (a helper process does the syscalls). */
export interface NamespacePinner {
  pathFor(sandboxId: string): string;
  /** netnsPath null: no network namespace, only the IPC (and UTS) pins. */
  create(netnsPath: string | null, opts: { sysctls: Record<string, string>; ipcPath?: string; utsPath?: string; hostname?: string }): Promise<void>;
  remove(paths: string[]): Promise<void>;
  isPinned(path: string): Promise<boolean>;
}

/** The pause container: creating, starting and stopping it through the handler's OCI runtime. */
export interface SandboxContainerRuntime {
  /** Writes the bundle and runs `create`; returns the pause PID. Undo is `destroy`. */
  create(handler: RuntimeHandlerConfig, record: SandboxRecord, bundle: SandboxBundleInput): Promise<number>;
  /** Runs `start`. */
  start(handler: RuntimeHandlerConfig, id: string): Promise<void>;
  /** Stops and deletes the container; unknown to the runtime is fine. */
  destroy(handler: RuntimeHandlerConfig, id: string): Promise<void>;
}

export interface SandboxBundleInput {
  bundleDir: string;
  /** The sandbox root filesystem (absolute) and the pause command in it. */
  rootfsPath: string;
  args: string[];
  hostname: string;
  hostnamePath: string;
  hostsPath: string;
  resolvConfPath: string;
  shmPath: string | null;
  logDirectory: string;
  sysctls: Record<string, string>;
}

/** The root filesystem of pause containers. */
export interface SandboxImageSource {
  /**
   * The built-in rootfs (shared, read-only: `path`), or a sandbox image (pulled if
   * missing) whose layers are mounted per pod (`chain`). `args` is the pause command.
   */
  resolve(): Promise<{ path: string; args: string[] } | { chain: string[]; args: string[] }>;
  mount(chain: string[], target: string, layerDir: string): Promise<void>;
  /** Unmounts; not mounted is fine. */
  unmount(target: string): Promise<void>;
}

export interface SandboxServiceDeps {
  config: CorralConfig;
  store: SandboxStore;
  logger: Logger;
  network: (handler: RuntimeHandlerConfig) => PodNetworkDriver;
  pinner: NamespacePinner;
  runtime: SandboxContainerRuntime;
  /** Where pause containers get their root filesystem: the built-in one or a sandbox image's layers. */
  sandboxImage: SandboxImageSource;
  /** Validates the pod's sysctls against its namespaces (throws with the reason) and adds the runtime's defaults. */
  prepareSysctls: (sysctls: Record<string, string>, opts: { hostNetwork: boolean; hostIpc: boolean }) => Record<string, string>;
}

/**
 * What the exclusive holder of a sandbox's lock may do to its record; it refuses to work
 * once the lock is released, so no record changes outside the lock.
 */
interface SandboxTx {
  /**
   * Makes the ID resolvable before its record is written (Run, before its first write): a
   * Stop or Remove given the ID then waits for the lock instead of answering "nothing to do".
   */
  claim(): void;
  /** A copy of the current record to change and save; undefined when there is none. */
  current(): SandboxRecord | undefined;
  /** Writes next to disk, then makes (a copy of) it the record readers see, indexed. */
  save(next: SandboxRecord): Promise<void>;
  /** Deletes the record on disk, then forgets it. */
  forget(): Promise<void>;
}

export class SandboxService {
  readonly index = new IdIndex('pod sandbox');
  /** Reserved on the structured key (sandboxNameKey) of the pod's metadata. */
  private readonly names = new NameRegistry();
  /** What is on disk, as of the last SandboxTx.save: replaced, never mutated. */
  private readonly records = new Map<string, SandboxRecord>();
  private readonly locks = new SharedExclusiveLock();

  /** The pod's application containers: stopped with it, removed with it (set by the daemon). */
  containers: { stopAll(sandboxId: string): Promise<void>; removeAll(sandboxId: string): Promise<void> } = {
    stopAll: async () => {},
    removeAll: async () => {},
  };

  /** Told the layers a stopped pod's sandbox image no longer holds (set by the daemon). */
  layersReleased: (chain: string[]) => Promise<void> = async () => {};

  constructor(private readonly deps: SandboxServiceDeps) {}

  // ---------------------------------------------------------------- Run

  async run(config: any, runtimeHandler: string): Promise<string> {
    const metadata = podMetadata(config);
    const name = sandboxName(metadata);
    const key = sandboxNameKey(metadata);
    const id = generateId();
    let settle!: (id: string) => void;
    let fail!: (e: unknown) => void;
    const creation = new Promise<string>((res, rej) => {
      settle = res;
      fail = rej;
    });
    creation.catch(() => { /* observed by joiners only */ });
    const taken = this.names.reserve(key, id, creation);
    if (taken) return this.joinExisting(name, taken.id, taken.creation);

    try {
      await this.create(id, name, metadata, config, runtimeHandler);
      this.names.settle(key, id);
      settle(id);
      return id;
    } catch (e) {
      // Refused before anything existed, or rolled back completely: the name is free again.
      // (An incomplete rollback keeps the record, and with it the name, for Stop/Remove.)
      if (!this.records.has(id)) this.names.release(key, id);
      fail(e);
      throw e;
    }
  }

  /** A retry (or a concurrent twin) of a Run for a name that is taken. */
  private async joinExisting(name: string, id: string, creation: Promise<string> | undefined): Promise<string> {
    if (creation) return creation;
    const rec = this.records.get(id);
    if (rec) return id;
    throw internalError(`pod sandbox name "${name}" is reserved for ${id}, which no longer exists`);
  }

  private async create(id: string, name: string, metadata: SandboxRecord['metadata'], config: any, requestedHandler: string): Promise<void> {
    const { config: cfg, logger, pinner, runtime } = this.deps;
    const log = logger.child({ sandbox: id, pod: `${metadata.namespace}/${metadata.name}` });
    const timings: Record<string, number> = {};
    const timed = async <T>(step: string, fn: () => Promise<T>): Promise<T> => {
      const t0 = performance.now();
      try {
        return await fn();
      } finally {
        timings[step] = Math.round((performance.now() - t0) * 100) / 100;
      }
    };
    const t0 = performance.now();

    // Decide everything that can be refused before touching the host.
    const annotations: Record<string, string> = config.annotations ?? {};
    const ns = namespaceChoice(config);
    const hostNetwork = ns.network === 'NODE';
    const hostIpc = ns.ipc === 'NODE';
    const handler = selectHandler(requestedHandler, annotations, ns, cfg);
    const order = networkOrder(annotations);
    const mode = infraMode(handler, ns, cfg.dropInfraContainer);
    let sysctls: Record<string, string>;
    try {
      sysctls = this.deps.prepareSysctls(config.linux?.sysctls ?? {}, { hostNetwork, hostIpc });
    } catch (e) {
      throw e instanceof CriError ? e : invalidArgument((e as Error).message);
    }
    const logDirectory: string = config.logDirectory ?? '';
    if (logDirectory && !path.isAbsolute(logDirectory)) throw invalidArgument(`log_directory must be an absolute path, got "${logDirectory}"`);
    const hostname = podHostname(config, hostNetwork, os.hostname());
    const network = this.deps.network(handler);
    // The sandbox image is pulled (if it must be) before anything of the pod exists.
    const sandboxRootfs = mode === 'pause' ? await timed('image', () => this.deps.sandboxImage.resolve()) : undefined;

    // Every resource this Run may create, decided up front and recorded as intent in one
    // durable write before the first side effect: teardown of each is idempotent, so a
    // crash at any point is rolled back from this record alone (two writes per Run).
    const volatileDir = this.volatileDir(id);
    // Which namespaces are pinned follows from the pod's shape alone (namespacePlan), and
    // each sysctl goes to the holder of its namespace: pins here, the pause in its spec.
    const plan = namespacePlan(ns, mode);
    const { pins, ...pinOpts } = podPins(plan, {
      netnsPath: plan.network === 'pin' ? pinner.pathFor(id) : null,
      stateDir: volatileDir,
      hostname,
      sysctls,
    });
    const netnsPath = pinOpts.netnsPath;
    const shmPath = hostIpc ? null : path.join(volatileDir, 'shm');

    const record: SandboxRecord = {
      version: 1,
      id,
      name,
      metadata,
      config,
      runtimeHandler: handler.name,
      infraMode: mode,
      networkOrder: order,
      hostNetwork,
      privileged: isPrivileged(config, ns),
      netnsPath,
      state: 'creating',
      createdAt: nowNs(),
      network: null,
      resources: {
        pins,
        cniAttached: !hostNetwork,
        shmMount: shmPath,
        container: mode === 'pause',
        rootfs: sandboxRootfs && 'chain' in sandboxRootfs ? { target: path.join(volatileDir, 'rootfs'), chain: sandboxRootfs.chain } : null,
      },
      pid: 0,
      pidStartTime: '',
      timings,
    };
    // The lock is taken before the first side effect and held through the rollback: a Stop
    // or Remove of this ID (it is indexed at step 1) waits for the outcome, then acts on it.
    await this.exclusive(id, async (tx) => {
      const undo = new UndoStack();

      try {
        // 1. The record first: from here on a crash is rolled back by the restart sweep.
        // Undo pushed first: a failed write may still have made the record's directory.
        tx.claim();
        undo.push('forget sandbox record', async (failed) => {
          // Anything left behind keeps the record visible (NOTREADY) so Stop/Remove can finish.
          if (failed === 0) await tx.forget();
        });
        await timed('record', () => tx.save(record));

        await fs.mkdir(volatileDir, { recursive: true, mode: 0o711 });
        undo.push('remove sandbox state dir', async (failed) => {
          if (failed === 0) await fs.rm(volatileDir, { recursive: true, force: true });
        });

        // 2. The pod's own namespaces (network; IPC/UTS without a pause), pinned before anything else.
        if (pins.length > 0) {
          await timed('netns', () => pinner.create(netnsPath, pinOpts));
          undo.push('remove pinned namespaces', () => pinner.remove(pins));
        }

        // 3. hostname, hosts, resolv.conf and the pod's /dev/shm.
        const files = sandboxFilePaths(volatileDir);
        await timed('files', () => writeSandboxFiles(files, hostname, resolvConf(config.dnsConfig)));
        if (shmPath) {
          undo.push('unmount shm', () => unmountShm(shmPath));
          await timed('shm', () => mountShm(shmPath));
        }

        const attachNetwork = async () => {
          if (hostNetwork) return;
          // Pushed before ADD: a failed ADD may still have reserved an IP.
          undo.push('CNI DEL', () => network.tearDown(this.networkIdentity(record)));
          record.network = await timed('cni', () =>
            network.setUp({
              ...this.networkIdentity(record),
              portMappings: cniPortMappings(config.portMappings),
              annotations,
              dns: config.dnsConfig ? { servers: config.dnsConfig.servers ?? [], searches: config.dnsConfig.searches ?? [], options: config.dnsConfig.options ?? [] } : undefined,
              cgroupPath: config.linux?.cgroupParent || undefined,
            }),
          );
        };

        const rootfs = record.resources.rootfs;
        if (rootfs) {
          undo.push('unmount sandbox rootfs', () => this.deps.sandboxImage.unmount(rootfs.target));
          await timed('rootfs', () => this.deps.sandboxImage.mount(rootfs.chain, rootfs.target, path.join(volatileDir, 'rootfs-layer')));
        }

        // 4. Network first (default): the netns is wired before the sandbox container is created.
        if (order === 'network-first' || mode === 'pinned') await attachNetwork();

        // 5. The pause container, if this pod needs one.
        if (mode === 'pause') {
          undo.push('delete sandbox container', () => runtime.destroy(handler, id));
          record.pid = await timed('create', () =>
            runtime.create(handler, record, {
              bundleDir: path.join(volatileDir, 'bundle'),
              rootfsPath: rootfs ? rootfs.target : (sandboxRootfs as { path: string }).path,
              args: sandboxRootfs!.args,
              hostname,
              hostnamePath: files.hostname,
              hostsPath: files.hosts,
              resolvConfPath: files.resolvConf,
              shmPath,
              logDirectory,
              sysctls,
            }),
          );
          await timed('start', () => runtime.start(handler, id));
          const started = await processStartTime(record.pid);
          if (started === null) throw new Error(`the sandbox container's process ${record.pid} exited right after start`);
          record.pidStartTime = started;
        }

        // 6. Start first (by annotation): the network is wired into the running sandbox.
        if (order === 'start-first' && mode === 'pause') await attachNetwork();

        record.state = 'ready';
        timings.total = Math.round((performance.now() - t0) * 100) / 100;
        await tx.save(record);
        undo.commit();
        log.info({ timings, handler: handler.name, mode, order, ip: record.network?.podIp }, 'pod sandbox ready');
      } catch (e) {
        const err = e as Error;
        log.warn({ err: err.message, undo: undo.size }, 'RunPodSandbox failed, rolling back');
        const failures = await undo.unwind();
        if (failures.length > 0) {
          // Something could not be undone: keep the sandbox visible as NOTREADY, its name
          // reserved, so kubelet's Stop/Remove (or the restart sweep) finish the job.
          record.state = 'notready';
          record.lastError = `${err.message}; rollback incomplete: ${failures.map((f) => `${f.step}: ${f.error.message}`).join('; ')}`;
          await tx.save(record).catch(() => {});
          log.error({ failures: failures.map((f) => ({ step: f.step, err: f.error.message })) }, 'rollback incomplete');
        }
        throw e instanceof CriError ? e : internalError(`RunPodSandbox for pod ${metadata.namespace}/${metadata.name}: ${err.message}`);
      }
    });
  }

  private networkIdentity(record: SandboxRecord) {
    return {
      containerId: record.id,
      netnsPath: record.netnsPath ?? '',
      podName: record.metadata.name,
      podNamespace: record.metadata.namespace,
      podUid: record.metadata.uid,
    };
  }

  volatileDir(id: string): string {
    return path.join(this.deps.config.stateDir, 'sandboxes', id);
  }

  // ---------------------------------------------------------------- Stop / Remove

  /** Makes "nothing of the sandbox runs and its network is released" true. Unknown IDs are fine. */
  async stop(idOrPrefix: string): Promise<void> {
    const id = this.index.tryResolve(idOrPrefix);
    if (id === undefined) return;
    await this.exclusive(id, (tx) => this.stopLocked(tx, id));
  }

  /**
   * persist=false when the record is about to be deleted anyway (Remove): then the sandbox
   * image layers this Stop released are returned, for the caller to report once the record
   * is gone (image GC asks layersInUse, which reads the committed records).
   */
  private async stopLocked(tx: SandboxTx, id: string, persist = true): Promise<string[] | undefined> {
    const record = tx.current();
    if (!record) return undefined;
    const { pinner, runtime, logger } = this.deps;
    const handler = this.deps.config.runtimes[record.runtimeHandler];
    const res = record.resources;
    const timings: Record<string, number> = {};
    const step = async (name: string, fn: () => Promise<void>) => {
      const t0 = performance.now();
      await fn();
      timings[name] = Math.round((performance.now() - t0) * 100) / 100;
    };
    let releasedLayers: string[] | undefined;
    // Each step is idempotent and guarded by its done-marker; the record is written once at
    // the end (or on failure): a crash in between only means the next Stop redoes a step.
    try {
      // The pause and the CNI attachments do not depend on each other (the netns is held
      // by its pin either way), so they are released concurrently.
      const stopContainer = async () => {
        if (!res.container) return;
        if (!handler) throw new Error(`runtime handler "${record.runtimeHandler}" is no longer configured; cannot stop its container`);
        await step('container', () => runtime.destroy(handler, id));
        res.container = false;
        record.pid = 0;
      };
      const detachNetwork = async () => {
        if (!res.cniAttached) return;
        const netnsPath = record.netnsPath && (await pinner.isPinned(record.netnsPath)) ? record.netnsPath : '';
        const driver = this.deps.network(handler ?? this.deps.config.runtimes[this.deps.config.defaultRuntime]!);
        await step('cni', () => driver.tearDown({ ...this.networkIdentity(record), netnsPath }));
        res.cniAttached = false;
      };
      // Application containers first: they live in the namespaces released below.
      await this.containers.stopAll(id);
      const released = await Promise.allSettled([stopContainer(), detachNetwork()]);
      const failed = released.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).message] : []));
      if (failed.length > 0) throw new Error(failed.join('; '));
      if (res.rootfs) {
        const { target, chain } = res.rootfs;
        await step('rootfs', () => this.deps.sandboxImage.unmount(target));
        res.rootfs = null;
        releasedLayers = chain;
      }
      if (res.shmMount) {
        await step('shm', () => unmountShm(res.shmMount!));
        res.shmMount = null;
      }
      if (res.pins.length > 0) {
        await step('netns', () => pinner.remove(res.pins));
        res.pins = [];
      }
      if (record.state !== 'notready' || record.lastError || Object.keys(timings).length > 0) {
        record.state = 'notready';
        delete record.lastError;
        if (persist) await tx.save(record);
      }
      logger.info({ sandbox: id, timings }, 'pod sandbox stopped');
      if (!persist) return releasedLayers;
      await this.reportReleased(releasedLayers);
      return undefined;
    } catch (e) {
      const msg = (e as Error).message;
      record.state = 'notready';
      record.lastError = `stop incomplete: ${msg}`;
      await tx.save(record).catch(() => {});
      await this.reportReleased(releasedLayers);
      logger.warn({ sandbox: id, err: msg }, 'StopPodSandbox incomplete; the next Stop retries');
      throw internalError(`stopping pod sandbox ${id}: ${msg}`);
    }
  }

  /** Stops if needed, then forgets the sandbox and frees its name. Unknown IDs are fine. */
  async remove(idOrPrefix: string): Promise<void> {
    const id = this.index.tryResolve(idOrPrefix);
    if (id === undefined) return;
    await this.exclusive(id, async (tx) => {
      const record = tx.current();
      if (!record) return;
      await this.containers.removeAll(id);
      const releasedLayers = await this.stopLocked(tx, id, false);
      await fs.rm(this.volatileDir(id), { recursive: true, force: true });
      await tx.forget();
      this.names.release(sandboxNameKey(record.metadata), id);
      this.deps.logger.info({ sandbox: id }, 'pod sandbox removed');
      await this.reportReleased(releasedLayers);
    });
  }

  /** Tells image GC about layers a stopped pod no longer mounts; only once its record says so. */
  private async reportReleased(chain: string[] | undefined): Promise<void> {
    if (!chain) return;
    await this.layersReleased(chain).catch((e: Error) => this.deps.logger.warn({ err: e.message }, 'collecting released image layers failed'));
  }

  /** The only way to change a sandbox record: under its exclusive lock, disk first. */
  private exclusive<T>(id: string, fn: (tx: SandboxTx) => Promise<T>): Promise<T> {
    return this.locks.exclusive(id, async () => {
      let held = true;
      const check = () => {
        if (!held) throw new Error(`pod sandbox ${id}: record changed after its lock was released`);
      };
      const tx: SandboxTx = {
        claim: () => {
          check();
          this.index.add(id);
        },
        current: () => {
          check();
          const rec = this.records.get(id);
          return rec && structuredClone(rec);
        },
        save: async (next) => {
          check();
          if (next.id !== id) throw new Error(`pod sandbox ${id}: cannot save the record of ${next.id}`);
          const committed = structuredClone(next);
          await this.deps.store.save(committed);
          next.updatedAt = committed.updatedAt;
          this.records.set(id, committed);
          this.index.add(id);
        },
        forget: async () => {
          check();
          await this.deps.store.remove(id);
          this.records.delete(id);
          this.index.delete(id);
        },
      };
      try {
        return await fn(tx);
      } finally {
        held = false;
      }
    });
  }

  /**
   * Runs fn with the sandbox's lock held shared (the container calls of a pod): Run, Stop
   * and Remove of the pod wait until fn is done, and fn starts only after they are. fn gets
   * the sandbox's record as of then (stable while fn runs), or undefined if it has none.
   * Must not be called from inside Stop/Remove (they hold the lock exclusively).
   */
  underSharedLock<T>(id: string, fn: (sandbox: SandboxRecord | undefined) => Promise<T>): Promise<T> {
    return this.locks.shared(id, () => fn(this.records.get(id)));
  }

  // ---------------------------------------------------------------- Status / List

  /**
   * The record, for PodSandboxStatus. A sandbox still being created is NOT_FOUND, as in
   * containerd (which stores a sandbox only once Run has finished): kubelet learns the ID
   * from Run's answer, and a NOTREADY answer would make it kill the pod and start another
   * attempt instead of retrying the Run, which joins the creation under way.
   */
  get(idOrPrefix: string): SandboxRecord {
    const id = this.index.resolve(idOrPrefix);
    const rec = this.records.get(id);
    // Indexed without a record: claimed by a Run about to write it.
    if (!rec || rec.state === 'creating') throw notFound(`pod sandbox ${id} is still being created`);
    return rec;
  }

  /** What ListPodSandbox shows: sandboxes still being created are left out (see get). */
  all(): SandboxRecord[] {
    return [...this.records.values()].filter((r) => r.state !== 'creating');
  }

  /** READY only while its namespaces are held: the pause process alive, or the pins in place. */
  async liveState(rec: SandboxRecord): Promise<'SANDBOX_READY' | 'SANDBOX_NOTREADY'> {
    if (rec.state !== 'ready') return 'SANDBOX_NOTREADY';
    if (rec.infraMode === 'pause') {
      const start = await processStartTime(rec.pid);
      if (start === null || start !== rec.pidStartTime) return 'SANDBOX_NOTREADY';
    } else if (!(await Promise.all(rec.resources.pins.map((p) => this.deps.pinner.isPinned(p)))).every(Boolean)) {
      return 'SANDBOX_NOTREADY';
    }
    return 'SANDBOX_READY';
  }

  /** Chain IDs of image layers mounted by sandboxes: image garbage collection keeps them. */
  layersInUse(): Set<string> {
    const out = new Set<string>();
    for (const r of this.records.values()) r.resources.rootfs?.chain.forEach((c) => out.add(c));
    return out;
  }

  // ---------------------------------------------------------------- Recovery

  /**
   * Loads every record after a restart. Sandboxes caught half-created are rolled back;
   * a record that cannot be read is reported and left alone, never fatal.
   */
  async recover(): Promise<{ recovered: number; rolledBack: number; unreadable: number }> {
    const { store, logger } = this.deps;
    const loaded = await store.loadAll();
    for (const bad of loaded.errors) logger.error({ dir: bad.dir, err: bad.error }, 'unreadable sandbox record skipped');
    let rolledBack = 0;
    for (const rec of loaded.records) {
      this.records.set(rec.id, rec);
      this.index.add(rec.id);
      this.names.reserve(sandboxNameKey(rec.metadata), rec.id);
    }
    await Promise.all(
      loaded.records
        .filter((rec) => rec.state === 'creating')
        .map(async (rec) => {
          try {
            await this.remove(rec.id);
            rolledBack++;
            logger.warn({ sandbox: rec.id }, 'half-created sandbox from before the restart rolled back');
          } catch (e) {
            logger.error({ sandbox: rec.id, err: (e as Error).message }, 'rolling back a half-created sandbox failed; it stays NOTREADY');
          }
        }),
    );
    return { recovered: this.records.size, rolledBack, unreadable: loaded.errors.length };
  }
}
