/**
 * Application containers in a pod sandbox: create (root filesystem from the image's
 * shared layers, OCI spec joining the pod's namespaces, `create` run by conmon, which
 * stays as the container's monitor: CRI log file and exit code), start, stop, remove,
 * status, list and ExecSync. CreateContainer reads like RunPodSandbox: a list of steps,
 * each undo pushed beside its step, the intent recorded before the side effects, and the
 * same failure policy (runWithRollback).
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { CorralConfig, RuntimeHandlerConfig } from '../config/config.js';
import type { Logger } from '../util/log.js';
import { UndoStack, runWithRollback } from '../util/undo.js';
import { isErrno, writeJsonAtomic } from '../util/atomic.js';
import { CorralError, alreadyExists, deadlineExceeded, failedPrecondition, internalError, invalidArgument, notFound } from '../errors.js';
import { IdIndex, generateId } from '../store/ids.js';
import { NameRegistry, containerName, containerNameKey } from '../store/names.js';
import type { SandboxService } from '../sandbox/service.js';
import type { SandboxRecord } from '../sandbox/record.js';
import type { ContainerConfig, ContainerMetadata, ImageSpec, LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext } from '../cri-api/types.js';
import { PIN_FILES, namespaceChoice, namespaceMode, namespacePlan } from '../sandbox/options.js';
import { sandboxFilePaths } from '../sandbox/files.js';
import type { ImageService } from '../image/image-service.js';
import type { ImageRuntimeConfig } from '../image/image-config.js';
import type { OciRuntime } from '../oci/runtime.js';
import { cgroupfsCgroupsPath, clampOomScoreAdj } from '../oci/cgroups.js';
import { readSeccompProfile, resolveSeccomp } from '../oci/seccomp-choice.js';
import { readImageAccountFile } from '../image/image-user.js';
import { buildContainerSpec, containerArgs, containerLogPath, containerCapabilities, containerEnv, mountPropagationOf, propagationProblem, resolveUser, type PodNamespaces } from '../oci/container-spec.js';
import type { ConmonCreateOptions } from '../oci/conmon.js';
import type { ContainerRecord } from './record.js';
import { ResourceValueError, ociResourcesFromCri } from '../oci/update-resources.js';
import { HugepageLimitError, applyHugepageLimits, hostIsCgroupV2 } from '../oci/cgroup-limits.js';
import { ContainerStore } from '../store/container-store.js';
import { capabilitiesForHandler, isRunscHandler, type RunscUsage } from '../oci/runsc.js';
import { KeyedLock } from '../util/keyed-lock.js';
import { nowNs } from '../util/time.js';
import type { RuntimeObserver } from '../observer.js';
import { NO_LIFECYCLE_EVENTS, type LifecycleEventType, type LifecyclePublisher } from '../events/lifecycle.js';

/** Containers' root filesystems: the image's shared layers under a writable layer of their own. */
export interface ContainerRootfs {
  /** Mounts chain's layers at target, the writable layer in layerDir; may leave target or a mount behind when it fails. */
  mount(chain: string[], target: string, layerDir: string): Promise<void>;
  /** Unmounts; not mounted is fine. */
  unmount(target: string): Promise<void>;
}

/** conmon's create options, less the folders the monitor keeps for every container. */
export type MonitorCreateOptions = Omit<ConmonCreateOptions, 'exitDir' | 'socketDir'>;

/** conmon, each container's monitor: it runs the runtime's create, then stays for the log and the exit code. */
export interface ContainerMonitor {
  /** Runs the runtime's `create` under a new monitor; returns the init PID. Can half-succeed: undo is the runtime's delete. */
  create(opts: MonitorCreateOptions): Promise<{ pid: number }>;
  /** The exit the monitor recorded (code, and when, in ns); null while the container has not exited. */
  readExit(id: string): Promise<{ code: number; finishedAt: string } | null>;
  /**
   * IDs of the containers that have an exit record (or one being written): a container not in
   * the set has not exited, so readExit need not be asked. Undefined when the monitor cannot
   * tell (then readExit is asked of each).
   */
  exitedIds?(): ReadonlySet<string> | undefined;
  /** The exit code once recorded, waiting up to timeoutMs; null if none came. */
  waitForExit(id: string, timeoutMs: number): Promise<number | null>;
  /** The files the monitor keeps for the container (exit code, attach link); none is fine. */
  removeFiles(id: string): Promise<void>;
  /** Closes the container's log file (kubelet renamed it) and starts a new one at logPath; resolves once it is there. */
  reopenLog(opts: { id: string; bundleDir: string; logPath: string; conmonPidFile: string }): Promise<void>;
}

export interface ContainerServiceDeps {
  config: CorralConfig;
  logger: Logger;
  sandboxes: SandboxService;
  images: ImageService;
  runtimeFor: (handler: RuntimeHandlerConfig) => OciRuntime;
  /** Required (no default), wired once by the daemon: a test cannot reach a real mount or conmon by forgetting a fake. */
  rootfs: ContainerRootfs;
  monitor: ContainerMonitor;
  availableCapabilities: readonly string[];
  /** The lowest oom_score_adj the runtime can set (see oomScoreAdjFloor). */
  oomScoreAdjFloor: number;
  /** Told when conmon's create (the runtime's create under it) fails (metrics). */
  observer?: RuntimeObserver;
}

