/**
 * Test harness: runs the real `corral serve` (compiled) as a child process with its own
 * root, state, netns and CNI dirs under /run, a bridge network of its own, and talks to
 * it over the CRI socket. cleanup() removes every pod, stops the daemon and deletes all
 * it made, so a failing test leaves nothing behind.
 */
import { DAEMON_NODE_FLAGS, daemonEnv } from '../../src/cli/node-flags.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, openSync, closeSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { createRuntimeClient, call } from '../../src/cri/client.js';
import type { RuntimeRpcName } from '../../src/cri/proto.js';
import { packageRoot } from '../../src/util/paths.js';
import { execFile } from '../../src/util/exec.js';

export interface TestDaemonOptions {
  /** Extra TOML appended to the generated config (a function gets the daemon, for its paths). */
  extraToml?: string | ((d: TestDaemon) => string);
  /** Extra keys inside the [cni] table. */
  cniToml?: string;
  /** The conflist to install (default: bridge + host-local + portmap); null = none. */
  conflist?: object | null | ((d: TestDaemon) => object);
  /** Subnet of the default bridge network. */
  subnet?: string;
  /** Options for node itself, before the script (e.g. --import of a test hook); a function gets the daemon, for its paths. */
  nodeArgs?: string[] | ((d: TestDaemon) => string[]);
}

export class TestDaemon {
  readonly tag = randomBytes(3).toString('hex');
  readonly dir = `/run/corral-test-${this.tag}`;
  readonly socket = path.join(this.dir, 'corral.sock');
  readonly rootDir = path.join(this.dir, 'root');
  readonly stateDir = path.join(this.dir, 'state');
  readonly netnsDir = path.join(this.dir, 'netns');
  readonly confDir = path.join(this.dir, 'net.d');
  readonly cacheDir = path.join(this.dir, 'cni-cache');
  readonly configFile = path.join(this.dir, 'config.toml');
  /** Searched for CNI plugins before /usr/lib/cni: tests put fake plugins here. */
  readonly binDir = path.join(this.dir, 'bin');
  readonly logFile = path.join(this.dir, 'daemon.log');
  readonly bridge = `crlt${this.tag}`;
  readonly networkName = `corraltest-${this.tag}`;
  readonly subnet: string;
  private child: ChildProcess | undefined;
  private exited: Promise<number | null> | undefined;
  private client: grpc.Client | undefined;

  constructor(private readonly opts: TestDaemonOptions = {}) {
    this.subnet = opts.subnet ?? `10.${200 + (parseInt(this.tag.slice(0, 2), 16) % 50)}.${parseInt(this.tag.slice(2, 4), 16)}.0/24`;
  }

