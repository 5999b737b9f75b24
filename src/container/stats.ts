/**
 * Container stats: CPU and memory from the container's own cgroups, the writable layer's
 * usage from a short-lived cache.
 *
 * The cgroups are found from the container's init (/proc/<pid>/cgroup against the mounted
 * hierarchies, as exec cgroups are), so the layout is chosen at run time: v1 controllers
 * (`cpuacct`, `memory`) where the host mounts them — a hybrid host's unified tree carries no
 * controllers — else the unified v2 tree. Parsing is pure; reading is a few small files.
 * Working set = usage minus inactive file cache, the number kubelet evicts on.
 */
import { readFileSync } from 'node:fs';
import type { RunscUsage } from '../oci/runsc.js';
import path from 'node:path';
import { containerCgroupDirs, parseCgroupMounts, parseProcCgroup, type CgroupDir, type CgroupMount } from '../oci/exec-cgroup.js';
import { dirUsage, type DirUsage } from '../image/fs-usage.js';
import type { ContainerRecord } from './record.js';
import type { ContainerStatsInit, CpuUsageInit, MemoryUsageInit, NetworkUsageInit, PodSandboxStatsInit } from '../cri-api/types.js';
import type { SandboxRecord } from '../sandbox/record.js';

export interface CgroupSample {
  /** Nanoseconds since the epoch. */
  timestampNs: bigint;
  cpuUsageNs: bigint | null;
  memoryUsageBytes: bigint | null;
  workingSetBytes: bigint | null;
  rssBytes: bigint | null;
  pageFaults: bigint | null;
  majorPageFaults: bigint | null;
  /** null when unlimited. */
  memoryLimitBytes: bigint | null;
}

/** "key value" lines (memory.stat, cpu.stat) as a map. */
export function parseFlatKeyed(text: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const line of text.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v && /^\d+$/.test(v)) out.set(k, BigInt(v));
  }
  return out;
}

/** A single number file (memory.current, cpuacct.usage); null when missing or not a number ("max"). */
function parseSingle(text: string | null): bigint | null {
  const t = text?.trim();
  return t && /^\d+$/.test(t) ? BigInt(t) : null;
}

const minus = (a: bigint, b: bigint) => (a > b ? a - b : 0n);

export interface V2Files {
  cpuStat: string | null;
  memoryCurrent: string | null;
  memoryStat: string | null;
  memoryMax: string | null;
}

/** A v2 sample from the files of one cgroup directory (text of each, or null when missing). */
export function sampleFromV2(files: V2Files, timestampNs: bigint): CgroupSample {
  const cpu = files.cpuStat ? parseFlatKeyed(files.cpuStat) : new Map<string, bigint>();
  const mem = files.memoryStat ? parseFlatKeyed(files.memoryStat) : new Map<string, bigint>();
  const usage = parseSingle(files.memoryCurrent);
  const usec = cpu.get('usage_usec');
  return {
    timestampNs,
    cpuUsageNs: usec === undefined ? null : usec * 1000n,
    memoryUsageBytes: usage,
    workingSetBytes: usage === null ? null : minus(usage, mem.get('inactive_file') ?? 0n),
    rssBytes: mem.get('anon') ?? null,
    pageFaults: mem.get('pgfault') ?? null,
    majorPageFaults: mem.get('pgmajfault') ?? null,
    memoryLimitBytes: parseSingle(files.memoryMax), // "max" → null
  };
}

export interface V1Files {
  cpuacctUsage: string | null;
  memoryUsage: string | null;
  memoryStat: string | null;
  memoryLimit: string | null;
}

/** v1 reports "no limit" as the page-rounded maximum (about 2^63). */
const V1_UNLIMITED_FLOOR = 1n << 62n;

