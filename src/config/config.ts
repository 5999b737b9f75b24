import { promises as fs } from 'node:fs';
import path from 'node:path';
import { isIP } from 'node:net';
import { parse as parseToml } from 'smol-toml';

/** An OCI runtime the daemon can run sandboxes with, selected by the CRI runtime handler. */
export interface RuntimeHandlerConfig {
  name: string;
  /** Binary: a bare name is looked up in PATH, else an absolute path. */
  path: string;
  /** The runtime's state root (`--root`); kept under Corral's state dir by default. */
  root: string;
  /** `vm` runtimes always get a sandbox (pause) container with the netns path in its spec. */
  type: 'oci' | 'vm';
  /** A CNI conf dir of this handler's own; empty = the daemon's. */
  cniConfDir: string;
  /** Networks loaded from cniConfDir (0 = all); only meaningful with cniConfDir. */
  cniMaxNetworks: number;
}

export interface CniConfig {
  confDir: string;
  binDirs: string[];
  /** How many conf files to load, in name order (0 = all). The first is the default network on eth0. */
  maxNetworks: number;
  /** libcni's cache root; results live in `<cacheDir>/results`. */
  cacheDir: string;
  /** Which address of the default network's eth0 becomes the pod IP. */
  ipPreference: 'ipv4' | 'ipv6' | 'cni';
  /** How often (at most) a conf dir is re-read when asked for readiness or a pod, so a config dropped in later is picked up. */
  reloadIntervalMs: number;
  /**
   * Run the `loopback` plugin on each pod (as containerd does). Off by default: corral-nshelper
   * already brings `lo` up when it pins the netns, and the extra plugin process per Run and
   * Stop cost 13-20 ms on 2 cores.
   */
  loopbackPlugin: boolean;
}

/** How to reach one registry host (e.g. "docker.io", "registry.k8s.io", "127.0.0.1:5000"). */
export interface RegistryConfig {
  /** Endpoints tried in order before the registry itself, e.g. "http://127.0.0.1:5000" (same repository paths). */
  mirrors: string[];
  /** Plain HTTP for the registry itself (localhost and 127.0.0.1 are plain HTTP by default). */
  insecure: boolean;
  /**
   * Verify TLS certificates (of the registry and its https mirrors). Only these hosts:
   * a token realm or redirect target elsewhere gets the settings of its own entry, if any.
   */
  tlsVerify: boolean;
  /** Extra CA bundle (PEM) trusted for this registry and its mirrors (only); empty = system CAs only. */
  caFile: string;
}

/** Deadlines of image pulls (PullImage, and the sandbox image's first pull). */
export interface ImagePullConfig {
  /** A pull that receives fewer than progressMinBytes (and finishes no blob) in this many seconds fails; 0 = never. */
  progressDeadlineSeconds: number;
  /** Bytes a pull must receive within the progress deadline for it to count as progress. */
  progressMinBytes: number;
  /** The most a whole pull may take, in seconds; 0 = no cap. */
  timeoutSeconds: number;
}

/** The streaming server behind the CRI Exec, Attach and PortForward URLs (containerd's stream_server_*). */
export interface StreamingConfig {
  /** Listen address; the URLs name it (an unspecified one is replaced by a routable address). */
  address: string;
  /** 0 = an ephemeral port. */
  port: number;
  /** PEM files; both or neither. With them the URLs are https. */
  tlsCertFile: string;
  tlsKeyFile: string;
  /** A session with no traffic either way (client pings count) for this long is closed; 0 = never. */
  idleTimeoutSeconds: number;
}

