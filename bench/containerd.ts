/**
 * containerd (Debian's 1.6) for the comparison: installed with apt-get if missing, run
 * with a config of its own (root, state, sockets, runc root and CNI conf dir all under
 * a temp dir), Corral's pause binary imported as its sandbox image from an OCI image
 * tarball built here, and driven over its CRI socket with Corral's own gRPC client.
 * cleanup() removes its pods, stops it and removes every trace (shims, runc state,
 * shm and rootfs mounts, netns, bridge, IPAM reservations, cgroups, shim socket dir).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs, existsSync, openSync, closeSync } from 'node:fs';
import path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { createImageClient, createRuntimeClient, call } from '../src/cri/client.js';
import type { ImageRpcName, RuntimeRpcName } from '../src/cri/proto.js';
import { packageRoot } from '../src/util/paths.js';
import { execFile, execChecked } from '../src/util/exec.js';
import { benchConflist } from './corral.js';
import { mountTmpfs, pidsWithCmdline, sleep } from './lib.js';

export const PAUSE_IMAGE = 'corral.local/pause:builtin';
const SHIM_SOCKET_DIR = '/run/containerd';

/** Installs Debian's containerd when containerd or ctr is missing; returns its version line. */
export async function ensureContainerd(): Promise<string> {
  const have = async () => (await execFile('sh', ['-c', 'command -v containerd && command -v ctr && command -v containerd-shim-runc-v2'])).code === 0;
  if (!(await have())) {
    console.log('containerd is not installed: apt-get install -y containerd ...');
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    let r = await execFile('apt-get', ['install', '-y', 'containerd'], { env });
    if (r.code !== 0) {
      await execFile('apt-get', ['update'], { env });
      r = await execFile('apt-get', ['install', '-y', 'containerd'], { env });
    }
    if (r.code !== 0 || !(await have())) throw new Error(`apt-get install containerd failed: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' ')}`);
  }
  return (await execChecked('containerd', ['--version'])).stdout.trim();
}

function sha256(data: Buffer | string): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

function goArch(): string {
  const m: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return m[process.arch] ?? process.arch;
}

/**
 * Builds a single-layer OCI image layout tarball of Corral's pause binary (/pause,
 * entrypoint ["/pause"]), named PAUSE_IMAGE; returns the tarball's path.
 */
export async function buildPauseImage(workDir: string): Promise<string> {
  const staging = path.join(workDir, 'layer-root');
  const layout = path.join(workDir, 'oci-layout');
  const blobs = path.join(layout, 'blobs', 'sha256');
  await fs.mkdir(staging, { recursive: true });
  await fs.mkdir(blobs, { recursive: true });
  await fs.copyFile(path.join(packageRoot(), 'dist/native/corral-pause'), path.join(staging, 'pause'));
  await fs.chmod(path.join(staging, 'pause'), 0o755);
  const layerTar = path.join(workDir, 'layer.tar');
  await execChecked('tar', ['--numeric-owner', '--owner=0', '--group=0', '--mtime=@0', '-C', staging, '-cf', layerTar, 'pause']);
  const layer = await fs.readFile(layerTar);
  const layerDigest = sha256(layer);
  const writeBlob = async (data: Buffer | string) => {
    const digest = sha256(data);
    await fs.writeFile(path.join(blobs, digest.slice('sha256:'.length)), data);
    return { digest, size: Buffer.byteLength(data) };
  };
  await writeBlob(layer);
  const config = JSON.stringify({
    architecture: goArch(),
    os: 'linux',
    config: { Entrypoint: ['/pause'], WorkingDir: '/' },
    rootfs: { type: 'layers', diff_ids: [layerDigest] },
    history: [{ created_by: 'corral podbench: dist/native/corral-pause as /pause' }],
  });
  const cfg = await writeBlob(config);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest, size: layer.length }],
  });
  const man = await writeBlob(manifest);
  const index = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [
      {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        ...man,
        platform: { architecture: goArch(), os: 'linux' },
        annotations: { 'io.containerd.image.name': PAUSE_IMAGE, 'org.opencontainers.image.ref.name': PAUSE_IMAGE },
      },
    ],
  };
  await fs.writeFile(path.join(layout, 'index.json'), JSON.stringify(index));
  await fs.writeFile(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const tarball = path.join(workDir, 'corral-pause-oci.tar');
  await execChecked('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', layout, '-cf', tarball, 'oci-layout', 'index.json', 'blobs']);
  return tarball;
}