/** A v1 sample from cpuacct.usage and the memory controller's files (hierarchical totals). */
export function sampleFromV1(files: V1Files, timestampNs: bigint): CgroupSample {
  const mem = files.memoryStat ? parseFlatKeyed(files.memoryStat) : new Map<string, bigint>();
  const usage = parseSingle(files.memoryUsage);
  const limit = parseSingle(files.memoryLimit);
  return {
    timestampNs,
    cpuUsageNs: parseSingle(files.cpuacctUsage),
    memoryUsageBytes: usage,
    workingSetBytes: usage === null ? null : minus(usage, mem.get('total_inactive_file') ?? mem.get('inactive_file') ?? 0n),
    rssBytes: mem.get('total_rss') ?? mem.get('rss') ?? null,
    pageFaults: mem.get('total_pgfault') ?? mem.get('pgfault') ?? null,
    majorPageFaults: mem.get('total_pgmajfault') ?? mem.get('pgmajfault') ?? null,
    memoryLimitBytes: limit !== null && limit < V1_UNLIMITED_FLOOR ? limit : null,
  };
}

/**
 * CPU use in nanocores between two samples of the same cgroup, as containerd computes it;
 * null without a usable earlier one (first call, counter reset).
 */
export function nanoCores(prev: CgroupSample | undefined, cur: CgroupSample): bigint | null {
  if (!prev || prev.cpuUsageNs === null || cur.cpuUsageNs === null) return null;
  const dt = cur.timestampNs - prev.timestampNs;
  if (dt <= 0n || cur.cpuUsageNs < prev.cpuUsageNs) return null;
  return ((cur.cpuUsageNs - prev.cpuUsageNs) * 1_000_000_000n) / dt;
}

/** Which directories to read: v1 controllers where the host has them, else the unified tree. */
export function chooseLayout(dirs: CgroupDir[]): { version: 1; cpuacct?: string; memory?: string } | { version: 2; dir: string } | null {
  const cpuacct = dirs.find((d) => d.version === 1 && d.controllers.includes('cpuacct'))?.dir;
  const memory = dirs.find((d) => d.version === 1 && d.controllers.includes('memory'))?.dir;
  if (cpuacct || memory) return { version: 1, cpuacct, memory };
  const v2 = dirs.find((d) => d.version === 2);
  return v2 ? { version: 2, dir: v2.dir } : null;
}

/** Reads a small text file; null when it cannot be read. */
export type ReadText = (file: string) => Promise<string | null>;
/**
 * cgroupfs and procfs files are made by the kernel on read and never wait on a disk: read
 * at once, without the four thread-pool round trips of an async readFile (open, fstat,
 * read, close) each — a hundred containers are four hundred such files per call.
 */
const readKernelFile: ReadText = async (p: string) => {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return null;
  }
};
const nowNs = () => BigInt(Date.now()) * 1_000_000n;

export type CgroupLayout = NonNullable<ReturnType<typeof chooseLayout>>;

/** The cgroup directories of the process `pid` in every hierarchy, kept only where named `name` (a container ID). */
export async function processCgroupDirs(pid: number, name: string): Promise<CgroupDir[]> {
  if (!Number.isInteger(pid) || pid <= 0) return [];
  const [procText, mountinfo] = await Promise.all([readKernelFile(`/proc/${pid}/cgroup`), readKernelFile('/proc/self/mountinfo')]);
  if (!procText || !mountinfo) return [];
  return containerCgroupDirs(parseProcCgroup(procText), parseCgroupMounts(mountinfo), name);
}

/**
 * Where each container's cgroups are, looked up once per container init (its
 * /proc/<pid>/cgroup against the mounted hierarchies) and kept while that init lives. The
 * hierarchies come from /proc/self/mountinfo, which lists every mount of the host: with a
 * hundred containers it is hundreds of KB, and reading and parsing it for every container
 * on every call was most of a stats call's time. It is read once, and again (at most every
 * `mountRefreshMs`) only when a new container has a cgroup under no known hierarchy.
 */
export class CgroupDirCache {
  private mounts: { list: CgroupMount[]; at: number } | undefined;
  private mountsLoading: Promise<CgroupMount[]> | undefined;
  private readonly entries = new Map<string, { pid: number; dirs: CgroupDir[] }>();