export interface CorralConfig {
  rootDir: string;
  stateDir: string;
  socket: string;
  netnsDir: string;
  cgroupDriver: 'cgroupfs';
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error';
  /** `json`: one JSON object per line (for log collectors); `text`: `time LEVEL msg key=value...` for people. */
  logFormat: 'json' | 'text';
  /** Empty = Corral's built-in pause image (no registry needed). */
  sandboxImage: string;
  defaultRuntime: string;
  /** Skip the pause process where nothing needs it (oci handler, private PID namespace not shared). */
  dropInfraContainer: boolean;
  /** Clamp oom_score_adj to the daemon's own: `auto` detects whether it must (no CAP_SYS_RESOURCE). */
  restrictOomScoreAdj: 'auto' | 'true' | 'false';
  /** Seconds a graceful shutdown waits for in-flight calls. */
  shutdownGraceSeconds: number;
  /**
   * conmon's --log-size-max: the most bytes a container's CRI log file may hold; conmon starts
   * the file over when a write would pass it (cri-o's log_size_max). -1 or 0 = no cap.
   */
  containerLogSizeMax: number;
  cni: CniConfig;
  runtimes: Record<string, RuntimeHandlerConfig>;
  /** Per-registry settings, keyed by registry host[:port]. */
  registries: Record<string, RegistryConfig>;
  imagePull: ImagePullConfig;
  streaming: StreamingConfig;
  /** Where the Prometheus endpoint (GET /metrics) listens, "IP:PORT" or "[IPv6]:PORT"; empty = off. */
  metricsAddress: string;
}

export const DEFAULT_CONFIG_PATH = '/etc/corral/config.toml';
export const BUILTIN_SANDBOX_IMAGE = '';
/** The smallest container_log_size_max conmon can keep to: its read buffer. */
export const MIN_CONTAINER_LOG_SIZE_MAX = 8192;

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** The configuration with nothing set: what a fresh node runs with. */
export function defaultConfig(): CorralConfig {
  const stateDir = '/run/corral';
  return {
    rootDir: '/var/lib/corral',
    stateDir,
    socket: path.join(stateDir, 'corral.sock'),
    netnsDir: '/var/run/netns',
    cgroupDriver: 'cgroupfs',
    logLevel: 'info',
    logFormat: 'json',
    sandboxImage: BUILTIN_SANDBOX_IMAGE,
    defaultRuntime: 'runc',
    dropInfraContainer: true,
    restrictOomScoreAdj: 'auto',
    shutdownGraceSeconds: 10,
    containerLogSizeMax: -1,
    cni: {
      confDir: '/etc/cni/net.d',
      binDirs: ['/opt/cni/bin', '/usr/lib/cni'],
      maxNetworks: 1,
      cacheDir: '/var/lib/cni',
      ipPreference: 'ipv4',
      reloadIntervalMs: 1000,
      loopbackPlugin: false,
    },
    runtimes: {
      runc: handler('runc', 'runc', path.join(stateDir, 'runc')),
      crun: handler('crun', 'crun', path.join(stateDir, 'crun')),
    },
    registries: {},
    imagePull: { progressDeadlineSeconds: 60, progressMinBytes: 64 * 1024, timeoutSeconds: 3600 },
    streaming: { address: '127.0.0.1', port: 0, tlsCertFile: '', tlsKeyFile: '', idleTimeoutSeconds: 4 * 3600 },
    metricsAddress: '',
  };
}

/** "IP:PORT" or "[IPv6]:PORT" (port 0 = ephemeral) as a host and port; throws with the reason. */
export function parseListenAddress(address: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address);
  const host = m?.[1] ?? m?.[2];
  if (!m || host === undefined) throw new Error(`must be IP:PORT or [IPv6]:PORT, got "${address}"`);
  if (isIP(host) !== (m[1] !== undefined ? 6 : 4)) throw new Error(`"${host}" is not an IP${m[1] !== undefined ? 'v6' : 'v4'} address (names are not resolved)`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`port ${port} is out of range (0-65535)`);
  return { host, port };
}

function handler(name: string, bin: string, root: string): RuntimeHandlerConfig {
  return { name, path: bin, root, type: 'oci', cniConfDir: '', cniMaxNetworks: 0 };
}

/** Overrides given on the command line; they win over the file. */
export interface ConfigOverrides {
  socket?: string;
  rootDir?: string;
  stateDir?: string;
  logLevel?: string;
}

/**
 * Reads the TOML file (absent = defaults when it is the default path), validates every
 * key and applies command-line overrides. Any unknown key or bad value is a ConfigError
 * naming the key and the reason.
 */
