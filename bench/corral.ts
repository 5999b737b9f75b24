/**
 * A Corral daemon for the benchmark, started like test/helpers/daemon.ts does it (the
 * compiled `corral serve` as a child with its own root, state, netns and CNI dirs) but
 * at log level info, as a node would run it. cleanup() removes every pod through the
 * API, stops the daemon and deletes whatever is left of it on the host.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, openSync, closeSync } from 'node:fs';
import path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { createImageClient, createRuntimeClient, call } from '../src/cri/client.js';
import type { ImageRpcName, RuntimeRpcName } from '../src/cri/proto.js';
import { packageRoot } from '../src/util/paths.js';
import { execFile } from '../src/util/exec.js';
import { mountTmpfs, onCleanup, sleep } from './lib.js';
import { DAEMON_ENV, DAEMON_NODE_FLAGS, daemonEnv } from '../src/cli/node-flags.js';

/** "NAME=value NAME=value" → { NAME: value } (for CORRAL_BENCH_DAEMON_ENV). */
export function parseEnvWords(words: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const w of words.split(' ').filter(Boolean)) {
    const eq = w.indexOf('=');
    if (eq <= 0) throw new Error(`CORRAL_BENCH_DAEMON_ENV: "${w}" is not NAME=value`);
    env[w.slice(0, eq)] = w.slice(eq + 1);
  }
  return env;
}