  constructor(
    private readonly readText: ReadText = readKernelFile,
    private readonly mountRefreshMs = 10_000,
  ) {}

  /** The cgroup directories of process `pid` named `name` (a container or sandbox ID), remembered under `key`. */
  async get(pid: number, name: string, key = name): Promise<CgroupDir[]> {
    if (!Number.isInteger(pid) || pid <= 0) return [];
    const hit = this.entries.get(key);
    if (hit && hit.pid === pid) return hit.dirs;
    const procText = await this.readText(`/proc/${pid}/cgroup`);
    if (!procText) return [];
    const entries = parseProcCgroup(procText);
    const wanted = entries.filter((e) => path.posix.basename(e.path) === name).length;
    let dirs = containerCgroupDirs(entries, await this.cgroupMounts(false), name);
    if (dirs.length < wanted) dirs = containerCgroupDirs(entries, await this.cgroupMounts(true), name);
    // Nothing found (the process is not the container's, or exited): asked again next time.
    if (dirs.length > 0) this.entries.set(key, { pid, dirs });
    return dirs;
  }

  /** Forgets every key not in `live`, so the cache stays bounded by what exists. */
  retain(live: (key: string) => boolean): void {
    for (const k of this.entries.keys()) if (!live(k)) this.entries.delete(k);
  }

  private cgroupMounts(refresh: boolean): Promise<CgroupMount[]> {
    const fresh = this.mounts && (!refresh || Date.now() - this.mounts.at < this.mountRefreshMs);
    if (fresh) return Promise.resolve(this.mounts!.list);
    this.mountsLoading ??= this.readText('/proc/self/mountinfo')
      .then((text) => {
        const list = text ? parseCgroupMounts(text) : [];
        if (text) this.mounts = { list, at: Date.now() };
        return list;
      })
      .finally(() => (this.mountsLoading = undefined));
    return this.mountsLoading;
  }
}

/** Reads one sample from the chosen directories. */
export async function readCgroupSample(layout: CgroupLayout, read: ReadText = readKernelFile): Promise<CgroupSample> {
  const timestampNs = nowNs();
  if (layout.version === 2) {
    const [cpuStat, memoryCurrent, memoryStat, memoryMax] = await Promise.all(
      ['cpu.stat', 'memory.current', 'memory.stat', 'memory.max'].map((f) => read(path.join(layout.dir, f))),
    );
    return sampleFromV2({ cpuStat: cpuStat ?? null, memoryCurrent: memoryCurrent ?? null, memoryStat: memoryStat ?? null, memoryMax: memoryMax ?? null }, timestampNs);
  }
  const inMem = (f: string) => (layout.memory ? read(path.join(layout.memory, f)) : Promise.resolve(null));
  const [cpuacctUsage, memoryUsage, memoryStat, memoryLimit] = await Promise.all([
    layout.cpuacct ? read(path.join(layout.cpuacct, 'cpuacct.usage')) : Promise.resolve(null),
    inMem('memory.usage_in_bytes'),
    inMem('memory.stat'),
    inMem('memory.limit_in_bytes'),
  ]);
  return sampleFromV1({ cpuacctUsage, memoryUsage, memoryStat, memoryLimit }, timestampNs);
}

/** Samples the cgroups of the container whose init is `pid`; null when it has none (exited, PID reused). */
export async function sampleContainerCgroup(pid: number, containerId: string): Promise<CgroupSample | null> {
  const layout = chooseLayout(await processCgroupDirs(pid, containerId));
  return layout ? readCgroupSample(layout) : null;
}

/**
 * Writable-layer usage with a short cache: a stats call never walks a layer itself once a
 * value exists — a stale value is answered at once and refreshed in the background, one
 * walk per layer at a time. Only the first call for a layer waits for a walk.
 */
export class LayerUsageCache {
  private readonly entries = new Map<string, { usage: DirUsage; at: number; timestampNs: bigint; refreshing?: Promise<void> }>();
  private readonly first = new Map<string, Promise<void>>();