/** containerLogPath, with what it refuses reported as the caller's mistake (INVALID_ARGUMENT). */
function containerLogPathOrRefuse(logDirectory: string, logPath: unknown): string {
  try {
    return containerLogPath(logDirectory, logPath);
  } catch (e) {
    throw invalidArgument((e as Error).message);
  }
}

/** resolveUser, with what it refuses reported as the caller's mistake (INVALID_ARGUMENT). */
function userOrRefuse(opts: Parameters<typeof resolveUser>[0]) {
  try {
    return resolveUser(opts);
  } catch (e) {
    throw invalidArgument((e as Error).message);
  }
}

export class ContainerService {
  readonly index = new IdIndex('container');
  private readonly names = new NameRegistry();
  private readonly records = new Map<string, ContainerRecord>();
  private readonly locks = new KeyedLock();
  readonly store: ContainerStore;

  /** Told the layers a removed container no longer holds (set by the daemon). */
  layersReleased: (chain: string[]) => Promise<void> = async () => {};

  /** Told every committed state change: created, started, stopped, deleted (set by the daemon). */
  events: LifecyclePublisher = NO_LIFECYCLE_EVENTS;

  constructor(private readonly deps: ContainerServiceDeps) {
    this.store = new ContainerStore(deps.config.rootDir);
  }

  private volatileDir(id: string): string {
    return path.join(this.deps.config.stateDir, 'containers', id);
  }

  // ---------------------------------------------------------------- Create

  async create(sandboxIdOrPrefix: string, config: ContainerConfig): Promise<string> {
    if (!sandboxIdOrPrefix) throw invalidArgument('pod_sandbox_id is required');
    if (!config?.metadata?.name) throw invalidArgument('container metadata.name is required');
    if (!config?.image?.image) throw invalidArgument('container image is required (ContainerConfig.image.image)');
    const sandboxId = this.deps.sandboxes.index.resolve(sandboxIdOrPrefix);
    // The pod's lock, shared: its Stop/Remove wait for this creation (and see the container
    // it made), and a creation arriving after them finds the pod stopped or gone.
    return this.deps.sandboxes.underSharedLock(sandboxId, (sandbox) => this.createLocked(sandboxId, sandbox, config as CheckedContainerConfig));
  }

  /**
   * CreateContainer as a list of steps, as RunPodSandbox: everything refusable is checked
   * first, then each step pushes its undo beside its side effect, and the same policy
   * (runWithRollback) unwinds them on failure.
   */
  private async createLocked(sandboxId: string, sandbox: SandboxRecord | undefined, config: CheckedContainerConfig): Promise<string> {
    const { sandboxes, images, logger } = this.deps;
    const meta = config.metadata;
    const imageRef: string = config.image.image;
    if (!sandbox || sandbox.state === 'creating') throw notFound(`pod sandbox ${sandboxId} not found`);
    if ((await sandboxes.liveState(sandbox)) !== 'SANDBOX_READY') {
      throw failedPrecondition(`pod sandbox ${sandbox.id} is not ready; containers can only be created in a ready sandbox`);
    }
    const image = await images.find(imageRef);
    if (!image) throw notFound(`image "${imageRef}" is not present; pull it first`);
    const handler = this.deps.config.runtimes[sandbox.runtimeHandler];
    if (!handler) throw failedPrecondition(`the sandbox's runtime handler "${sandbox.runtimeHandler}" is no longer configured`);
    const attempt = Number(meta.attempt ?? 0);
    // Refused before the name is reserved: nothing to roll back.
    const logPath = containerLogPathOrRefuse(sandbox.config.logDirectory ?? '', config.logPath);
    const name = containerName(meta.name, sandbox.metadata, attempt);
    const nameKey = containerNameKey(meta.name, sandbox.metadata, attempt);
    const id = generateId();
    const log = logger.child({ container: id, sandbox: sandbox.id });
    const vdir = this.volatileDir(id);

    const undo = new UndoStack();
    // Set by recordIntent: an incomplete rollback keeps it listed (and the name reserved).
    let intent: ContainerRecord | undefined;
    try {
      await runWithRollback(
        undo,
        async () => {
          // 1. The name, first: every failure from here on frees it, unless something could not be undone.
          this.reserveName(undo, id, name, nameKey);
          const imageConfig = await images.runtimeConfig(image);
          const record: ContainerRecord = {
            version: 1,
            id,
            sandboxId: sandbox.id,
            name,
            nameKey,
            metadata: { name: meta.name, attempt },
            config,
            imageId: image.id,
            imageRef,
            runtimeHandler: handler.name,
            state: 'creating',
            createdAt: nowNs(),
            startedAt: '0',
            finishedAt: '0',
            exitCode: 0,
            reason: '',
            message: '',
            pid: 0,
            logPath,
            stopSignal: imageConfig.StopSignal || 'SIGTERM',
            resources: {
              rootfs: { target: path.join(vdir, 'rootfs'), layerDir: path.join(this.store.recordDir(id), 'layer'), chain: image.chainIds },
              runtimeContainer: true,
            },
          };
          intent = record;
          // 2. The intent, before anything exists: a crash from here on is undone at start.
          await this.recordIntent(undo, record);
          // 3. The root filesystem: the image's layers under a writable layer of its own.
          await this.mountRootfs(undo, record);
          // 4. The bundle (inside the container's state folder, removed with the rootfs).
          const bundleDir = await this.writeBundle(record, sandbox, imageConfig);
          // 5. conmon runs the runtime's create and stays as the monitor.
          await this.createWithConmon(undo, record, handler, bundleDir);
          record.state = 'created';
          await this.persist(record);
        },
        {
          logger: log,
          what: 'CreateContainer',
          onIncomplete: async (message) => {
            if (!intent) return;
            const record = intent;
            record.state = 'exited';
            record.reason = 'CreateFailed';
            record.message = message;
            // Listed even if the write fails: RemoveContainer must be able to finish the job.
            await this.store.save(record).catch(() => {});
            this.records.set(id, structuredClone(record));
            this.index.add(id);
          },
        },
      );
    } catch (e) {
      if (e instanceof CorralError) throw e;
      throw internalError(`creating container ${meta.name} in pod sandbox ${sandbox.id}: ${(e as Error).message}`);
    }
    log.info({ image: imageRef }, 'container created');
    return id;
  }