export async function loadConfig(file: string | undefined, overrides: ConfigOverrides = {}): Promise<CorralConfig> {
  const configPath = file ?? DEFAULT_CONFIG_PATH;
  let text: string | undefined;
  try {
    text = await fs.readFile(configPath, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || file !== undefined) {
      throw new ConfigError(`cannot read config file ${configPath}: ${(e as Error).message}`);
    }
  }
  let raw: Record<string, unknown> = {};
  if (text !== undefined) {
    try {
      raw = parseToml(text) as Record<string, unknown>;
    } catch (e) {
      throw new ConfigError(`${configPath}: not valid TOML: ${(e as Error).message}`);
    }
  }
  return resolveConfig(raw, overrides, configPath);
}

/** Pure: merges a parsed TOML document and overrides over the defaults. */
export function resolveConfig(raw: Record<string, unknown>, overrides: ConfigOverrides = {}, source = 'config'): CorralConfig {
  const r = new Reader(raw, source);
  const d = defaultConfig();
  // File values are always read (so each is validated), then command-line overrides win.
  const fileStateDir = r.absPath('state_dir', d.stateDir);
  const stateDir = overrides.stateDir ?? fileStateDir;
  const fileRootDir = r.absPath('root_dir', d.rootDir);
  const fileSocket = r.absPath('socket', path.join(stateDir, 'corral.sock'));
  const cfg: CorralConfig = {
    rootDir: overrides.rootDir ?? fileRootDir,
    stateDir,
    socket: overrides.socket ?? fileSocket,
    netnsDir: r.absPath('netns_dir', d.netnsDir),
    cgroupDriver: r.oneOf('cgroup_driver', ['cgroupfs'] as const, d.cgroupDriver),
    logLevel: r.oneOf('log_level', ['trace', 'debug', 'info', 'warn', 'error'] as const, d.logLevel),
    logFormat: r.oneOf('log_format', ['json', 'text'] as const, d.logFormat),
    sandboxImage: r.string('sandbox_image', d.sandboxImage),
    defaultRuntime: r.string('default_runtime', d.defaultRuntime),
    dropInfraContainer: r.bool('drop_infra_container', d.dropInfraContainer),
    restrictOomScoreAdj: r.oneOf('restrict_oom_score_adj', ['auto', 'true', 'false'] as const, d.restrictOomScoreAdj, true),
    shutdownGraceSeconds: r.int('shutdown_grace_seconds', d.shutdownGraceSeconds, 0, 3600),
    containerLogSizeMax: r.int('container_log_size_max', d.containerLogSizeMax, -1, Number.MAX_SAFE_INTEGER),
    cni: d.cni,
    runtimes: {},
    registries: {},
    imagePull: d.imagePull,
    streaming: d.streaming,
    metricsAddress: r.string('metrics_address', d.metricsAddress),
  };
  if (cfg.metricsAddress) {
    try {
      parseListenAddress(cfg.metricsAddress);
    } catch (e) {
      throw new ConfigError(`${source}: metrics_address: ${(e as Error).message}`);
    }
  }
  // conmon reads a container's output in 8 KiB chunks and writes each whole: a smaller cap
  // would start the file over on nearly every write (cri-o refuses it too).
  if (cfg.containerLogSizeMax > 0 && cfg.containerLogSizeMax < MIN_CONTAINER_LOG_SIZE_MAX) {
    throw new ConfigError(`${source}: container_log_size_max: must be -1 or 0 (no cap) or at least ${MIN_CONTAINER_LOG_SIZE_MAX} bytes (conmon's read buffer), got ${cfg.containerLogSizeMax}`);
  }
  if (overrides.logLevel !== undefined) {
    const levels = ['trace', 'debug', 'info', 'warn', 'error'];
    if (!levels.includes(overrides.logLevel)) throw new ConfigError(`--log-level: must be one of ${levels.join(', ')}, got "${overrides.logLevel}"`);
    cfg.logLevel = overrides.logLevel as CorralConfig['logLevel'];
  }

  const cni = r.table('cni');
  cfg.cni = {
    confDir: cni.absPath('conf_dir', d.cni.confDir),
    binDirs: cni.absPathList('bin_dirs', d.cni.binDirs),
    maxNetworks: cni.int('max_networks', d.cni.maxNetworks, 0, 64),
    cacheDir: cni.absPath('cache_dir', d.cni.cacheDir),
    ipPreference: cni.oneOf('ip_preference', ['ipv4', 'ipv6', 'cni'] as const, d.cni.ipPreference),
    reloadIntervalMs: cni.int('reload_interval_ms', d.cni.reloadIntervalMs, 0, 3_600_000),
    loopbackPlugin: cni.bool('loopback_plugin', d.cni.loopbackPlugin),
  };
  cni.done();

  const runtimes = r.table('runtimes');
  const names = runtimes.keys();
  if (names.length === 0) {
    for (const [name, h] of Object.entries(d.runtimes)) cfg.runtimes[name] = { ...h, root: path.join(stateDir, name) };
  }
  for (const name of names) {
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name)) throw new ConfigError(`${source}: runtimes.${name}: handler names may use letters, digits, '_', '.', '-'`);
    const t = runtimes.table(name);
    const bin = t.string('path', name);
    if (bin.includes('/') && !path.isAbsolute(bin)) throw new ConfigError(`${source}: runtimes.${name}.path: must be a bare program name or an absolute path, got "${bin}"`);
    cfg.runtimes[name] = {
      name,
      path: bin,
      root: t.absPath('root', path.join(stateDir, name)),
      type: t.oneOf('type', ['oci', 'vm'] as const, 'oci'),
      cniConfDir: t.string('cni_conf_dir', ''),
      cniMaxNetworks: t.int('cni_max_networks', 0, 0, 64),
    };
    if (cfg.runtimes[name].cniConfDir && !path.isAbsolute(cfg.runtimes[name].cniConfDir)) {
      throw new ConfigError(`${source}: runtimes.${name}.cni_conf_dir: must be an absolute path`);
    }
    t.done();
  }
  runtimes.done();

  const registries = r.table('registries');
  for (const host of registries.keys()) {
    if (!/^[a-zA-Z0-9.-]+(:[0-9]+)?$/.test(host)) throw new ConfigError(`${source}: registries."${host}": not a registry host[:port]`);
    const t = registries.table(host);
    const mirrors = t.stringList('mirrors', []);
    mirrors.forEach((m, i) => {
      let u: URL | undefined;
      try {
        u = new URL(m);
      } catch {
        u = undefined;
      }
      if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:') || u.search || u.hash) {
        throw new ConfigError(`${source}: registries."${host}".mirrors: entry ${i} must be an http:// or https:// URL, got "${m}"`);
      }
    });
    const caFile = t.string('ca_file', '');
    if (caFile && !path.isAbsolute(caFile)) throw new ConfigError(`${source}: registries."${host}".ca_file: must be an absolute path`);
    cfg.registries[host] = { mirrors, insecure: t.bool('insecure', false), tlsVerify: t.bool('tls_verify', true), caFile };
    t.done();
  }
  registries.done();

  const pull = r.table('image_pull');
  cfg.imagePull = {
    progressDeadlineSeconds: pull.int('progress_deadline_seconds', d.imagePull.progressDeadlineSeconds, 0, 86_400),
    progressMinBytes: pull.int('progress_min_bytes', d.imagePull.progressMinBytes, 0, 1 << 30),
    timeoutSeconds: pull.int('timeout_seconds', d.imagePull.timeoutSeconds, 0, 7 * 86_400),
  };
  pull.done();

  const st = r.table('streaming');
  cfg.streaming = {
    address: st.string('address', d.streaming.address),
    port: st.int('port', d.streaming.port, 0, 65535),
    tlsCertFile: st.string('tls_cert_file', d.streaming.tlsCertFile),
    tlsKeyFile: st.string('tls_key_file', d.streaming.tlsKeyFile),
    idleTimeoutSeconds: st.int('idle_timeout_seconds', d.streaming.idleTimeoutSeconds, 0, 7 * 86_400),
  };
  if (!isIP(cfg.streaming.address)) throw new ConfigError(`${source}: streaming.address: must be an IP address, got "${cfg.streaming.address}"`);
  for (const [k, v] of [['tls_cert_file', cfg.streaming.tlsCertFile], ['tls_key_file', cfg.streaming.tlsKeyFile]] as const) {
    if (v && !path.isAbsolute(v)) throw new ConfigError(`${source}: streaming.${k}: must be an absolute path, got "${v}"`);
  }
  if ((cfg.streaming.tlsCertFile === '') !== (cfg.streaming.tlsKeyFile === '')) {
    throw new ConfigError(`${source}: streaming: tls_cert_file and tls_key_file must be set together`);
  }
  st.done();

  if (!cfg.runtimes[cfg.defaultRuntime]) {
    throw new ConfigError(`${source}: default_runtime: "${cfg.defaultRuntime}" is not a configured runtime (have: ${Object.keys(cfg.runtimes).join(', ')})`);
  }
  r.done();
  return cfg;
}