  constructor(
    private readonly ttlMs = 10_000,
    private readonly measure: (dir: string) => Promise<DirUsage> = dirUsage,
  ) {}

  async get(dir: string): Promise<{ usage: DirUsage; timestampNs: bigint }> {
    const e = this.entries.get(dir);
    if (e) {
      if (Date.now() - e.at > this.ttlMs && !e.refreshing) {
        e.refreshing = this.refresh(dir).finally(() => (e.refreshing = undefined));
      }
      return e;
    }
    let pending = this.first.get(dir);
    if (!pending) {
      pending = this.refresh(dir).finally(() => this.first.delete(dir));
      this.first.set(dir, pending);
    }
    await pending;
    const got = this.entries.get(dir);
    return got ?? { usage: { bytes: 0, inodes: 0 }, timestampNs: nowNs() };
  }

  /** Forgets layers not in `live` (removed containers), so the cache stays bounded. */
  retain(live: Set<string>): void {
    for (const dir of this.entries.keys()) if (!live.has(dir)) this.entries.delete(dir);
  }

  private async refresh(dir: string): Promise<void> {
    try {
      const usage = await this.measure(dir);
      this.entries.set(dir, { usage, at: Date.now(), timestampNs: nowNs() });
    } catch {
      // Unreadable now (being removed): keep what was there.
    }
  }
}

const u64 = (v: bigint | null) => (v === null ? null : { value: v });

/**
 * ContainerStats of records, remembering each container's previous CPU sample for
 * usage_nano_cores (as containerd does); forgets containers no longer asked about in a list.
 */
export class ContainerStatsCollector {
  private readonly previous = new Map<string, CgroupSample>();
  readonly layers: LayerUsageCache;
  private readonly cgroups: CgroupDirCache;

  /**
   * readText: how cgroup and /proc files are read (tests count the reads); runtimeUsage: a
   * runtime's own account of a container (gVisor), when it has one; else cgroups are read.
   */
  constructor(
    private readonly readText: ReadText = readKernelFile,
    layers = new LayerUsageCache(),
    private readonly runtimeUsage?: (rec: ContainerRecord) => Promise<RunscUsage | null> | undefined,
  ) {
    this.cgroups = new CgroupDirCache(readText);
    this.layers = layers;
  }

  /** A sample of the cgroups of `pid` named `name`; null when it has none (exited, PID reused). */
  private async sample(pid: number, name: string, key = name): Promise<CgroupSample | null> {
    const layout = chooseLayout(await this.cgroups.get(pid, name, key));
    return layout ? readCgroupSample(layout, this.readText) : null;
  }

  private async sampleContainer(rec: ContainerRecord): Promise<CgroupSample | null> {
    const own = this.runtimeUsage?.(rec);
    if (!own) return this.sample(rec.pid, rec.id);
    const u = await own;
    if (!u) return null;
    // gVisor's memory usage is what the sandbox accounts to the container: its working set too.
    return { timestampNs: nowNs(), cpuUsageNs: u.cpuUsageNs, memoryUsageBytes: u.memoryUsageBytes, workingSetBytes: u.memoryUsageBytes, rssBytes: null, pageFaults: null, majorPageFaults: null, memoryLimitBytes: null };
  }

  async stats(rec: ContainerRecord): Promise<ContainerStatsInit> {
    const attributes = { id: rec.id, metadata: rec.metadata, labels: rec.config.labels ?? {}, annotations: rec.config.annotations ?? {} };
    const upper = rec.resources.rootfs ? path.join(rec.resources.rootfs.layerDir, 'upper') : null;
    const [sample, layer] = await Promise.all([
      rec.state === 'running' ? this.sampleContainer(rec) : Promise.resolve(null),
      upper ? this.layers.get(upper) : Promise.resolve(null),
    ]);
    const out: ContainerStatsInit = { attributes, ...this.cpuAndMemory(rec.id, sample) };
    if (layer && upper) {
      out.writableLayer = { timestamp: layer.timestampNs, fsId: { mountpoint: upper }, usedBytes: { value: layer.usage.bytes }, inodesUsed: { value: layer.usage.inodes } };
    }
    return out;
  }