  private reserveName(undo: UndoStack, id: string, name: string, nameKey: string): void {
    const taken = this.names.reserve(nameKey, id);
    if (taken) throw alreadyExists(`container name "${name}" is reserved for container ${taken.id}`);
    undo.push('release container name', async (failed) => {
      // Something left behind keeps the name, with the record, for RemoveContainer to finish.
      if (failed === 0) this.names.release(nameKey, id);
    });
  }

  private async recordIntent(undo: UndoStack, record: ContainerRecord): Promise<void> {
    // Pushed first: a failed write may still have made the record's directory.
    undo.push('forget container record', async (failed) => {
      if (failed === 0) await this.store.remove(record.id);
    });
    await this.store.save(record);
  }

  private async mountRootfs(undo: UndoStack, record: ContainerRecord): Promise<void> {
    const rootfs = record.resources.rootfs!;
    const vdir = this.volatileDir(record.id);
    // Pushed first: a half-done mount may have left the state folder or a mount.
    undo.push('unmount rootfs', async () => {
      await this.deps.rootfs.unmount(rootfs.target);
      await fs.rm(vdir, { recursive: true, force: true });
    });
    await this.deps.rootfs.mount(rootfs.chain, rootfs.target, rootfs.layerDir);
  }

  /** The OCI spec, in the bundle folder; the log file's folder. Returns the bundle folder. */
  private async writeBundle(record: ContainerRecord, sandbox: SandboxRecord, imageConfig: ImageRuntimeConfig): Promise<string> {
    const spec = await this.spec(record, sandbox, imageConfig);
    const bundleDir = path.join(this.volatileDir(record.id), 'bundle');
    await fs.mkdir(bundleDir, { recursive: true, mode: 0o711 });
    await writeJsonAtomic(path.join(bundleDir, 'config.json'), spec, 0o600);
    if (record.logPath) await fs.mkdir(path.dirname(record.logPath), { recursive: true });
    return bundleDir;
  }

  private async createWithConmon(undo: UndoStack, record: ContainerRecord, handler: RuntimeHandlerConfig, bundleDir: string): Promise<void> {
    const { id } = record;
    const vdir = this.volatileDir(id);
    const runtime = this.deps.runtimeFor(handler);
    // Pushed first: create can half-succeed.
    undo.push('delete runtime container', () => runtime.delete(id, true));
    const created = await this.deps.monitor.create({
      id,
      name: record.metadata.name,
      bundleDir,
      runtimePath: runtime.binary,
      runtimeRoot: runtime.root,
      logPath: this.monitorLogPath(record),
      logSizeMax: this.deps.config.containerLogSizeMax,
      pidFile: path.join(vdir, 'pid'),
      conmonPidFile: path.join(vdir, 'conmon.pid'),
      persistDir: this.persistDir(id),
      timeoutMs: 60_000,
      stdin: Boolean(record.config?.stdin),
      stdinOnce: Boolean(record.config?.stdinOnce),
      terminal: Boolean(record.config?.tty),
    }).catch((e: unknown) => {
      this.deps.observer?.runtimeFailed(handler.name, 'create');
      throw e;
    });
    record.pid = created.pid;
  }

  /** Where conmon writes `oom` when the kernel's OOM killer hit the container. */
  private persistDir(id: string): string {
    return path.join(this.volatileDir(id), 'persist');
  }

  /** Where the monitor writes the container's output: the CRI log path, else a file of our own. */
  private monitorLogPath(record: ContainerRecord): string {
    return record.logPath || path.join(this.volatileDir(record.id), 'console.log');
  }