/** bridge + host-local + portmap, as Corral's default network and the tests use it. */
export function benchConflist(networkName: string, bridge: string, subnet: string): object {
  return {
    cniVersion: '1.0.0',
    name: networkName,
    plugins: [
      { type: 'bridge', bridge, isGateway: true, ipMasq: false, ipam: { type: 'host-local', ranges: [[{ subnet }]] } },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
}

/** Runtime handlers that run a pod's pause as an OCI container (runc / crun create + start). */
export const OCI_PAUSE_HANDLERS = [
  { name: 'runc-oci-pause', binary: 'runc' },
  { name: 'crun-oci-pause', binary: 'crun' },
] as const;

export class BenchCorral {
  readonly socket: string;
  readonly rootDir: string;
  readonly stateDir: string;
  readonly netnsDir: string;
  readonly confDir: string;
  readonly cacheDir: string;
  readonly configFile: string;
  readonly logFile: string;
  readonly networkName: string;
  readonly bridge: string;
  private child: ChildProcess | undefined;
  private exited: Promise<void> | undefined;
  private client: grpc.Client | undefined;
  /**
   * Node.js flags of `corral serve`: the launcher's (scripts/start.sh, the installed wrapper)
   * unless set, or unless CORRAL_BENCH_NODE_FLAGS gives others ("" for none), to compare.
   */
  nodeFlags: readonly string[] =
    process.env.CORRAL_BENCH_NODE_FLAGS === undefined ? DAEMON_NODE_FLAGS : process.env.CORRAL_BENCH_NODE_FLAGS.split(' ').filter(Boolean);
  /**
   * Environment of `corral serve` on top of this process's: the launchers' (DAEMON_ENV) unless
   * set, or unless CORRAL_BENCH_DAEMON_ENV gives another ("NAME=value NAME=value", "" for none).
   */
  daemonEnv: Readonly<Record<string, string>> =
    process.env.CORRAL_BENCH_DAEMON_ENV === undefined ? DAEMON_ENV : parseEnvWords(process.env.CORRAL_BENCH_DAEMON_ENV);
  /** The Corral build to run (a package root with dist/): this one unless set, e.g. to compare a saved copy of an older build. */
  packageDir = packageRoot();
  /** State dir on a tmpfs of its own (mounted by start(), unmounted by cleanup()), as /run is on a systemd host. */
  stateOnTmpfs = false;

  /** dir: a fresh directory of this daemon's own; tag: short unique suffix for host-wide names. */
  constructor(readonly dir: string, tag: string, readonly subnet: string) {
    this.socket = path.join(dir, 'corral.sock');
    this.rootDir = path.join(dir, 'root');
    this.stateDir = path.join(dir, 'state');
    this.netnsDir = path.join(dir, 'netns');
    this.confDir = path.join(dir, 'net.d');
    this.cacheDir = path.join(dir, 'cni-cache');
    this.configFile = path.join(dir, 'config.toml');
    this.logFile = path.join(dir, 'daemon.log');
    this.networkName = `corralbench-c-${tag}`;
    this.bridge = `cbc${tag}`;
  }

  get conflist(): object {
    return benchConflist(this.networkName, this.bridge, this.subnet);
  }

  get pid(): number {
    return this.child?.pid ?? 0;
  }

  async start(): Promise<void> {
    await fs.mkdir(this.confDir, { recursive: true });
    if (this.stateOnTmpfs) await mountTmpfs(this.stateDir);
    await fs.writeFile(path.join(this.confDir, '10-bench.conflist'), JSON.stringify(this.conflist, null, 2));
    await fs.writeFile(
      this.configFile,
      [
        `root_dir = "${this.rootDir}"`,
        `state_dir = "${this.stateDir}"`,
        `socket = "${this.socket}"`,
        `netns_dir = "${this.netnsDir}"`,
        `log_level = "info"`,
        // The OCI pause path, for comparison with Corral's own pause (type "vm" keeps a
        // pause container; nothing else of the vm type applies to runc/crun).
        // A runtimes table replaces the default handlers: runc (the default) is listed again.
        `[runtimes.runc]`,
        `path = "runc"`,
        ...OCI_PAUSE_HANDLERS.flatMap((h) => [`[runtimes.${h.name}]`, `path = "${h.binary}"`, `type = "vm"`]),
        `[cni]`,
        `conf_dir = "${this.confDir}"`,
        `cache_dir = "${this.cacheDir}"`,
        `bin_dirs = ["/usr/lib/cni"]`,
      ].join('\n') + '\n',
    );
    this.launch();
    await this.waitForVersion(20_000, 100);
  }

  /** Spawns `corral serve` with the config start() wrote (a restart after stop()); does not wait. */
  launch(): void {
    const out = openSync(this.logFile, 'a');
    const child = spawn(process.execPath, [...this.nodeFlags, path.join(this.packageDir, 'dist/src/cli/main.js'), 'serve', '--config', this.configFile], {
      stdio: ['ignore', out, out],
      env: daemonEnv(process.env, this.daemonEnv),
    });
    closeSync(out);
    this.child = child;
    this.exited = new Promise((resolve) => child.on('exit', () => resolve()));
  }

  /** Polls Version every pollMs until it answers. */
  async waitForVersion(timeoutMs: number, pollMs: number): Promise<void> {
    const child = this.child!;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`corral serve exited with ${child.exitCode}:\n${await this.logTail()}`);
      try {
        await this.rpc('Version', {}, 1000);
        return;
      } catch {
        // A fresh channel next time: grpc-js would wait out its reconnect backoff (1 s and more).
        this.client?.close();
        this.client = undefined;
        if (Date.now() > deadline) throw new Error(`corral serve did not answer within ${timeoutMs / 1000} s:\n${await this.logTail()}`);
        await sleep(pollMs);
      }
    }
  }

  /** Forgets the gRPC channel: the next call makes a fresh one (no reconnect backoff). */
  dropClient(): void {
    this.client?.close();
    this.client = undefined;
  }

  /** SIGTERM, as systemd stops it, and wait for the exit; the pods keep running. */
  async stop(): Promise<void> {
    const child = this.child;
    this.client?.close();
    this.client = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    await this.exited;
  }

  async rpc<T = any>(method: RuntimeRpcName, req: object = {}, deadlineMs = 60_000): Promise<T> {
    this.client ??= createRuntimeClient(this.socket);
    return call<T>(this.client, method, req, { deadlineMs });
  }

  async logTail(lines = 30): Promise<string> {
    const text = await fs.readFile(this.logFile, 'utf8').catch(() => '');
    return text.split('\n').slice(-lines).join('\n');
  }

  /** Per-step Stop timings of these sandboxes, from the daemon's "pod sandbox stopped" log lines. */
  async stopTimings(ids: string[]): Promise<Record<string, number[]>> {
    const want = new Set(ids);
    const out: Record<string, number[]> = {};
    const text = await fs.readFile(this.logFile, 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      if (!line.startsWith('{') || !line.includes('pod sandbox stopped')) continue;
      let e: any;
      try {
        e = JSON.parse(line);
      } catch {
        continue;
      }
      if (e.msg !== 'pod sandbox stopped' || !want.has(e.sandbox)) continue;
      want.delete(e.sandbox); // the first Stop is the one timed; Remove's implicit stop finds nothing to do
      for (const [k, v] of Object.entries(e.timings ?? {})) (out[k] ??= []).push(Number(v));
    }
    return out;
  }

  async cleanup(): Promise<void> {
    const child = this.child;
    try {
      if (child && child.exitCode === null && child.signalCode === null) {
        const { items } = await this.rpc('ListPodSandbox', {}, 10_000).catch(() => ({ items: [] as any[] }));
        for (const i of items) {
          await this.rpc('StopPodSandbox', { podSandboxId: i.id }).catch(() => {});
          await this.rpc('RemovePodSandbox', { podSandboxId: i.id }).catch(() => {});
        }
      }
    } finally {
      this.client?.close();
      this.client = undefined;
      if (child && child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await this.exited;
        clearTimeout(killer);
      }
      // Whatever the API could not remove must still go.
      for (const rt of ['runc', 'crun']) {
        const root = path.join(this.stateDir, rt);
        const list = await execFile(rt, ['--root', root, 'list', '-q']).catch(() => undefined);
        for (const id of (list?.stdout ?? '').split('\n').filter(Boolean)) await execFile(rt, ['--root', root, 'delete', '-f', id]);
      }
      const mounts = await fs.readFile('/proc/self/mounts', 'utf8');
      const ours = mounts.split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(this.dir + '/')).sort().reverse();
      for (const m of ours) await execFile('umount', ['-l', m]);
      await execFile('ip', ['link', 'del', this.bridge]);
      await fs.rm(`/var/lib/cni/networks/${this.networkName}`, { recursive: true, force: true });
    }
  }
}

/**
 * Starts a BenchCorral and an image-service client to it, both registered for cleanup
 * (which also runs on Ctrl-C); imageRpc calls the image service (deadline 60 s unless given).
 */
export async function startBenchCorral(dir: string, tag: string, subnet: string): Promise<{ corral: BenchCorral; imageRpc: <T = any>(method: ImageRpcName, req: object, deadlineMs?: number) => Promise<T> }> {
  const corral = new BenchCorral(dir, tag, subnet);
  onCleanup('Corral daemon', () => corral.cleanup());
  await corral.start();
  let images: grpc.Client | undefined = createImageClient(corral.socket);
  onCleanup('Corral image client', async () => {
    images?.close();
    images = undefined;
  });
  return { corral, imageRpc: (method, req, deadlineMs = 60_000) => call(images!, method, req, { deadlineMs }) };
}