  /**
   * Stats of a pod: its containers', and CPU, memory and process count of the pod's cgroup
   * (the parent of the pause container's cgroup) when kubelet gave the pod a cgroup of its
   * own; without one (the default parent is shared by every pod), the sum of the pause
   * process's and the containers' cgroups. Network counters from /proc/<pid>/net/dev of a
   * process inside the pod's network namespace (pause, else a running container).
   */
  async podStats(sandbox: SandboxRecord, ready: boolean, containers: ContainerRecord[]): Promise<PodSandboxStatsInit> {
    const attributes = { id: sandbox.id, metadata: sandbox.metadata, labels: sandbox.config.labels ?? {}, annotations: sandbox.config.annotations ?? {} };
    const containerStats = await Promise.all(containers.map((c) => this.stats(c)));
    if (!ready) return { attributes, linux: { containers: containerStats } };
    const pausePid = sandbox.infraMode !== 'pinned' ? sandbox.pid : 0;
    const running = containers.filter((c) => c.state === 'running' && c.pid > 0);
    const pauseDirs = pausePid > 0 ? await this.cgroups.get(pausePid, sandbox.id, `pod:${sandbox.id}`) : [];
    const memberDirs = [pauseDirs, ...(await Promise.all(running.map((c) => this.cgroups.get(c.pid, c.id))))].filter((d) => d.length > 0);
    let sample: CgroupSample | null = null;
    let pids: bigint | null = null;
    if (sandbox.config.linux?.cgroupParent && memberDirs.length > 0) {
      // Every member's cgroup is <cgroup_parent>/<id>: the parent is the pod's.
      const podDirs = memberDirs[0]!.map((d) => ({ ...d, dir: path.dirname(d.dir) }));
      const layout = chooseLayout(podDirs);
      if (layout) sample = await readCgroupSample(layout, this.readText);
      pids = await readPidsCurrent(podDirs);
    } else {
      const layouts = memberDirs.map(chooseLayout).filter((l): l is CgroupLayout => l !== null);
      if (layouts.length > 0) sample = sumSamples(await Promise.all(layouts.map((l) => readCgroupSample(l, this.readText))));
      const counts = await Promise.all(memberDirs.map(readPidsCurrent));
      pids = counts.some((n) => n !== null) ? counts.reduce<bigint>((a, n) => a + (n ?? 0n), 0n) : null;
    }
    const netPid = sandbox.hostNetwork ? 0 : pausePid > 0 ? pausePid : (running[0]?.pid ?? 0);
    const network = netPid > 0 ? await readNetwork(netPid) : null;
    const timestamp = nowNs();
    return {
      attributes,
      linux: {
        ...this.cpuAndMemory(`pod:${sandbox.id}`, sample),
        network,
        process: pids === null ? null : { timestamp, processCount: { value: pids } },
        containers: containerStats,
      },
    };
  }

  private cpuAndMemory(key: string, sample: CgroupSample | null): { cpu?: CpuUsageInit; memory?: MemoryUsageInit } {
    if (!sample) {
      this.previous.delete(key);
      return {};
    }
    const cores = nanoCores(this.previous.get(key), sample);
    this.previous.set(key, sample);
    const available = sample.memoryLimitBytes !== null && sample.workingSetBytes !== null ? minus(sample.memoryLimitBytes, sample.workingSetBytes) : null;
    return {
      cpu: { timestamp: sample.timestampNs, usageCoreNanoSeconds: u64(sample.cpuUsageNs), usageNanoCores: u64(cores) },
      memory: {
        timestamp: sample.timestampNs,
        workingSetBytes: u64(sample.workingSetBytes),
        availableBytes: u64(available),
        usageBytes: u64(sample.memoryUsageBytes),
        rssBytes: u64(sample.rssBytes),
        pageFaults: u64(sample.pageFaults),
        majorPageFaults: u64(sample.majorPageFaults),
      },
    };
  }