/** Reads typed keys from one TOML table and remembers which were used, to refuse the rest. */
class Reader {
  private readonly used = new Set<string>();

  constructor(private readonly raw: Record<string, unknown>, private readonly where: string, private readonly prefix = '') {}

  private key(k: string): string {
    return this.prefix ? `${this.prefix}.${k}` : k;
  }

  private fail(k: string, why: string): never {
    throw new ConfigError(`${this.where}: ${this.key(k)}: ${why}`);
  }

  private get(k: string): unknown {
    this.used.add(k);
    return this.raw[k];
  }

  keys(): string[] {
    const ks = Object.keys(this.raw);
    ks.forEach((k) => this.used.add(k));
    return ks;
  }

  string(k: string, def: string): string {
    const v = this.get(k);
    if (v === undefined) return def;
    if (typeof v !== 'string') this.fail(k, `must be a string, got ${describe(v)}`);
    return v;
  }

  stringList(k: string, def: string[]): string[] {
    const v = this.get(k);
    if (v === undefined) return def;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) this.fail(k, 'must be a list of strings');
    return v as string[];
  }

  absPath(k: string, def: string): string {
    const v = this.string(k, def);
    if (!path.isAbsolute(v)) this.fail(k, `must be an absolute path, got "${v}"`);
    return path.normalize(v);
  }

  absPathList(k: string, def: string[]): string[] {
    const v = this.get(k);
    if (v === undefined) return def;
    if (!Array.isArray(v) || v.length === 0) this.fail(k, `must be a non-empty list of absolute paths`);
    return v.map((p, i) => {
      if (typeof p !== 'string' || !path.isAbsolute(p)) this.fail(k, `entry ${i} must be an absolute path, got ${describe(p)}`);
      return path.normalize(p);
    });
  }

  bool(k: string, def: boolean): boolean {
    const v = this.get(k);
    if (v === undefined) return def;
    if (typeof v !== 'boolean') this.fail(k, `must be true or false, got ${describe(v)}`);
    return v;
  }

  int(k: string, def: number, min: number, max: number): number {
    const v = this.get(k);
    if (v === undefined) return def;
    const n = typeof v === 'bigint' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n)) this.fail(k, `must be a whole number, got ${describe(v)}`);
    if (n < min || n > max) this.fail(k, `must be between ${min} and ${max}, got ${n}`);
    return n;
  }

  oneOf<T extends string>(k: string, allowed: readonly T[], def: T, acceptBool = false): T {
    let v = this.get(k);
    if (v === undefined) return def;
    if (acceptBool && typeof v === 'boolean') v = String(v);
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
      this.fail(k, `must be one of ${allowed.map((a) => `"${a}"`).join(', ')}, got ${describe(v)}`);
    }
    return v as T;
  }

  table(k: string): Reader {
    const v = this.get(k);
    if (v === undefined) return new Reader({}, this.where, this.key(k));
    if (typeof v !== 'object' || v === null || Array.isArray(v) || v instanceof Date) this.fail(k, `must be a table, got ${describe(v)}`);
    return new Reader(v as Record<string, unknown>, this.where, this.key(k));
  }

  /** Refuses any key of this table that nothing read. */
  done(): void {
    for (const k of Object.keys(this.raw)) {
      if (!this.used.has(k)) throw new ConfigError(`${this.where}: ${this.key(k)}: unknown key`);
    }
  }
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return 'a list';
  if (v instanceof Date) return 'a date';
  if (typeof v === 'string') return `"${v}"`;
  if (typeof v === 'object' && v !== null) return 'a table';
  return String(v);
}
