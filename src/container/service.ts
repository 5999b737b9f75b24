/**
 * Application containers in a pod sandbox: create (root filesystem from the image's
 * shared layers, OCI spec joining the pod's namespaces, `create` run by conmon, which
 * stays as the container's monitor: CRI log file and exit code), start, stop, remove,
 * status, list and ExecSync. CreateContainer reads like RunPodSandbox: every undo is
 * pushed beside its step and the intent is recorded before the side effects.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { CorralConfig, RuntimeHandlerConfig } from '../config/config.js';
import type { Logger } from '../util/log.js';
import { UndoStack } from '../util/undo.js';
import { isErrno, writeJsonAtomic } from '../util/atomic.js';
import { CriError, alreadyExists, deadlineExceeded, failedPrecondition, internalError, invalidArgument, notFound } from '../cri/errors.js';
import { IdIndex, generateId } from '../sandbox/ids.js';
import { NameRegistry } from '../sandbox/names.js';
import type { SandboxService } from '../sandbox/service.js';
import type { SandboxRecord } from '../sandbox/record.js';
import { sandboxFilePaths } from '../sandbox/files.js';
import type { ImageService } from '../image/image-service.js';
import { mountOverlayRootfs, unmountOverlayRootfs } from '../image/snapshots.js';
import type { OciRuntime } from '../oci/runtime.js';
import { cgroupfsCgroupsPath, clampOomScoreAdj } from '../oci/spec.js';
import { readSeccompProfile, resolveSeccomp } from '../oci/seccomp-choice.js';
import { readImageAccountFile } from '../image/image-user.js';
import { buildContainerSpec, containerArgs, containerCapabilities, containerEnv, mountPropagationOf, propagationProblem, resolveUser, type PodNamespaces } from '../oci/container-spec.js';
import { conmonCreate, readExitCode, removeConmonFiles, waitForExit } from '../oci/conmon.js';
import type { ContainerRecord } from './record.js';
import { ContainerStore } from '../store/container-store.js';
import { KeyedLock } from '../util/keyed-lock.js';

export interface ContainerServiceDeps {
  config: CorralConfig;
  logger: Logger;
  sandboxes: SandboxService;
  images: ImageService;
  runtimeFor: (handler: RuntimeHandlerConfig) => OciRuntime;
  availableCapabilities: readonly string[];
  /** The lowest oom_score_adj the runtime can set (see oomScoreAdjFloor). */
  oomScoreAdjFloor: number;
}

/** resolveUser, with what it refuses reported as the caller's mistake (INVALID_ARGUMENT). */
function userOrRefuse(opts: Parameters<typeof resolveUser>[0]) {
  try {
    return resolveUser(opts);
  } catch (e) {
    throw invalidArgument((e as Error).message);
  }
}

const nowNs = () => (BigInt(Date.now()) * 1_000_000n).toString();

export class ContainerService {
  readonly index = new IdIndex('container');
  private readonly names = new NameRegistry();
  private readonly records = new Map<string, ContainerRecord>();
  private readonly locks = new KeyedLock();
  readonly store: ContainerStore;

  /** Told the layers a removed container no longer holds (set by the daemon). */
  layersReleased: (chain: string[]) => Promise<void> = async () => {};

  constructor(private readonly deps: ContainerServiceDeps) {
    this.store = new ContainerStore(deps.config.rootDir);
  }

  private volatileDir(id: string): string {
    return path.join(this.deps.config.stateDir, 'containers', id);
  }
  private get socketDir(): string {
    return path.join(this.deps.config.stateDir, 'attach');
  }
  private get exitDir(): string {
    return path.join(this.deps.config.stateDir, 'exits');
  }

  // ---------------------------------------------------------------- Create