  /** Drops state of containers and pods that are gone, so memory stays bounded by live ones. */
  retain(live: ContainerRecord[], liveSandboxes?: SandboxRecord[]): void {
    const ids = new Set([...live.map((r) => r.id), ...(liveSandboxes ?? []).map((s) => `pod:${s.id}`)]);
    if (!liveSandboxes) for (const k of this.previous.keys()) if (k.startsWith('pod:')) ids.add(k);
    for (const id of this.previous.keys()) if (!ids.has(id)) this.previous.delete(id);
    this.cgroups.retain((key) => ids.has(key) || (!liveSandboxes && key.startsWith('pod:')));
    this.layers.retain(new Set(live.flatMap((r) => (r.resources.rootfs ? [path.join(r.resources.rootfs.layerDir, 'upper')] : []))));
  }
}

/** The sum of several cgroups' samples (a pod without a cgroup of its own); no limit. */
export function sumSamples(samples: CgroupSample[]): CgroupSample {
  const add = (f: (s: CgroupSample) => bigint | null) => {
    const vals = samples.map(f).filter((v): v is bigint => v !== null);
    return vals.length === 0 ? null : vals.reduce((a, b) => a + b, 0n);
  };
  return {
    timestampNs: samples.reduce((a, s) => (s.timestampNs > a ? s.timestampNs : a), 0n),
    cpuUsageNs: add((s) => s.cpuUsageNs),
    memoryUsageBytes: add((s) => s.memoryUsageBytes),
    workingSetBytes: add((s) => s.workingSetBytes),
    rssBytes: add((s) => s.rssBytes),
    pageFaults: add((s) => s.pageFaults),
    majorPageFaults: add((s) => s.majorPageFaults),
    memoryLimitBytes: null,
  };
}

/** pids.current of the v1 pids controller or the unified tree (v1 first, as for the other controllers). */
async function readPidsCurrent(dirs: CgroupDir[]): Promise<bigint | null> {
  const dir = dirs.find((d) => d.version === 1 && d.controllers.includes('pids')) ?? dirs.find((d) => d.version === 2);
  return dir ? parseSingle(await readKernelFile(path.join(dir.dir, 'pids.current'))) : null;
}

export interface InterfaceCounters {
  name: string;
  rxBytes: bigint;
  rxErrors: bigint;
  txBytes: bigint;
  txErrors: bigint;
}

/** Pure: /proc/<pid>/net/dev (two header lines, then "name: 8 receive and 8 transmit counters"). */
export function parseNetDev(text: string): InterfaceCounters[] {
  const out: InterfaceCounters[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*([^:\s]+):\s*(.*)$/.exec(line);
    if (!m) continue;
    const f = m[2]!.trim().split(/\s+/);
    if (f.length < 16 || !f.every((x) => /^\d+$/.test(x))) continue;
    out.push({ name: m[1]!, rxBytes: BigInt(f[0]!), rxErrors: BigInt(f[2]!), txBytes: BigInt(f[8]!), txErrors: BigInt(f[10]!) });
  }
  return out;
}

/** The pod's interfaces but loopback; eth0 (the CNI default, as containerd names it) is the default one. */
export function networkUsage(counters: InterfaceCounters[], timestamp: bigint): NetworkUsageInit {
  const toCri = (c: InterfaceCounters) => ({ name: c.name, rxBytes: { value: c.rxBytes }, rxErrors: { value: c.rxErrors }, txBytes: { value: c.txBytes }, txErrors: { value: c.txErrors } });
  const ifaces = counters.filter((c) => c.name !== 'lo');
  const def = ifaces.find((c) => c.name === 'eth0');
  return { timestamp, defaultInterface: def ? toCri(def) : null, interfaces: ifaces.map(toCri) };
}

/** Reading /proc/<pid>/net/dev shows the network namespace of that process: no setns needed. */
async function readNetwork(pid: number): Promise<NetworkUsageInit | null> {
  const text = await readKernelFile(`/proc/${pid}/net/dev`);
  return text === null ? null : networkUsage(parseNetDev(text), nowNs());
}