  private async spec(record: ContainerRecord, sandbox: SandboxRecord, imageConfig: ImageRuntimeConfig) {
    const c = record.config;
    const linux = c.linux ?? ({} as Partial<LinuxContainerConfig>);
    const sc = linux.securityContext ?? ({} as Partial<LinuxContainerSecurityContext>);
    const rootfs = record.resources.rootfs!.target;
    const readText = (p: 'etc/passwd' | 'etc/group') => readImageAccountFile(rootfs, p);
    const user = userOrRefuse({
      runAsUser: sc.runAsUser ? Number(sc.runAsUser.value) : undefined,
      runAsGroup: sc.runAsGroup ? Number(sc.runAsGroup.value) : undefined,
      runAsUsername: sc.runAsUsername || undefined,
      imageUser: imageConfig.User,
      supplementalGroups: (sc.supplementalGroups ?? []).map(Number),
      passwd: await readText('etc/passwd'),
      group: await readText('etc/group'),
    });
    const args = containerArgs(c.command ?? [], c.args ?? [], imageConfig);
    if (args.length === 0) throw invalidArgument('the container has no command: neither the config nor the image gives one');
    const privileged = Boolean(sc.privileged);
    const handler = this.deps.config.runtimes[record.runtimeHandler];
    const available = handler ? capabilitiesForHandler(handler, this.deps.availableCapabilities) : this.deps.availableCapabilities;
    const caps = containerCapabilities(privileged, sc.capabilities?.addCapabilities ?? [], sc.capabilities?.dropCapabilities ?? [], available);
    const res = linux.resources ?? ({} as Partial<LinuxContainerResources>);
    const mounts = [];
    for (const m of c.mounts ?? []) {
      if (!m.containerPath || !m.hostPath) throw invalidArgument('every mount needs container_path and host_path');
      // kubelet makes its volume dirs; a missing host path is created as a directory, as containerd does.
      await fs.mkdir(m.hostPath, { recursive: true }).catch((e) => {
        if (!isErrno(e, 'EEXIST')) throw e;
      });
      const mount = { containerPath: m.containerPath, hostPath: m.hostPath, readonly: Boolean(m.readonly), propagation: m.propagation };
      if (m.propagation === 'PROPAGATION_BIDIRECTIONAL' || m.propagation === 'PROPAGATION_HOST_TO_CONTAINER') {
        const problem = propagationProblem(mount, mountPropagationOf(await fs.readFile('/proc/self/mountinfo', 'utf8'), await fs.realpath(m.hostPath)));
        if (problem) throw failedPrecondition(problem);
      }
      mounts.push(mount);
    }
    const files = sandboxFilePaths(this.deps.sandboxes.volatileDir(sandbox.id));
    const oom = res.oomScoreAdj !== undefined && res.oomScoreAdj !== null ? clampOomScoreAdj(Number(res.oomScoreAdj), this.deps.oomScoreAdjFloor) : undefined;
    return buildContainerSpec({
      containerId: record.id,
      containerName: record.metadata.name,
      sandboxId: sandbox.id,
      sandboxName: sandbox.metadata.name,
      sandboxNamespace: sandbox.metadata.namespace,
      sandboxUid: sandbox.metadata.uid,
      imageName: record.imageRef,
      rootfsPath: rootfs,
      args,
      env: containerEnv(imageConfig.Env ?? [], c.envs ?? []),
      cwd: c.workingDir || imageConfig.WorkingDir || '/',
      user,
      namespaces: await this.podNamespaces(sandbox, sc.namespaceOptions ?? {}),
      hostCgroupV2: await hostIsCgroupV2(),
      privileged,
      readOnlyRootfs: Boolean(sc.readonlyRootfs),
      noNewPrivileges: Boolean(sc.noNewPrivs),
      capabilities: caps,
      seccomp: await resolveSeccomp(sc, readSeccompProfile),
      cgroupsPath: cgroupfsCgroupsPath(sandbox.config.linux?.cgroupParent ?? '', record.id),
      oomScoreAdj: oom,
      resources: {
        cpuShares: Number(res.cpuShares ?? 0) || undefined,
        cpuQuota: Number(res.cpuQuota ?? 0) || undefined,
        cpuPeriod: Number(res.cpuPeriod ?? 0) || undefined,
        memoryLimitInBytes: Number(res.memoryLimitInBytes ?? 0) || undefined,
        cpusetCpus: res.cpusetCpus || undefined,
        cpusetMems: res.cpusetMems || undefined,
      },
      mounts,
      maskedPaths: sc.maskedPaths?.length ? sc.maskedPaths : undefined,
      readonlyPaths: sc.readonlyPaths?.length ? sc.readonlyPaths : undefined,
      hostnamePath: files.hostname,
      hostsPath: files.hosts,
      terminal: Boolean(c.tty),
      resolvConfPath: files.resolvConf,
      shmPath: sandbox.resources.shmMount ?? null,
      annotations: c.annotations ?? {},
    });
  }