  async create(sandboxIdOrPrefix: string, config: any): Promise<string> {
    const { sandboxes, images, logger } = this.deps;
    if (!sandboxIdOrPrefix) throw invalidArgument('pod_sandbox_id is required');
    const meta = config?.metadata;
    if (!meta?.name) throw invalidArgument('container metadata.name is required');
    const imageRef: string = config?.image?.image ?? '';
    if (!imageRef) throw invalidArgument('container image is required (ContainerConfig.image.image)');
    const sandbox = sandboxes.get(sandboxIdOrPrefix);
    if ((await sandboxes.liveState(sandbox)) !== 'SANDBOX_READY') {
      throw failedPrecondition(`pod sandbox ${sandbox.id} is not ready; containers can only be created in a ready sandbox`);
    }
    const image = await images.find(imageRef);
    if (!image) throw notFound(`image "${imageRef}" is not present; pull it first`);
    const handler = this.deps.config.runtimes[sandbox.runtimeHandler];
    if (!handler) throw failedPrecondition(`the sandbox's runtime handler "${sandbox.runtimeHandler}" is no longer configured`);
    const attempt = Number(meta.attempt ?? 0);
    const name = [meta.name, sandbox.metadata.name, sandbox.metadata.namespace, sandbox.metadata.uid, String(attempt)].join('_');
    const id = generateId();
    const taken = this.names.reserve(name, id);
    if (taken) throw alreadyExists(`container name "${name}" is reserved for container ${taken.id}`);

    const log = logger.child({ container: id, sandbox: sandbox.id });
    const vdir = this.volatileDir(id);
    const logDir: string = sandbox.config.logDirectory ?? '';
    const logPath = config.logPath ? (logDir ? path.join(logDir, config.logPath) : '') : '';
    const imageConfig = await images.runtimeConfig(image);
    const record: ContainerRecord = {
      version: 1,
      id,
      sandboxId: sandbox.id,
      name,
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
      stopSignal: String(imageConfig.StopSignal || 'SIGTERM'),
      resources: {
        rootfs: { target: path.join(vdir, 'rootfs'), layerDir: path.join(this.store.recordDir(id), 'layer'), chain: image.chainIds },
        runtimeContainer: true,
      },
    };
    const undo = new UndoStack();
    try {
      // 1. The intent, before anything exists: a crash from here on is undone at start.
      await this.store.save(record);
      undo.push('forget container record', async (failed) => {
        if (failed === 0) await this.store.remove(id);
      });
      // 2. The root filesystem: the image's layers under a writable layer of its own.
      const rootfs = record.resources.rootfs!;
      undo.push('unmount rootfs', async () => {
        await unmountOverlayRootfs(rootfs.target);
        await fs.rm(vdir, { recursive: true, force: true });
      });
      await mountOverlayRootfs(images.store.snapshots, { chain: rootfs.chain, target: rootfs.target, layerDir: rootfs.layerDir });
      // 3. The bundle.
      const spec = await this.spec(record, sandbox, imageConfig);
      const bundleDir = path.join(vdir, 'bundle');
      await fs.mkdir(bundleDir, { recursive: true, mode: 0o711 });
      await writeJsonAtomic(path.join(bundleDir, 'config.json'), spec, 0o600);
      if (logPath) await fs.mkdir(path.dirname(logPath), { recursive: true });
      // 4. conmon runs the runtime's create and stays as the monitor. Undo first: it can half-succeed.
      const runtime = this.deps.runtimeFor(handler);
      undo.push('delete runtime container', () => runtime.delete(id, true));
      await fs.mkdir(this.exitDir, { recursive: true, mode: 0o700 });
      const created = await conmonCreate({
        id,
        name: meta.name,
        bundleDir,
        runtimePath: runtime.binary,
        runtimeRoot: runtime.root,
        logPath: logPath || path.join(vdir, 'console.log'),
        exitDir: this.exitDir,
        socketDir: this.socketDir,
        pidFile: path.join(vdir, 'pid'),
        conmonPidFile: path.join(vdir, 'conmon.pid'),
        timeoutMs: 60_000,
      });
      record.pid = created.pid;
      record.state = 'created';
      await this.store.save(record);
      undo.commit();
    } catch (e) {
      log.warn({ err: (e as Error).message }, 'CreateContainer failed, rolling back');
      const failures = await undo.unwind();
      if (failures.length === 0) this.names.release(name, id);
      else {
        record.state = 'exited';
        record.reason = 'CreateFailed';
        record.message = `${(e as Error).message}; rollback incomplete: ${failures.map((f) => `${f.step}: ${f.error.message}`).join('; ')}`;
        await this.store.save(record).catch(() => {});
        this.records.set(id, record);
        this.index.add(id);
      }
      if (e instanceof CriError) throw e;
      throw internalError(`creating container ${meta.name} in pod sandbox ${sandbox.id}: ${(e as Error).message}`);
    }
    this.records.set(id, record);
    this.index.add(id);
    log.info({ image: imageRef }, 'container created');
    return id;
  }