export class BenchContainerd {
  readonly socket: string;
  readonly rootDir: string;
  readonly stateDir: string;
  readonly runcRoot: string;
  readonly confDir: string;
  readonly configFile: string;
  readonly logFile: string;
  readonly networkName: string;
  readonly bridge: string;
  private child: ChildProcess | undefined;
  private exited: Promise<void> | undefined;
  private client: grpc.Client | undefined;
  private imageClient: grpc.Client | undefined;
  /** State dir on a tmpfs of its own (mounted by start(), unmounted by cleanup()), as /run is on a systemd host. */
  stateOnTmpfs = false;
  /** Host state that existed before, so cleanup removes only what containerd made. */
  private before = { netns: new Set<string>(), shimDir: true, cgroups: new Map<string, boolean>() };

  /** extraConfig: TOML appended to containerd's config (e.g. registry mirrors for the pull benchmark). */
  constructor(readonly dir: string, tag: string, readonly subnet: string, private readonly extraConfig = '') {
    this.socket = path.join(dir, 'containerd.sock');
    this.rootDir = path.join(dir, 'root');
    this.stateDir = path.join(dir, 'state');
    this.runcRoot = path.join(dir, 'runc');
    this.confDir = path.join(dir, 'net.d');
    this.configFile = path.join(dir, 'config.toml');
    this.logFile = path.join(dir, 'containerd.log');
    this.networkName = `corralbench-d-${tag}`;
    this.bridge = `cbd${tag}`;
  }

  get pid(): number {
    return this.child?.pid ?? 0;
  }

  /** containerd-shim-runc-v2 processes serving this containerd. */
  shimPids(): number[] {
    return pidsWithCmdline('containerd-shim-runc-v2', `-address ${this.socket}`);
  }

  async start(): Promise<void> {
    await fs.mkdir(this.confDir, { recursive: true });
    if (this.stateOnTmpfs) await mountTmpfs(this.stateDir);
    this.before.netns = new Set(await fs.readdir('/var/run/netns').catch(() => [] as string[]));
    this.before.shimDir = existsSync(SHIM_SOCKET_DIR);
    for (const c of await cgroupHierarchies()) this.before.cgroups.set(c, existsSync(path.join(c, 'k8s.io')));
    await fs.writeFile(path.join(this.confDir, '10-bench.conflist'), JSON.stringify(benchConflist(this.networkName, this.bridge, this.subnet), null, 2));
    const cri = 'plugins."io.containerd.grpc.v1.cri"';
    await fs.writeFile(
      this.configFile,
      `version = 2
root = "${this.rootDir}"
state = "${this.stateDir}"
oom_score = 0
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "${this.socket}"

[ttrpc]
  address = "${this.socket}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[${cri}]
  sandbox_image = "${PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_hugetlb_controller = true
  tolerate_missing_hugetlb_controller = true

[${cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[${cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[${cri}.containerd.runtimes.runc.options]
  Root = "${this.runcRoot}"
  SystemdCgroup = false

[${cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "${this.confDir}"
  max_conf_num = 1
${this.extraConfig}`,
    );
    this.launch();
    await this.waitForNetworkReady(30_000, 200);
  }

  /** Spawns containerd with the config start() wrote (a restart after stop()); does not wait. */
  launch(): void {
    const out = openSync(this.logFile, 'a');
    const child = spawn('containerd', ['--config', this.configFile], { stdio: ['ignore', out, out] });
    closeSync(out);
    this.child = child;
    this.exited = new Promise((resolve) => child.on('exit', () => resolve()));
    child.on('error', () => {});
  }