  /**
   * Where the pod's namespaces are, from the same plan RunPodSandbox pinned them by
   * (namespacePlan): the host's, the pause process's, or the pins.
   */
  private async podNamespaces(sandbox: SandboxRecord, opts: { pid?: string | number; targetId?: string }): Promise<PodNamespaces> {
    const plan = namespacePlan(namespaceChoice(sandbox.config), sandbox.infraMode);
    const pause = sandbox.infraMode !== 'pinned' && sandbox.pid > 0 ? `/proc/${sandbox.pid}/ns` : null;
    const pinOf = (file: string) => sandbox.resources.pins.find((p) => path.basename(p) === file);
    const held = (holder: 'host' | 'pause' | 'pin', type: 'ipc' | 'uts') => {
      const where = holder === 'host' ? 'host' : holder === 'pause' ? (pause ? `${pause}/${type}` : undefined) : pinOf(PIN_FILES[type]);
      if (!where) throw failedPrecondition(`pod sandbox ${sandbox.id} holds no ${type.toUpperCase()} namespace to join (stopped?)`);
      return where;
    };
    const network = plan.network === 'host' ? 'host' : sandbox.netnsPath;
    if (!network) throw failedPrecondition(`pod sandbox ${sandbox.id} holds no network namespace to join`);
    const ipc = held(plan.ipc, 'ipc');
    const uts = held(plan.uts, 'uts');
    let pid: PodNamespaces['pid'];
    const pidMode = namespaceMode(opts.pid ?? (plan.pid === 'pause' ? 'POD' : 'CONTAINER'));
    if (plan.pid === 'host') pid = 'host';
    else if (pidMode === 'POD') {
      if (!pause) throw failedPrecondition(`pod sandbox ${sandbox.id} has no pause process holding a shared PID namespace`);
      pid = `${pause}/pid`;
    } else if (pidMode === 'TARGET') pid = await this.targetPidNamespace(sandbox, opts.targetId);
    else pid = 'new';
    return { network, ipc, uts, pid };
  }

  /** TARGET PID mode: the PID namespace of a running container of the same pod (as containerd checks). */
  private async targetPidNamespace(sandbox: SandboxRecord, targetId: string | undefined): Promise<string> {
    if (!targetId) throw invalidArgument('PID namespace mode TARGET needs target_id');
    const id = this.index.tryResolve(targetId);
    const target = id === undefined ? undefined : this.records.get(id);
    if (!target) throw notFound(`target container ${targetId} of PID namespace mode TARGET does not exist`);
    if (target.sandboxId !== sandbox.id) {
      throw invalidArgument(`target container ${target.id} is in pod sandbox ${target.sandboxId}, not in ${sandbox.id}: a container can only share the PID namespace of a container of its own pod`);
    }
    const now = await this.withExit(target); // read only: the target's own lock is not held here
    if (now.state !== 'running' || now.pid <= 0) throw failedPrecondition(`target container ${now.id} is ${now.state}, not running: there is no PID namespace to join`);
    return `/proc/${now.pid}/ns/pid`;
  }

  // ---------------------------------------------------------------- Start / Stop / Remove

  async start(idOrPrefix: string): Promise<void> {
    const id = this.index.resolve(idOrPrefix);
    await this.podCall(id, async () => {
      const rec = await this.refreshLocked(id);
      if (!rec) throw notFound(`container ${id} was removed`);
      if (rec.state !== 'created') throw failedPrecondition(`container ${id} is ${rec.state}, not created; it cannot be started`);
      const handler = this.handlerOf(rec);
      const next = structuredClone(rec);
      try {
        await this.deps.runtimeFor(handler).start(id);
      } catch (e) {
        next.state = 'exited';
        next.finishedAt = nowNs();
        next.exitCode = 128;
        next.reason = 'StartError';
        next.message = (e as Error).message;
        await this.persist(next);
        throw internalError(`starting container ${id}: ${(e as Error).message}`);
      }
      next.state = 'running';
      next.startedAt = nowNs();
      await this.persist(next);
    });
  }

  /** Signals the container to stop, waits up to timeoutSeconds, then kills it. Idempotent. */
  async stop(idOrPrefix: string, timeoutSeconds: number): Promise<void> {
    const id = this.index.resolve(idOrPrefix);
    await this.podCall(id, () => this.stopLocked(id, timeoutSeconds));
  }

  /** Under the container's lock. */
  private async stopLocked(id: string, timeoutSeconds: number): Promise<void> {
    const rec = await this.refreshLocked(id);
    if (!rec || rec.state === 'exited') return;
    const runtime = this.deps.runtimeFor(this.handlerOf(rec));
    if (rec.state === 'running' && timeoutSeconds > 0) {
      await runtime.kill(id, rec.stopSignal.replace(/^SIG/, ''), false);
      if ((await this.deps.monitor.waitForExit(id, timeoutSeconds * 1000)) !== null) {
        await this.refreshLocked(id);
        return;
      }
    }
    // A created-but-never-started container, or one that ignored its stop signal.
    await runtime.kill(id, 'KILL', true);
    const code = await this.deps.monitor.waitForExit(id, 10_000);
    if (code === null && rec.state === 'running') throw internalError(`container ${id} did not exit after SIGKILL`);
    const after = await this.refreshLocked(id);
    if (after && after.state !== 'exited') {
      const next = structuredClone(after);
      next.state = 'exited';
      next.finishedAt = nowNs();
      next.exitCode = 137;
      next.reason = 'Error';
      await this.persist(next);
    }
  }