  private async spec(record: ContainerRecord, sandbox: SandboxRecord, imageConfig: any) {
    const c = record.config;
    const linux = c.linux ?? {};
    const sc = linux.securityContext ?? {};
    const rootfs = record.resources.rootfs!.target;
    const readText = (p: 'etc/passwd' | 'etc/group') => readImageAccountFile(rootfs, p);
    const user = userOrRefuse({
      runAsUser: sc.runAsUser ? Number(sc.runAsUser.value) : undefined,
      runAsGroup: sc.runAsGroup ? Number(sc.runAsGroup.value) : undefined,
      runAsUsername: sc.runAsUsername || undefined,
      imageUser: String(imageConfig.User ?? ''),
      supplementalGroups: (sc.supplementalGroups ?? []).map(Number),
      passwd: await readText('etc/passwd'),
      group: await readText('etc/group'),
    });
    const args = containerArgs(c.command ?? [], c.args ?? [], imageConfig);
    if (args.length === 0) throw invalidArgument('the container has no command: neither the config nor the image gives one');
    const privileged = Boolean(sc.privileged);
    const caps = containerCapabilities(privileged, sc.capabilities?.addCapabilities ?? [], sc.capabilities?.dropCapabilities ?? [], this.deps.availableCapabilities);
    const res = linux.resources ?? {};
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
      namespaces: this.podNamespaces(sandbox, sc.namespaceOptions ?? {}),
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
      resolvConfPath: files.resolvConf,
      shmPath: sandbox.resources.shmMount ?? null,
      annotations: c.annotations ?? {},
    });
  }

  /** Where the pod's namespaces are: the pause process's, or the pins when there is no pause. */
  private podNamespaces(sandbox: SandboxRecord, opts: { pid?: string | number; targetId?: string }): PodNamespaces {
    const podOpts = sandbox.config.linux?.securityContext?.namespaceOptions ?? {};
    const mode = (v: unknown) => (v === 2 || v === 'NODE' ? 'NODE' : v === 1 || v === 'CONTAINER' ? 'CONTAINER' : v === 3 || v === 'TARGET' ? 'TARGET' : 'POD');
    const pause = sandbox.infraMode === 'pause' && sandbox.pid > 0 ? `/proc/${sandbox.pid}/ns` : null;
    const pin = (suffix: string) => sandbox.resources.pins.find((p) => p.endsWith(`/${suffix}`));
    const hostIpc = mode(podOpts.ipc) === 'NODE';
    const network = sandbox.netnsPath ?? 'host';
    const ipc = hostIpc ? 'host' : (pause ? `${pause}/ipc` : pin('ipcns'));
    const uts = sandbox.hostNetwork ? 'host' : (pause ? `${pause}/uts` : pin('utsns'));
    if (!ipc || !uts) throw failedPrecondition(`pod sandbox ${sandbox.id} holds no IPC/UTS namespace to join (stopped?)`);
    let pid: PodNamespaces['pid'];
    const pidMode = mode(opts.pid ?? podOpts.pid);
    if (mode(podOpts.pid) === 'NODE') pid = 'host';
    else if (pidMode === 'POD') {
      if (!pause) throw failedPrecondition(`pod sandbox ${sandbox.id} has no pause process holding a shared PID namespace`);
      pid = `${pause}/pid`;
    } else if (pidMode === 'TARGET') {
      const target = this.records.get(this.index.resolve(opts.targetId ?? ''));
      if (!target || target.pid <= 0) throw failedPrecondition(`target container ${opts.targetId} is not running`);
      pid = `/proc/${target.pid}/ns/pid`;
    } else pid = 'new';
    return { network, ipc, uts, pid };
  }

  // ---------------------------------------------------------------- Start / Stop / Remove

  async start(idOrPrefix: string): Promise<void> {
    const id = this.index.resolve(idOrPrefix);
    await this.locked(id, async () => {
      const rec = this.records.get(id)!;
      await this.refresh(rec);
      if (rec.state !== 'created') throw failedPrecondition(`container ${id} is ${rec.state}, not created; it cannot be started`);
      const handler = this.handlerOf(rec);
      try {
        await this.deps.runtimeFor(handler).start(id);
      } catch (e) {
        rec.state = 'exited';
        rec.finishedAt = nowNs();
        rec.exitCode = 128;
        rec.reason = 'StartError';
        rec.message = (e as Error).message;
        await this.store.save(rec);
        throw internalError(`starting container ${id}: ${(e as Error).message}`);
      }
      rec.state = 'running';
      rec.startedAt = nowNs();
      await this.store.save(rec);
    });
  }

  /** Signals the container to stop, waits up to timeoutSeconds, then kills it. Idempotent. */
  async stop(idOrPrefix: string, timeoutSeconds: number): Promise<void> {
    const id = this.index.resolve(idOrPrefix);
    await this.locked(id, () => this.stopLocked(id, timeoutSeconds));
  }

  private async stopLocked(id: string, timeoutSeconds: number): Promise<void> {
    const rec = this.records.get(id);
    if (!rec) return;
    await this.refresh(rec);
    if (rec.state === 'exited') return;
    const runtime = this.deps.runtimeFor(this.handlerOf(rec));
    if (rec.state === 'running' && timeoutSeconds > 0) {
      await runtime.kill(id, rec.stopSignal.replace(/^SIG/, ''), false);
      if ((await waitForExit(this.exitDir, id, timeoutSeconds * 1000)) !== null) {
        await this.refresh(rec);
        return;
      }
    }
    // A created-but-never-started container, or one that ignored its stop signal.
    await runtime.kill(id, 'KILL', true);
    const code = await waitForExit(this.exitDir, id, 10_000);
    if (code === null && rec.state === 'running') throw internalError(`container ${id} did not exit after SIGKILL`);
    await this.refresh(rec);
    if ((rec.state as string) !== 'exited') {
      rec.state = 'exited';
      rec.finishedAt = nowNs();
      rec.exitCode = 137;
      rec.reason = 'Error';
      await this.store.save(rec);
    }
  }

  /** Kills it if needed and removes everything it had. Unknown IDs are fine. */
  async remove(idOrPrefix: string): Promise<void> {
    const id = this.index.tryResolve(idOrPrefix);
    if (id === undefined) return;
    await this.locked(id, async () => {
      const rec = this.records.get(id);
      if (!rec) return;
      await this.release(rec);
      await this.store.remove(id);
      this.records.delete(id);
      this.index.delete(id);
      this.names.release(rec.name, id);
      this.deps.logger.info({ container: id }, 'container removed');
    });
  }

  /** Tears down what a record says may exist: runtime container, rootfs mount, volatile files. */
  private async release(rec: ContainerRecord): Promise<void> {
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
    if (res.rootfs) {
      const { target, chain } = res.rootfs;
      await unmountOverlayRootfs(target);
      res.rootfs = null;
      await this.layersReleased(chain).catch((e: Error) => this.deps.logger.warn({ err: e.message }, 'collecting released image layers failed'));
    }
    await fs.rm(this.volatileDir(rec.id), { recursive: true, force: true });
    // The exit file, and the attach symlink conmon leaves in the socket dir.
    await removeConmonFiles({ id: rec.id, exitDir: this.exitDir, socketDir: this.socketDir });
  }

  /** Stops every container of a sandbox (its Stop); they stay listed as exited. */
  async stopAllIn(sandboxId: string): Promise<void> {
    const ids = [...this.records.values()].filter((r) => r.sandboxId === sandboxId).map((r) => r.id);
    await Promise.all(ids.map((id) => this.locked(id, () => this.stopLocked(id, 0))));
  }

  /** Removes every container of a sandbox (its Remove). */
  async removeAllIn(sandboxId: string): Promise<void> {
    const ids = [...this.records.values()].filter((r) => r.sandboxId === sandboxId).map((r) => r.id);
    await Promise.all(ids.map((id) => this.remove(id)));
  }

  // ---------------------------------------------------------------- Status / List / Exec

  get(idOrPrefix: string): ContainerRecord {
    return this.records.get(this.index.resolve(idOrPrefix))!;
  }

  async status(idOrPrefix: string): Promise<ContainerRecord> {
    const rec = this.get(idOrPrefix);
    await this.refresh(rec);
    return rec;
  }

  async list(): Promise<ContainerRecord[]> {
    const all = [...this.records.values()];
    await Promise.all(all.map((r) => this.refresh(r)));
    return all;
  }

  async execSync(idOrPrefix: string, cmd: string[], timeoutSeconds: number): Promise<{ stdout: Buffer; stderr: Buffer; exitCode: number }> {
    if (!cmd || cmd.length === 0) throw invalidArgument('ExecSync needs a command');
    const rec = await this.status(idOrPrefix);
    if (rec.state !== 'running') throw failedPrecondition(`container ${rec.id} is ${rec.state}, not running`);
    const r = await this.deps.runtimeFor(this.handlerOf(rec)).exec(rec.id, cmd, timeoutSeconds > 0 ? timeoutSeconds * 1000 : 0);
    if (r.timedOut) throw deadlineExceeded(`command ${JSON.stringify(cmd)} in container ${rec.id} timed out after ${timeoutSeconds}s`);
    return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode };
  }

  /** Image layers mounted by containers, kept by image garbage collection. */
  layersInUse(): Set<string> {
    const out = new Set<string>();
    for (const r of this.records.values()) r.resources.rootfs?.chain.forEach((c) => out.add(c));
    return out;
  }

  /** A running container whose exit conmon recorded becomes exited, with its code. */
  private async refresh(rec: ContainerRecord): Promise<void> {
    if (rec.state !== 'running' && rec.state !== 'created') return;
    const code = await readExitCode(this.exitDir, rec.id);
    if (code === null) return;
    rec.state = 'exited';
    rec.exitCode = code;
    rec.reason = code === 0 ? 'Completed' : 'Error';
    const st = await fs.stat(path.join(this.exitDir, rec.id)).catch(() => undefined);
    rec.finishedAt = st ? (BigInt(Math.round(st.mtimeMs)) * 1_000_000n).toString() : nowNs();
    rec.pid = 0;
    await this.store.save(rec);
  }

  private handlerOf(rec: ContainerRecord): RuntimeHandlerConfig {
    const h = this.deps.config.runtimes[rec.runtimeHandler];
    if (!h) throw failedPrecondition(`runtime handler "${rec.runtimeHandler}" of container ${rec.id} is no longer configured`);
    return h;
  }

  private locked<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(id, fn);
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
      this.names.reserve(rec.name, rec.id);
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
