/**
 * The daemon: wires configuration, the CNI layer, namespace pinning, the OCI runtimes and
 * the sandbox lifecycle into the CRI server, recovers state from the last run, and shuts
 * down gracefully. Pods keep running across a daemon restart.
 */
import { promises as fs, existsSync } from 'node:fs';
import path from 'node:path';
import type { CorralConfig, RuntimeHandlerConfig } from './config/config.js';
import type { Logger } from './util/log.js';
import { nativeBinary } from './util/paths.js';
import { CniNetworks } from './network/pod-network.js';
import { createPinnedNetns, isNetnsPinned, listCorralNetns, netnsPathFor, removePinnedNetns, removePins, sandboxIdFromNetnsPath } from './network/netns.js';
import { OciRuntime, currentCapabilities, oomScoreAdjFloor, type OciRuntimeOptions } from './oci/runtime.js';
import { hostIsCgroupV2 } from './oci/cgroup-limits.js';
import { capabilitiesForHandler, isRunscHandler, writeRunscWrapper } from './oci/runsc.js';
import { BUILTIN_SANDBOX_IMAGE_NAME, DEFAULT_SANDBOX_OOM_SCORE_ADJ, buildSandboxSpec } from './oci/sandbox-spec.js';
import { cgroupfsCgroupsPath, clampOomScoreAdj } from './oci/cgroups.js';
import { validateSysctls, withDefaultSysctls } from './oci/sysctls.js';
import { ensureBuiltinSandboxRootfs, writeBundle } from './oci/sandbox-rootfs.js';
import { SandboxStore } from './store/sandbox-store.js';
import { startPodInit, stopPodInit } from './sandbox/pod-init.js';
import { SandboxService, type NamespacePinner, type PodNetworkDriver, type SandboxContainerRuntime, type SandboxImageSource } from './sandbox/service.js';
import { namespaceChoice } from './sandbox/options.js';
import { CriServer } from './cri/server.js';
import { RuntimeSettings, runtimeInfoHandlers } from './cri/runtime-info-rpc.js';
import { sandboxHandlers } from './cri/sandbox-rpc.js';
import { imageHandlers } from './cri/image-rpc.js';
import { containerHandlers } from './cri/container-rpc.js';
import { statsHandlers } from './cri/stats-rpc.js';
import { eventsHandlers } from './cri/events-rpc.js';
import { metricsHandlers } from './cri/metrics-rpc.js';
import { lifecycleHub } from './events/lifecycle.js';
import { exitFileNames, watchExits } from './container/exit-watcher.js';
import { ContainerService, type ContainerMonitor, type ContainerRootfs } from './container/service.js';
import { ImageService } from './image/image-service.js';
import { mountOverlayRootfs, unmountOverlayRootfs } from './image/snapshots.js';
import { CorralError } from './errors.js';
import { msToNs, nowNs } from './util/time.js';
import type { LinuxSandboxSecurityContext } from './cri-api/types.js';
import { StreamingListener } from './streaming/listener.js';
import { IdleCollector } from './util/idle-collector.js';

export interface Daemon {
  sandboxes: SandboxService;
  server: CriServer;
  shutdown(graceMs: number): Promise<void>;
}

export async function startDaemon(cfg: CorralConfig, logger: Logger): Promise<Daemon> {
  // What listens (or holds the event loop) so far: closed if a later step fails, or the
  // process would stay up half-started, serving nothing.
  const started: (() => Promise<void> | void)[] = [];
  try {
    return await startServing(cfg, logger, started);
  } catch (e) {
    for (const close of started.reverse()) await Promise.resolve().then(close).catch(() => {});
    throw e;
  }
}