  /** Kills it if needed and removes everything it had. Unknown IDs are fine. */
  async remove(idOrPrefix: string): Promise<void> {
    const id = this.index.tryResolve(idOrPrefix);
    if (id === undefined) return;
    await this.podCall(id, () => this.removeLocked(id));
  }

  /** Under the container's lock. */
  private async removeLocked(id: string): Promise<void> {
    const rec = this.records.get(id);
    if (!rec) return;
    // release clears done-markers on its copy; the record is deleted (disk first) only once all is gone.
    const releasedLayers = await this.release(structuredClone(rec));
    await this.store.remove(id);
    this.records.delete(id);
    this.index.delete(id);
    this.names.release(rec.nameKey ?? rec.name, id);
    this.deps.logger.info({ container: id }, 'container removed');
    // A container caught half-created by a restart was never announced.
    if (rec.state !== 'creating') this.publish('deleted', rec);
    // Image GC asks layersInUse, which reads the records: only now are these layers free.
    if (releasedLayers) await this.layersReleased(releasedLayers).catch((e: Error) => this.deps.logger.warn({ err: e.message }, 'collecting released image layers failed'));
  }

  /**
   * Tears down what a record says may exist: runtime container, rootfs mount, volatile
   * files. Returns the image layers the unmounted root filesystem used.
   */
  private async release(rec: ContainerRecord): Promise<string[] | undefined> {
    const res = rec.resources;
    if (res.runtimeContainer) {
      const handler = this.deps.config.runtimes[rec.runtimeHandler];
      if (handler) {
        const runtime = this.deps.runtimeFor(handler);
        if (rec.state === 'running' || rec.state === 'created') await this.stopLocked(rec.id, 0).catch(() => {});
        await runtime.delete(rec.id, true);
      }
      res.runtimeContainer = false;
    }
    let releasedLayers: string[] | undefined;
    if (res.rootfs) {
      const { target, chain } = res.rootfs;
      await this.deps.rootfs.unmount(target);
      res.rootfs = null;
      releasedLayers = chain;
    }
    await fs.rm(this.volatileDir(rec.id), { recursive: true, force: true });
    // The exit file, and the attach symlink conmon leaves in the socket dir.
    await this.deps.monitor.removeFiles(rec.id);
    return releasedLayers;
  }

  /** Stops every container of a sandbox (its Stop); they stay listed as exited. */
  async stopAllIn(sandboxId: string): Promise<void> {
    const ids = [...this.records.values()].filter((r) => r.sandboxId === sandboxId).map((r) => r.id);
    await Promise.all(ids.map((id) => this.locked(id, () => this.stopLocked(id, 0))));
  }

  /**
   * Removes every container of a sandbox (its Remove, which holds the pod's lock exclusively:
   * no creation of the pod is under way, so every container it has is in the records).
   */
  async removeAllIn(sandboxId: string): Promise<void> {
    const ids = [...this.records.values()].filter((r) => r.sandboxId === sandboxId).map((r) => r.id);
    await Promise.all(ids.map((id) => this.locked(id, () => this.removeLocked(id))));
  }

  // ---------------------------------------------------------------- Status / List / Exec

  get(idOrPrefix: string): ContainerRecord {
    return this.records.get(this.index.resolve(idOrPrefix))!;
  }

  async status(idOrPrefix: string): Promise<ContainerRecord> {
    return this.current(this.index.resolve(idOrPrefix));
  }

  async list(): Promise<ContainerRecord[]> {
    // One listing of the monitor's exit records, rather than a read (a failing open) for every
    // live container: only those that have one can have exited.
    const exited = this.deps.monitor.exitedIds?.();
    const all = await Promise.all(
      [...this.records].map(([id, rec]) => (exited && !exited.has(id) ? rec : this.current(id).catch(() => undefined))),
    );
    return all.filter((r): r is ContainerRecord => r !== undefined);
  }