  defaultConflist(): object {
    return {
      cniVersion: '1.0.0',
      name: this.networkName,
      plugins: [
        { type: 'bridge', bridge: this.bridge, isGateway: true, ipMasq: false, ipam: { type: 'host-local', ranges: [[{ subnet: this.subnet }]] } },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    };
  }

  async start(): Promise<void> {
    await fs.mkdir(this.confDir, { recursive: true });
    const c = this.opts.conflist;
    const conflist = c === undefined ? this.defaultConflist() : typeof c === 'function' ? c(this) : c;
    if (conflist) await fs.writeFile(path.join(this.confDir, '10-test.conflist'), JSON.stringify(conflist, null, 2));
    await fs.writeFile(
      this.configFile,
      [
        `root_dir = "${this.rootDir}"`,
        `state_dir = "${this.stateDir}"`,
        `socket = "${this.socket}"`,
        `netns_dir = "${this.netnsDir}"`,
        `log_level = "debug"`,
        typeof this.opts.extraToml === 'function' ? this.opts.extraToml(this) : (this.opts.extraToml ?? ''),
        `[cni]`,
        `conf_dir = "${this.confDir}"`,
        `cache_dir = "${this.cacheDir}"`,
        `bin_dirs = ["${this.binDir}", "/usr/lib/cni"]`,
        this.opts.cniToml ?? '',
      ].join('\n') + '\n',
    );
    await this.spawnDaemon();
  }

  /** Starts (or restarts) the daemon process and waits until it answers Version. */
  async spawnDaemon(): Promise<void> {
    const out = openSync(this.logFile, 'a');
    const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, ...(typeof this.opts.nodeArgs === 'function' ? this.opts.nodeArgs(this) : (this.opts.nodeArgs ?? [])), path.join(packageRoot(), 'dist/src/cli/main.js'), 'serve', '--config', this.configFile], {
      stdio: ['ignore', out, out],
      env: daemonEnv(process.env),
    });
    closeSync(out);
    this.child = child;
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`corral serve exited with ${child.exitCode}:\n${await this.logTail()}`);
      try {
        await this.rpc('Version', {}, 1000);
        return;
      } catch {
        if (Date.now() > deadline) throw new Error(`corral serve did not answer within 20 s:\n${await this.logTail()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async rpc<T = any>(method: RuntimeRpcName, req: object = {}, deadlineMs = 60_000): Promise<T> {
    this.client ??= createRuntimeClient(this.socket);
    return call<T>(this.client, method, req, { deadlineMs });
  }

  /** Sends a signal and waits for the daemon to exit; returns its exit code. */
  async stopDaemon(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    this.client?.close();
    this.client = undefined;
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return this.child?.exitCode ?? null;
    this.child.kill(signal);
    return this.exited!;
  }

  /** Writes an executable script under the test dir (fake plugins, runtime wrappers); returns its path. */
  async writeScript(relPath: string, body: string): Promise<string> {
    const p = path.join(this.dir, relPath);
    await fs.mkdir(path.dirname(p), { recursive: true });
    await fs.writeFile(p, body, { mode: 0o755 });
    return p;
  }

  async writeConflist(conflist: object | null, file = '10-test.conflist'): Promise<void> {
    const p = path.join(this.confDir, file);
    if (conflist === null) await fs.rm(p, { force: true });
    else await fs.writeFile(p, JSON.stringify(conflist, null, 2));
  }

  /** The daemon's PID (for kill -9 tests). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  async logTail(lines = 40): Promise<string> {
    const text = await fs.readFile(this.logFile, 'utf8').catch(() => '');
    return text.split('\n').slice(-lines).join('\n');
  }

  async logLines(): Promise<any[]> {
    const text = await fs.readFile(this.logFile, 'utf8').catch(() => '');
    return text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  }

  /** Removes every pod through the API, stops the daemon, and deletes what the test made. */
  async cleanup(): Promise<void> {
    try {
      if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
        const { items } = await this.rpc('ListPodSandbox', {}, 10_000).catch(() => ({ items: [] as any[] }));
        for (const i of items) await this.rpc('RemovePodSandbox', { podSandboxId: i.id }).catch(() => {});
      }
    } finally {
      await this.stopDaemon('SIGTERM');
      // Belt and braces: anything the API could not remove must still go, or later tests and the host suffer.
      const roots = (await fs.readdir(this.stateDir, { withFileTypes: true }).catch(() => [])).filter((e) => e.isDirectory() && e.name !== 'sandboxes');
      for (const r of roots) {
        const root = path.join(this.stateDir, r.name);
        for (const rt of ['runc', 'crun']) {
          const list = await execFile(rt, ['--root', root, 'list', '-q']).catch(() => undefined);
          for (const id of (list?.stdout ?? '').split('\n').filter(Boolean)) await execFile(rt, ['--root', root, 'delete', '-f', id]);
        }
      }
      // gVisor: runsc's sandbox, gofer and Corral's waiters of this daemon (runsc roots under its state dir).
      for (const pid of await fs.readdir('/proc').catch(() => [] as string[])) {
        const argv = (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
        if (/^(runsc|corral-runsc)/.test(path.basename(argv[0] ?? '')) && argv.some((a, i) => a.startsWith(`--root=${this.stateDir}/`) || (a === '--root' && (argv[i + 1] ?? '').startsWith(`${this.stateDir}/`)))) {
          try {
            process.kill(Number(pid), 'SIGKILL');
          } catch {
            /* gone */
          }
        }
      }
      const mounts = await fs.readFile('/proc/self/mounts', 'utf8');
      const ours = mounts.split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(this.dir)).sort().reverse();
      for (const m of ours) await execFile('umount', ['-l', m]);
      await execFile('ip', ['link', 'del', this.bridge]);
      await fs.rm(`/var/lib/cni/networks/${this.networkName}`, { recursive: true, force: true });
      await fs.rm(this.dir, { recursive: true, force: true });
    }
  }
}

let podCounter = 0;

/** A pod sandbox config as kubelet would send it, with a unique name. */
export function podConfig(overrides: Record<string, any> = {}): any {
  const n = `${process.pid}-${++podCounter}-${randomBytes(2).toString('hex')}`;
  return {
    metadata: { name: `pod-${n}`, namespace: 'corral-test', uid: `uid-${n}`, attempt: 0 },
    hostname: `pod-${n}`.slice(0, 63),
    logDirectory: `/tmp/corral-test-logs/${n}`,
    labels: { app: 'corral-test' },
    annotations: {},
    linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
    ...overrides,
  };
}

/** What is left on the host of one sandbox, for leak assertions. */
export async function hostTraces(d: TestDaemon): Promise<{ netns: string[]; reservations: string[]; runtimeContainers: string[]; mounts: string[] }> {
  const netns = await fs.readdir(d.netnsDir).catch(() => [] as string[]);
  const resDir = `/var/lib/cni/networks/${d.networkName}`;
  const reservations = (await fs.readdir(resDir).catch(() => [] as string[])).filter((f) => /^[0-9a-f.:]+$/.test(f) && f.includes('.'));
  const runtimeContainers: string[] = [];
  // Every handler's runtime root lives under the state dir, named after the handler.
  const roots = (await fs.readdir(d.stateDir, { withFileTypes: true }).catch(() => [])).filter((e) => e.isDirectory() && e.name !== 'sandboxes');
  for (const root of roots) {
    for (const rt of ['runc', 'crun']) {
      const list = await execFile(rt, ['--root', path.join(d.stateDir, root.name), 'list', '-q']).catch(() => undefined);
      runtimeContainers.push(...(list?.stdout ?? '').split('\n').filter(Boolean));
    }
  }
  runtimeContainers.splice(0, runtimeContainers.length, ...new Set(runtimeContainers));
  const mounts = (await fs.readFile('/proc/self/mounts', 'utf8')).split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(d.dir));
  return { netns, reservations, runtimeContainers, mounts };
}

/** Host-side veths on this daemon's bridges (others on the machine are not ours to count). */
export async function vethCount(d: TestDaemon): Promise<number> {
  const r = await execFile('ip', ['-o', 'link', 'show', 'type', 'veth']);
  return r.stdout.split('\n').filter((l) => new RegExp(`master ${d.bridge}[a-z]? `).test(l)).length;
}