async function startServing(cfg: CorralConfig, logger: Logger, started: (() => Promise<void> | void)[]): Promise<Daemon> {
  const t0 = Date.now();
  for (const bin of ['corral-nshelper', 'corral-pause', 'corral-unpack', 'corral-execreaper', 'corral-streamhelper', 'corral-podpause']) {
    if (!existsSync(nativeBinary(bin))) throw new Error(`${nativeBinary(bin)} is missing: build Corral first (npm run build)`);
  }
  await fs.mkdir(cfg.rootDir, { recursive: true, mode: 0o711 });
  await fs.mkdir(cfg.stateDir, { recursive: true, mode: 0o711 });
  await fs.mkdir(cfg.netnsDir, { recursive: true, mode: 0o755 });
  // Metrics only when asked for: prom-client is loaded here or not at all. Bound first, so a
  // taken address fails the start before anything else listens.
  const metrics = cfg.metricsAddress ? await (await import('./metrics/index.js')).startMetrics(cfg.metricsAddress, logger) : undefined;
  const observer = metrics?.metrics;
  if (metrics) started.push(() => metrics.server.close());

  const settings = new RuntimeSettings();
  const networks = new CniNetworks(cfg, logger, observer);
  await networks.reloadAll();

  // 'auto' clamps only where the daemon cannot lower scores (no CAP_SYS_RESOURCE); 'true' always clamps.
  const oomFloor =
    cfg.restrictOomScoreAdj === 'false' ? -1000
    : cfg.restrictOomScoreAdj === 'true' ? Number((await fs.readFile('/proc/self/oom_score_adj', 'utf8')).trim())
    : await oomScoreAdjFloor();
  const sandboxOomScoreAdj = clampOomScoreAdj(DEFAULT_SANDBOX_OOM_SCORE_ADJ, oomFloor);
  if (sandboxOomScoreAdj !== DEFAULT_SANDBOX_OOM_SCORE_ADJ) {
    logger.info({ requested: DEFAULT_SANDBOX_OOM_SCORE_ADJ, used: sandboxOomScoreAdj }, 'cannot lower oom_score_adj (no CAP_SYS_RESOURCE): clamping sandbox oom_score_adj');
  }
  const pauseRootfs = await ensureBuiltinSandboxRootfs(cfg.rootDir, nativeBinary('corral-pause'));
  // Privileged pods get every capability the daemon itself holds (runc refuses more).
  const availableCapabilities = await currentCapabilities();

  const pinner: NamespacePinner = {
    pathFor: (id) => netnsPathFor(cfg.netnsDir, id),
    create: (netnsPath, opts) => createPinnedNetns(netnsPath, opts),
    remove: (paths) => removePins(paths),
    isPinned: (p) => isNetnsPinned(p),
  };

  // gVisor handlers run runsc through a wrapper (see oci/runsc.ts), written now for conmon too.
  const runtimeOptions = new Map<string, OciRuntimeOptions>();
  for (const h of Object.values(cfg.runtimes)) {
    if (isRunscHandler(h)) runtimeOptions.set(h.name, { runsc: true, binary: await writeRunscWrapper(h, path.join(cfg.rootDir, 'runtime-wrappers')) });
  }
  const runtimes = new Map<string, OciRuntime>();
  const runtimeFor = (h: RuntimeHandlerConfig) => {
    let r = runtimes.get(h.name);
    if (!r) runtimes.set(h.name, (r = new OciRuntime(h, logger, { ...runtimeOptions.get(h.name), observer })));
    return r;
  };
  const containerRuntime: SandboxContainerRuntime = {
    async create(handler, record, b) {
      const ns = namespaceChoice(record.config);
      const sc = record.config.linux?.securityContext ?? ({} as Partial<LinuxSandboxSecurityContext>);
      const spec = buildSandboxSpec({
        sandboxId: record.id,
        name: record.metadata.name,
        namespace: record.metadata.namespace,
        uid: record.metadata.uid,
        attempt: record.metadata.attempt,
        hostname: b.hostname,
        logDirectory: b.logDirectory,
        imageName: cfg.sandboxImage || BUILTIN_SANDBOX_IMAGE_NAME,
        netnsPath: record.netnsPath,
        hostPid: ns.pid === 'NODE',
        hostIpc: ns.ipc === 'NODE',
        sharedPidNamespace: ns.pid === 'POD',
        hostCgroupV2: await hostIsCgroupV2(),
        privileged: record.privileged,
        readOnlyRootfs: true,
        runAsUser: sc.runAsUser ? Number(sc.runAsUser.value) : undefined,
        runAsGroup: sc.runAsGroup ? Number(sc.runAsGroup.value) : undefined,
        supplementalGroups: (sc.supplementalGroups ?? []).map(Number),
        cgroupsPath: cgroupfsCgroupsPath(record.config.linux?.cgroupParent ?? '', record.id),
        sysctls: b.sysctls,
        oomScoreAdj: sandboxOomScoreAdj,
        noNewPrivileges: true,
        seccomp: b.seccomp,
        resolvConfPath: b.resolvConfPath,
        hostnamePath: b.hostnamePath,
        hostsPath: b.hostsPath,
        shmPath: b.shmPath,
        annotations: record.config.annotations ?? {},
        availableCapabilities: capabilitiesForHandler(handler, availableCapabilities),
      });
      spec.process.args = b.args;
      await writeBundle(b.bundleDir, spec, b.rootfsPath);
      const pidFile = path.join(b.bundleDir, 'pid');
      await runtimeFor(handler).create(record.id, b.bundleDir, { pidFile });
      // The runtime writes the init PID at create; start keeps it (no extra `state` call).
      const pid = Number((await fs.readFile(pidFile, 'utf8')).trim());
      if (!(pid > 0)) throw new Error(`sandbox container ${record.id}: the runtime wrote no PID to ${pidFile}`);
      return pid;
    },
    start: (handler, id) => runtimeFor(handler).start(id),
    // The pause holds namespaces and nothing else: SIGKILL and delete in one runtime call.
    destroy: (handler, id) => runtimeFor(handler).forceDelete(id),
  };

  const images = new ImageService(cfg, logger, observer);
  images.pullsSettled = new IdleCollector();
  started.push(() => images.close());
  await images.store.refresh();
  const staleLayers = await images.store.snapshots.removeLeftovers();
  if (staleLayers.length > 0) logger.info({ removed: staleLayers }, 'removed unfinished layer unpacks');

  const sandboxImage: SandboxImageSource = cfg.sandboxImage
    ? {
        async resolve() {
          let image;
          try {
            image = await images.ensure(cfg.sandboxImage);
          } catch (e) {
            if (e instanceof CorralError) throw e.withContext(`sandbox image ${cfg.sandboxImage}`);
            throw new Error(`sandbox image ${cfg.sandboxImage}: ${(e as Error).message}`);
          }
          const c = await images.runtimeConfig(image);
          const args = [...(c.Entrypoint ?? []), ...(c.Cmd ?? [])];
          return { chain: image.chainIds, args: args.length > 0 ? args : ['/pause'] };
        },
        mount: (chain, target, layerDir) => mountOverlayRootfs(images.store.snapshots, { chain, target, layerDir }),
        unmount: (target) => unmountOverlayRootfs(target),
      }
    : {
        resolve: async () => ({ path: pauseRootfs, args: ['/pause'] }),
        mount: async () => {
          throw new Error('the built-in sandbox image is not mounted per pod');
        },
        unmount: (target) => unmountOverlayRootfs(target),
      };

  const store = new SandboxStore(cfg.rootDir);
  const sandboxes = new SandboxService({
    sandboxImage,
    config: cfg,
    store,
    logger,
    network: (handler) => networks.driverFor(handler, settings),
    pinner,
    runtime: containerRuntime,
    podInit: { start: (spec) => startPodInit({ ...spec, oomScoreAdj: sandboxOomScoreAdj }), stop: stopPodInit },
    prepareSysctls: (sysctls, opts) => {
      validateSysctls(sysctls, opts);
      return withDefaultSysctls(sysctls, opts);
    },
    observer,
  });
  const containerRootfs: ContainerRootfs = {
    mount: (chain, target, layerDir) => mountOverlayRootfs(images.store.snapshots, { chain, target, layerDir }),
    unmount: (target) => unmountOverlayRootfs(target),
  };
  // conmon writes <exitDir>/<id> holding the exit code, and the attach link under socketDir.
  const exitDir = path.join(cfg.stateDir, 'exits');
  const socketDir = path.join(cfg.stateDir, 'attach');
  // conmon's driver is loaded with the first container (a start without containers does not need it).
  const conmon = () => import('./oci/conmon.js');
  const monitor: ContainerMonitor = {
    async create(opts) {
      await fs.mkdir(exitDir, { recursive: true, mode: 0o700 });
      return (await conmon()).conmonCreate({ ...opts, exitDir, socketDir });
    },
    async readExit(id) {
      const code = await (await conmon()).readExitCode(exitDir, id);
      if (code === null) return null;
      // conmon writes the file as the container exits: its mtime is the exit time.
      const st = await fs.stat(path.join(exitDir, id)).catch(() => undefined);
      return { code, finishedAt: st ? msToNs(st.mtimeMs) : nowNs() };
    },
    exitedIds: () => exitFileNames(exitDir),
    waitForExit: async (id, timeoutMs) => (await conmon()).waitForExit(exitDir, id, timeoutMs),
    removeFiles: async (id) => (await conmon()).removeConmonFiles({ id, exitDir, socketDir }),
    reopenLog: async (o) => (await conmon()).reopenConmonLog(o),
  };
  const containers = new ContainerService({
    config: cfg,
    logger,
    sandboxes,
    images,
    runtimeFor,
    rootfs: containerRootfs,
    monitor,
    availableCapabilities,
    oomScoreAdjFloor: oomFloor,
    observer,
  });
  sandboxes.containers = { stopAll: (id) => containers.stopAllIn(id), removeAll: (id) => containers.removeAllIn(id), records: (id) => containers.recordsIn(id) };
  // Lifecycle events (GetContainerEvents): published by both services as changes commit.
  const lifecycle = lifecycleHub();
  sandboxes.events = containers.events = lifecycle;
  const recovered = await sandboxes.recover();
  const recoveredContainers = await containers.recover();
  const swept = await sweepOrphanNetns(cfg.netnsDir, sandboxes, logger);
  logger.info({ ...recovered, containers: recoveredContainers, sweptNetns: swept }, 'state recovered');
  observer?.setStateSources({
    handlers: () => Object.keys(cfg.runtimes),
    pods: () => Promise.all(sandboxes.all().map(async (r) => ({ state: (await sandboxes.liveState(r)) === 'SANDBOX_READY' ? 'ready' as const : 'notready' as const, runtimeHandler: r.runtimeHandler }))),
    containers: async () => (await containers.list()).map((r) => ({ state: r.state, runtimeHandler: r.runtimeHandler })),
  });
  // Containers that exit by themselves are recorded (and STOPPED published) as conmon writes their exit file.
  await fs.mkdir(exitDir, { recursive: true, mode: 0o700 });
  // The sweep also announces pods whose pause died (STOPPED), as containerd reports a sandbox's exit.
  const exitWatcher = watchExits({
    exitDir,
    onExit: (id) => containers.noticeExit(id),
    sweep: async () => {
      await containers.noticeExits();
      await sandboxes.noticeDeadSandboxes();
    },
    logger,
  });
  started.push(() => exitWatcher.close(), () => lifecycle.close());
  await containers.noticeExits();

  images.layersInUse = () => new Set([...sandboxes.layersInUse(), ...containers.layersInUse()]);
  sandboxes.layersReleased = containers.layersReleased = (chain) => images.layersReleased(chain);
  await images.store.collect(images.layersInUse);
  // Reads each snapshot's recorded usage (measures those an older Corral left without one)
  // off the start path, so ImageFsInfo answers from memory.
  void images.store.usage.warm().catch((e: unknown) => logger.warn({ err: e }, 'measuring the image store failed'));

  // The port is bound now; the server and the runtime side of exec/attach/port-forward
  // (corral-streamhelper per session) are loaded when first used (listener.ts says why).
  const tls = cfg.streaming.tlsCertFile !== '' || cfg.streaming.tlsKeyFile !== '';
  const streaming = await StreamingListener.listen({
    address: cfg.streaming.address,
    port: cfg.streaming.port,
    tls,
    logger,
    async load(baseUrl, tokens) {
      const [{ StreamingServer }, backend] = await Promise.all([import('./streaming/server.js'), import('./streaming/backend/index.js')]);
      return StreamingServer.create({
        baseUrl,
        tokens,
        tlsCertFile: cfg.streaming.tlsCertFile,
        tlsKeyFile: cfg.streaming.tlsKeyFile,
        address: cfg.streaming.address,
        port: cfg.streaming.port,
        idleTimeoutMs: cfg.streaming.idleTimeoutSeconds * 1000,
        runtime: backend.createStreamingRuntime(backend.daemonStreamingDeps({ config: cfg, containers, sandboxes, runtimeFor, logger })),
        logger,
      });
    },
  });
  started.push(() => streaming.shutdown());
  // A TLS key or certificate that cannot be read must fail the start, as before (the
  // listener is then closed with the rest of what started).
  if (tls) await streaming.server();

  const server = await CriServer.start({
    socketPath: cfg.socket,
    socketMode: 0o660,
    logger,
    runtimeHandlers: {
      ...runtimeInfoHandlers(cfg, settings, () => networks.readiness(), () => ({ cni: networks.describe() })),
      ...sandboxHandlers(sandboxes, streaming),
      ...containerHandlers(containers, streaming),
      ...statsHandlers(containers, sandboxes),
      ...metricsHandlers(containers, sandboxes),
    },
    runtimeStreamHandlers: eventsHandlers(lifecycle, sandboxes, containers),
    imageHandlers: imageHandlers(cfg, images),
    onCall: observer && ((method, code, seconds) => observer.observeCall(method, code, seconds)),
  });
  // startupMs: this function (recovery included); processMs: since the process began (node's own start and loading the modules too).
  logger.info({ socket: cfg.socket, startupMs: Date.now() - t0, processMs: Math.round(process.uptime() * 1000) }, 'corral is serving');

  return {
    sandboxes,
    server,
    async shutdown(graceMs: number) {
      await server.shutdown(graceMs);
      exitWatcher.close();
      lifecycle.close();
      await streaming.shutdown();
      await metrics?.server.close();
      images.close();
      logger.info('corral stopped; pods keep running');
    },
  };
}


/** Pins left under our prefix that no sandbox record owns (e.g. a record deleted by hand). */
async function sweepOrphanNetns(netnsDir: string, sandboxes: SandboxService, logger: Logger): Promise<number> {
  let swept = 0;
  for (const p of await listCorralNetns(netnsDir)) {
    const id = sandboxIdFromNetnsPath(p);
    if (id && sandboxes.index.has(id)) continue;
    try {
      await removePinnedNetns(p);
      swept++;
      logger.warn({ netns: p }, 'removed a network namespace no sandbox owns');
    } catch (e) {
      logger.error({ netns: p, err: (e as Error).message }, 'cannot remove an orphaned network namespace');
    }
  }
  return swept;
}