  /** Polls Status every pollMs until the CRI reports NetworkReady. */
  async waitForNetworkReady(timeoutMs: number, pollMs: number): Promise<void> {
    const child = this.child!;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`containerd exited with ${child.exitCode}:\n${await this.logTail()}`);
      try {
        const st = await this.rpc<any>('Status', {}, 1000);
        const net = (st.status?.conditions ?? []).find((c: any) => c.type === 'NetworkReady');
        if (net?.status) return;
      } catch {
        // A fresh channel next time: grpc-js would wait out its reconnect backoff (1 s and more).
        this.client?.close();
        this.client = undefined;
      }
      if (Date.now() > deadline) throw new Error(`containerd's CRI did not report NetworkReady within ${timeoutMs / 1000} s:\n${await this.logTail()}`);
      await sleep(pollMs);
    }
  }

  /** Forgets the gRPC channel: the next call makes a fresh one (no reconnect backoff). */
  dropClient(): void {
    this.client?.close();
    this.client = undefined;
  }

  /** SIGTERM and wait for the exit; the shims and pods keep running. */
  async stop(): Promise<void> {
    const child = this.child;
    this.client?.close();
    this.imageClient?.close();
    this.client = this.imageClient = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    await this.exited;
  }

  async importPauseImage(tarball: string): Promise<void> {
    await execChecked('ctr', ['-a', this.socket, '-n', 'k8s.io', 'images', 'import', '--all-platforms', tarball], { timeoutMs: 60_000 });
    // The CRI plugin learns about the image from an event: wait until it sees it.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const st = await this.imageRpc<any>('ImageStatus', { image: { image: PAUSE_IMAGE } }).catch(() => undefined);
      if (st?.image?.id) return;
      if (Date.now() > deadline) throw new Error(`containerd's CRI does not list ${PAUSE_IMAGE} after ctr images import`);
      await sleep(200);
    }
  }

  async rpc<T = any>(method: RuntimeRpcName, req: object = {}, deadlineMs = 120_000): Promise<T> {
    this.client ??= createRuntimeClient(this.socket);
    return call<T>(this.client, method, req, { deadlineMs });
  }

  async imageRpc<T = any>(method: ImageRpcName, req: object = {}, deadlineMs = 10_000): Promise<T> {
    this.imageClient ??= createImageClient(this.socket);
    return call<T>(this.imageClient, method, req, { deadlineMs });
  }

  async logTail(lines = 30): Promise<string> {
    const text = await fs.readFile(this.logFile, 'utf8').catch(() => '');
    return text.split('\n').slice(-lines).join('\n');
  }

  async cleanup(): Promise<void> {
    const child = this.child;
    try {
      if (child && child.exitCode === null && child.signalCode === null) {
        const { items } = await this.rpc<any>('ListPodSandbox', {}, 10_000).catch(() => ({ items: [] as any[] }));
        for (const i of items) {
          await this.rpc('StopPodSandbox', { podSandboxId: i.id }, 60_000).catch(() => {});
          await this.rpc('RemovePodSandbox', { podSandboxId: i.id }, 60_000).catch(() => {});
        }
      }
    } finally {
      this.client?.close();
      this.imageClient?.close();
      this.client = this.imageClient = undefined;
      if (child && child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await this.exited;
        clearTimeout(killer);
      }
      await this.removeLeftovers();
    }
  }

  /** Everything the API could not remove (a failure, Ctrl-C, or containerd gone). */
  private async removeLeftovers(): Promise<void> {
    // Containers still known to runc: kill and delete them; then the shims have nothing left and exit.
    for (const ns of await fs.readdir(this.runcRoot).catch(() => [] as string[])) {
      const root = path.join(this.runcRoot, ns);
      const list = await execFile('runc', ['--root', root, 'list', '-q']).catch(() => undefined);
      for (const id of (list?.stdout ?? '').split('\n').filter(Boolean)) await execFile('runc', ['--root', root, 'delete', '-f', id]);
    }
    for (const pid of this.shimPids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    // Netns that containerd created (cni-<uuid> under /var/run/netns): CNI DEL is no longer possible, just drop them.
    for (const n of await fs.readdir('/var/run/netns').catch(() => [] as string[])) {
      if (this.before.netns.has(n) || !n.startsWith('cni-')) continue;
      await execFile('umount', ['-l', path.join('/var/run/netns', n)]);
      await fs.rm(path.join('/var/run/netns', n), { force: true });
    }
    const mounts = await fs.readFile('/proc/self/mounts', 'utf8');
    const ours = mounts.split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(this.dir + '/')).sort().reverse();
    for (const m of ours) await execFile('umount', ['-l', m]);
    await execFile('ip', ['link', 'del', this.bridge]);
    await fs.rm(`/var/lib/cni/networks/${this.networkName}`, { recursive: true, force: true });
    for (const f of await fs.readdir('/var/lib/cni/results').catch(() => [] as string[])) {
      if (f.startsWith(`${this.networkName}-`)) await fs.rm(path.join('/var/lib/cni/results', f), { force: true });
    }
    // containerd 1.6 puts shim sockets under /run/containerd/s whatever its state dir is.
    if (!this.before.shimDir) await fs.rm(SHIM_SOCKET_DIR, { recursive: true, force: true });
    // runc made /k8s.io/<id> cgroups (no cgroup parent in the pod configs); the ids are gone, drop the parent.
    for (const [c, existed] of this.before.cgroups) {
      if (existed) continue;
      const dir = path.join(c, 'k8s.io');
      for (const sub of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
        if (sub.isDirectory()) await fs.rmdir(path.join(dir, sub.name)).catch(() => {});
      }
      await fs.rmdir(dir).catch(() => {});
    }
  }
}

/** Mount points of the cgroup v1 hierarchies (and the v2 tree if any). */
async function cgroupHierarchies(): Promise<string[]> {
  const mounts = await fs.readFile('/proc/self/mounts', 'utf8');
  return mounts
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup' || f[2] === 'cgroup2')
    .map((f) => f[1]!);
}