  async execSync(idOrPrefix: string, cmd: string[], timeoutSeconds: number, signal?: AbortSignal): Promise<{ stdout: Buffer; stderr: Buffer; exitCode: number }> {
    if (!cmd || cmd.length === 0) throw invalidArgument('ExecSync needs a command');
    if (cmd.some((a) => typeof a !== 'string' || a.includes('\0')) || cmd[0] === '') throw invalidArgument('ExecSync: cmd must be strings without NUL bytes, the first one not empty');
    const rec = await this.status(idOrPrefix);
    if (rec.state !== 'running') throw failedPrecondition(`container ${rec.id} is ${rec.state}, not running`);
    let r;
    try {
      r = await this.deps.runtimeFor(this.handlerOf(rec)).exec(rec.id, cmd, { timeoutMs: timeoutSeconds > 0 ? timeoutSeconds * 1000 : 0, initPid: rec.pid, signal });
    } catch (e) {
      // The container may have exited meanwhile: say so rather than how exec failed.
      const now = await this.current(rec.id).catch(() => undefined);
      if (now?.state !== 'running') throw failedPrecondition(`container ${rec.id} is ${now?.state ?? 'removed'}, not running`);
      throw internalError(`exec in container ${rec.id}: ${(e as Error).message}`);
    }
    if (r.timedOut && signal?.aborted) throw deadlineExceeded(`the client of ExecSync went away; command ${JSON.stringify(cmd)} in container ${rec.id} and every process it started were killed`);
    if (r.timedOut) throw deadlineExceeded(`command ${JSON.stringify(cmd)} in container ${rec.id} timed out after ${timeoutSeconds}s; it and every process it started were killed`);
    return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode };
  }

  /**
   * gVisor: a running container's CPU and memory from runsc (its processes live in the
   * sandbox, with no host cgroup of their own); undefined for other runtimes (read cgroups).
   */
  runtimeUsage(rec: ContainerRecord): Promise<RunscUsage | null> | undefined {
    const h = this.deps.config.runtimes[rec.runtimeHandler];
    if (!h || !isRunscHandler(h)) return undefined;
    return this.deps.runtimeFor(h).runscUsage(rec.id).catch(() => null);
  }

  /** ReopenContainerLog: the monitor closes the log file (kubelet rotated it) and starts a new one at its path. */
  async reopenLog(idOrPrefix: string): Promise<void> {
    const rec = await this.status(idOrPrefix);
    // As containerd: only a running container has a monitor writing its log.
    if (rec.state !== 'running') throw failedPrecondition(`container ${rec.id} is not running (${rec.state}): it has no log to reopen`);
    // writeBundle's folder, where conmon keeps its control FIFO; conmon's pid file as createWithConmon names it.
    const vdir = this.volatileDir(rec.id);
    await this.deps.monitor.reopenLog({ id: rec.id, bundleDir: path.join(vdir, 'bundle'), logPath: this.monitorLogPath(rec), conmonPidFile: path.join(vdir, 'conmon.pid') });
  }

  /**
   * UpdateContainerResources: the runtime applies the new limits to the container's cgroup,
   * then the record keeps them (disk first), for ContainerStatus and after a restart.
   */
  async updateResources(idOrPrefix: string, linux: Partial<LinuxContainerResources>): Promise<void> {
    let oci;
    try {
      oci = ociResourcesFromCri(linux);
    } catch (e) {
      if (e instanceof ResourceValueError) throw invalidArgument(`UpdateContainerResources: ${e.message}`);
      throw e;
    }
    const id = this.index.resolve(idOrPrefix);
    await this.podCall(id, async () => {
      const rec = await this.refreshLocked(id);
      if (!rec) throw notFound(`container ${id} was removed`);
      if (rec.state !== 'running' && rec.state !== 'created') throw failedPrecondition(`container ${id} is ${rec.state}: only a created or running container's resources can be updated`);
      if (oci.unified && !(await hostIsCgroupV2())) throw failedPrecondition('unified (cgroup v2) keys need a cgroup v2 host; this host runs cgroup v1');
      try {
        await this.deps.runtimeFor(this.handlerOf(rec)).update(id, oci);
        await applyHugepageLimits(rec.pid, id, oci.hugepageLimits ?? []);
      } catch (e) {
        const now = await this.withExit(rec);
        if (now.state === 'exited') throw failedPrecondition(`container ${id} exited while its resources were updated`);
        if (e instanceof HugepageLimitError) throw failedPrecondition(`updating the resources of container ${id}: ${e.message}`);
        throw internalError(`updating the resources of container ${id}: ${(e as Error).message}`);
      }
      const next = structuredClone(rec);
      next.linuxResources = structuredClone(linux);
      await this.persist(next);
    });
  }

  /** The Linux resources the container runs with: the last update's, else its config's. */
  linuxResourcesOf(rec: ContainerRecord): Partial<LinuxContainerResources> | null {
    return rec.linuxResources ?? rec.config.linux?.resources ?? null;
  }

  /** Image layers mounted by containers, kept by image garbage collection. */
  layersInUse(): Set<string> {
    const out = new Set<string>();
    for (const r of this.records.values()) r.resources.rootfs?.chain.forEach((c) => out.add(c));
    return out;
  }

  /**
   * The container's record with the exit conmon recorded (for Status and List). Writing it
   * back needs the container's lock (a Remove may be under way); when an operation holds
   * the lock (a Stop waiting out its grace period), it records the exit itself, so Status
   * answers from what it read instead of waiting.
   */
  private async current(id: string): Promise<ContainerRecord> {
    const rec = this.records.get(id);
    if (!rec) throw notFound(`container ${id} not found`);
    const seen = await this.withExit(rec);
    if (seen === rec || this.locks.busy(id)) return seen;
    return (await this.locked(id, () => this.refreshLocked(id))) ?? seen;
  }

  /**
   * Records the exit conmon wrote for a running (or created) container and returns the
   * current record; undefined once removed. Only under the container's lock: the record is
   * read here, under the lock Remove takes too, so a removed record is never written back.
   */
  private async refreshLocked(id: string): Promise<ContainerRecord | undefined> {
    const rec = this.records.get(id);
    if (!rec) return undefined;
    const next = await this.withExit(rec);
    if (next !== rec) await this.persist(next);
    return next;
  }

  /** rec as exited (a copy) when conmon recorded its exit; rec itself otherwise. Writes nothing. */
  private async withExit(rec: ContainerRecord): Promise<ContainerRecord> {
    if (rec.state !== 'running' && rec.state !== 'created') return rec;
    const exit = await this.deps.monitor.readExit(rec.id);
    if (exit === null) return rec;
    const next = structuredClone(rec);
    next.state = 'exited';
    next.exitCode = exit.code;
    // conmon leaves `oom` when the kernel's OOM killer hit the container (as cri-o reads it).
    const oomKilled = await fs.access(path.join(this.persistDir(rec.id), 'oom')).then(() => true, () => false);
    next.reason = oomKilled ? 'OOMKilled' : exit.code === 0 ? 'Completed' : 'Error';
    next.finishedAt = exit.finishedAt;
    next.pid = 0;
    return next;
  }

  /**
   * Disk first, then memory (a copy: what readers hold is never changed under them); a change
   * of state is then published. Every write of one container's record is under its lock (or,
   * while it is created, before anyone else can see it), so its events come in order.
   */
  private async persist(next: ContainerRecord): Promise<void> {
    const committed = structuredClone(next);
    await this.store.save(committed);
    const before = this.records.get(committed.id)?.state;
    this.records.set(committed.id, committed);
    this.index.add(committed.id);
    const event = stateChangeEvent(before, committed.state);
    if (event) this.publish(event, committed);
  }

  private publish(type: LifecycleEventType, rec: ContainerRecord): void {
    try {
      this.events.publish({ type, containerId: rec.id, sandboxId: rec.sandboxId, at: nowNs(), sandbox: this.deps.sandboxes.peek(rec.sandboxId), containers: this.recordsIn(rec.sandboxId) });
    } catch (e) {
      // The change is committed: a failing listener must not turn it into a failed call.
      this.deps.logger.warn({ container: rec.id, event: type, err: (e as Error).message }, 'publishing a container event failed');
    }
  }

  /** The records of a pod's containers, as committed. */
  recordsIn(sandboxId: string): ContainerRecord[] {
    return [...this.records.values()].filter((r) => r.sandboxId === sandboxId);
  }

  /**
   * conmon recorded an exit for the container (the daemon watches its exit files): the record
   * says so from now on, and STOPPED is published, even when nobody asks for its status.
   */
  async noticeExit(id: string): Promise<void> {
    const rec = this.records.get(id);
    if (!rec || (rec.state !== 'running' && rec.state !== 'created')) return;
    if ((await this.deps.monitor.readExit(id)) === null) return;
    // After whatever holds the lock (a Start that persists `running` first, a Stop that records the exit itself).
    await this.locked(id, () => this.refreshLocked(id));
  }

  /** noticeExit for every container that may have exited: the exit watcher's safety net. */
  async noticeExits(): Promise<void> {
    const live = [...this.records.values()].filter((r) => r.state === 'running' || r.state === 'created');
    await Promise.all(live.map((r) => this.noticeExit(r.id).catch(() => undefined)));
  }

  private handlerOf(rec: ContainerRecord): RuntimeHandlerConfig {
    const h = this.deps.config.runtimes[rec.runtimeHandler];
    if (!h) throw failedPrecondition(`runtime handler "${rec.runtimeHandler}" of container ${rec.id} is no longer configured`);
    return h;
  }

  private locked<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(id, fn);
  }

  /**
   * A call on one container: its pod's lock shared (the pod's Run/Stop/Remove exclude it),
   * then the container's own. Always in this order; Stop/Remove of the pod, which hold the
   * pod's lock exclusively, take only the containers' locks.
   */
  private podCall<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const rec = this.records.get(id);
    if (!rec) throw notFound(`container ${id} not found`);
    return this.deps.sandboxes.underSharedLock(rec.sandboxId, () => this.locked(id, fn));
  }

  // ---------------------------------------------------------------- Recovery

  /** Loads records after a restart; containers caught half-created are removed. */
  async recover(): Promise<{ recovered: number; rolledBack: number }> {
    const loaded = await this.store.loadAll();
    for (const bad of loaded.errors) this.deps.logger.error({ dir: bad.dir, err: bad.error }, 'unreadable container record skipped');
    let rolledBack = 0;
    for (const rec of loaded.records) {
      this.records.set(rec.id, rec);
      this.index.add(rec.id);
      this.names.reserve(rec.nameKey ?? rec.name, rec.id);
    }
    for (const rec of loaded.records.filter((r) => r.state === 'creating')) {
      try {
        await this.remove(rec.id);
        rolledBack++;
      } catch (e) {
        this.deps.logger.error({ container: rec.id, err: (e as Error).message }, 'rolling back a half-created container failed');
      }
    }
    return { recovered: this.records.size, rolledBack };
  }
}

/** The event a committed change of state makes; none when the state did not change. */
export function stateChangeEvent(before: ContainerRecord['state'] | undefined, after: ContainerRecord['state']): LifecycleEventType | null {
  if (before === after) return null;
  if (after === 'created') return 'created';
  if (after === 'running') return 'started';
  // From created (a failed start, a kill before start) or running; not a record first written as exited.
  if (after === 'exited' && before !== undefined && before !== 'creating') return 'stopped';
  return null;
}

/** A ContainerConfig whose metadata and image create() has checked. */
type CheckedContainerConfig = ContainerConfig & { metadata: ContainerMetadata; image: ImageSpec };
