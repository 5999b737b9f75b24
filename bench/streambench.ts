/**
 * streambench: the streaming paths of Corral and containerd 1.6, side by side in the same
 * run, driven by the real Go client `crictl` (v1.26.1, client-go's SPDY):
 *
 *   - exec round trip: `crictl exec CTR true`, whole command timed, and a `crictl version`
 *     baseline (process start + connect + one RPC) timed right next to it;
 *   - exec stdout throughput: `crictl exec CTR head -c BYTES /dev/zero | wc -c`;
 *   - port-forward throughput: `crictl port-forward POD LPORT:5201` to busybox
 *     `nc -ll -p 5201 -e head -c BYTES /dev/zero` in the pod; a Node client on 127.0.0.1
 *     reads BYTES (timed to the last byte), then notes whether and when the forwarder
 *     closes the connection that the pod closed;
 *   - port-forward echo: the same through `nc -ll -p 5202 -e cat`: BYTES up and BYTES back
 *     at the same time, timed to the last echoed byte;
 *   - port-forward short connections: 20 per round through the echo port, each connect, 100
 *     bytes up, half-close, echo back, close (an HTTP request through kubectl port-forward).
 *
 * Rounds are interleaved (the side that goes first alternates), so slow spells of this
 * shared machine hit both. Prints medians, the raw figures and containerd/Corral ratios;
 * asserts nothing. Everything it starts is removed at the end, also on failure or Ctrl-C.
 *
 *   node dist/bench/streambench.js [--rounds R] [--execs-per-round N] [--mb X] [--skip-containerd]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type * as grpc from '@grpc/grpc-js';
import { call, createImageClient } from '../src/cri/client.js';
import { execFile } from '../src/util/exec.js';
import { packageRoot } from '../src/util/paths.js';
import { freePort, pushImage, startRegistry } from '../test/helpers/registry.js';
import { buildLayer, busyboxImage } from '../test/helpers/test-images.js';
import { BenchContainerd, buildPauseImage, ensureContainerd } from './containerd.js';
import { BenchCorral } from './corral.js';
import {
  errMessage,
  fmtMs,
  fmtNum,
  installSignalHandlers,
  isAborted,
  kubeletPodConfig,
  makeBenchDir,
  onCleanup,
  p50,
  parseBenchFlags,
  printTable,
  ratio,
  runBench,
} from './lib.js';

// ---------------------------------------------------------------- flags

const USAGE = 'usage: node dist/bench/streambench.js [--rounds R] [--execs-per-round N] [--mb X] [--skip-containerd]';
const flags = parseBenchFlags(USAGE, {
  options: {
    rounds: { type: 'string', default: '5' },
    'execs-per-round': { type: 'string', default: '6' },
    mb: { type: 'string', default: '100' },
    'skip-containerd': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
const ROUNDS = Number(flags.rounds);
const EXECS = Number(flags['execs-per-round']);
const BYTES = Math.round(Number(flags.mb) * 1e6);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1 || !Number.isInteger(EXECS) || EXECS < 1 || !(BYTES > 0 && BYTES <= 10e9)) {
  console.error(`--rounds and --execs-per-round must be positive integers, --mb in (0, 10000]\n${USAGE}`);
  process.exit(2);
}

/** Ports in the pod's own netns (no clash with the host): a source of BYTES zeros per connection, and an echo. */
const SOURCE_PORT = 5201;
const ECHO_PORT = 5202;
/** Short connections per round through the echo port (each a new stream pair and a new dial into the pod). */
const SHORT_CONNECTIONS = 20;
const CRICTL = 'crictl';

// ---------------------------------------------------------------- crictl

interface Run {
  ms: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command (argv, no shell unless asked) and times it from spawn to exit. */
function timedRun(cmd: string, args: string[], timeoutMs = 120_000): Promise<Run> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ ms: performance.now() - t0, code: -1, stdout, stderr: stderr + e.message });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ ms: performance.now() - t0, code, stdout, stderr });
    });
  });
}

function crictlArgs(socket: string, ...args: string[]): string[] {
  return ['--runtime-endpoint', `unix://${socket}`, '--image-endpoint', `unix://${socket}`, '--timeout', '60s', ...args];
}

const shQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** `crictl port-forward` kept running for the whole run; resolves once it listens on 127.0.0.1:localPort. */
async function startPortForward(socket: string, podId: string, localPort: number, podPort: number): Promise<ChildProcess> {
  const child = spawn(CRICTL, crictlArgs(socket, 'port-forward', podId, `${localPort}:${podPort}`), { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`crictl port-forward did not report forwarding within 30 s: ${out.trim()}`)), 30_000);
    const onData = (c: Buffer) => {
      out += c.toString();
      if (out.includes('Forwarding from')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`crictl port-forward exited with ${code}: ${out.trim()}`));
    });
  });
  try {
    await ready;
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  // Keep draining its output (one "Handling connection" line per connection).
  child.stdout!.resume();
  child.stderr!.resume();
  return child;
}

/** How long the benchmark waits, after the last byte, for the forwarded connection to be closed. */
const CLOSE_WAIT_MS = 5_000;

/**
 * Connects to the forwarded port and reads `expect` bytes: ms from connect() to the last
 * byte. Then waits up to CLOSE_WAIT_MS for the forwarder to close the connection (the pod
 * closed its end after the last byte): closeMs is how long that took, or undefined if the
 * connection stayed open.
 */
function readFrom(port: number, expect: number, timeoutMs = 120_000): Promise<{ bytes: number; ms: number; closeMs: number | undefined }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let bytes = 0;
    let lastByte = 0;
    let closeTimer: NodeJS.Timeout | undefined;
    const sock = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => sock.destroy(new Error(`not all bytes within ${timeoutMs / 1000} s (${bytes} of ${expect})`)), timeoutMs);
    const finish = (closeMs: number | undefined) => {
      clearTimeout(timer);
      clearTimeout(closeTimer);
      sock.destroy();
      resolve({ bytes, ms: lastByte - t0, closeMs });
    };
    sock.on('data', (c: Buffer) => {
      bytes += c.length;
      if (bytes >= expect && !lastByte) {
        lastByte = performance.now();
        closeTimer = setTimeout(() => finish(undefined), CLOSE_WAIT_MS);
      }
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      clearTimeout(closeTimer);
      reject(e);
    });
    sock.on('end', () => {
      if (!lastByte) {
        clearTimeout(timer);
        sock.destroy();
        reject(new Error(`the connection ended after ${bytes} of ${expect} bytes`));
        return;
      }
      finish(performance.now() - lastByte);
    });
  });
}

/**
 * Connects to the forwarded echo port, writes `total` bytes (with backpressure) while
 * reading the echo back: ms from connect() to the last echoed byte.
 */
function echoThrough(port: number, total: number, timeoutMs = 120_000): Promise<{ bytes: number; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let back = 0;
    let sent = 0;
    const chunk = Buffer.alloc(64 * 1024);
    const sock = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => sock.destroy(new Error(`not all bytes back within ${timeoutMs / 1000} s (${back} of ${total})`)), timeoutMs);
    const pump = () => {
      while (sent < total) {
        const n = Math.min(chunk.length, total - sent);
        sent += n;
        if (!sock.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void sock.once('drain', pump);
      }
    };
    sock.on('connect', pump);
    sock.on('data', (c: Buffer) => {
      back += c.length;
      if (back >= total) {
        clearTimeout(timer);
        const ms = performance.now() - t0;
        sock.destroy();
        resolve({ bytes: back, ms });
      }
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('end', () => {
      if (back >= total) return;
      clearTimeout(timer);
      sock.destroy();
      reject(new Error(`the connection ended after ${back} of ${total} bytes came back`));
    });
  });
}

/**
 * One short connection through the forwarded echo port, as an HTTP request through `kubectl
 * port-forward` makes: connect, send 100 bytes, half-close, read the echo until the pod
 * closes; ms from connect() to the close. Each is a new stream pair for the runtime, and a
 * new dial into the pod.
 */
function shortEcho(port: number, timeoutMs = 30_000): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const payload = Buffer.alloc(100, 0x61);
    let back = 0;
    const sock = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => sock.destroy(new Error(`no close within ${timeoutMs / 1000} s (${back} of 100 bytes back)`)), timeoutMs);
    sock.on('connect', () => sock.end(payload));
    sock.on('data', (c: Buffer) => (back += c.length));
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      if (back === payload.length) resolve(performance.now() - t0);
      else reject(new Error(`${back} of ${payload.length} bytes came back`));
    });
  });
}

// ---------------------------------------------------------------- the two runtimes

interface Side {
  name: 'Corral' | 'containerd';
  socket: string;
  containerId: string;
  podId: string;
  localPort: number;
  echoPort: number;
  /** Per measurement: ms of the whole crictl command. */
  version: number[];
  execTrue: number[];
  /** Whole-command ms of the stdout throughput runs, and the version p50 of the same round to subtract. */
  stdoutMs: number[];
  stdoutBase: number[];
  portForwardMs: number[];
  /** Per port-forward run: ms from the last byte until the connection was closed; undefined: still open after CLOSE_WAIT_MS. */
  closeMs: (number | undefined)[];
  /** Per echo run: ms until all BYTES came back (BYTES went up at the same time). */
  echoMs: number[];
  /** Per short connection (shortEcho): ms from connect to the pod's close. */
  shortMs: number[];
  errors: string[];
}

/** Pulls the busybox image, runs a pod and a container in it: BYTES zeros per connection on SOURCE_PORT, an echo on ECHO_PORT. */
async function setUpPod(
  name: Side['name'],
  socket: string,
  rpc: (m: any, req: object, deadlineMs?: number) => Promise<any>,
  image: string,
  logRoot: string,
): Promise<{ podId: string; containerId: string }> {
  let images: grpc.Client | undefined = createImageClient(socket);
  try {
    await call(images, 'PullImage', { image: { image } }, { deadlineMs: 120_000 });
  } finally {
    images.close();
    images = undefined;
  }
  const config = kubeletPodConfig('streambench', logRoot, 'CONTAINER');
  await fs.mkdir(config.logDirectory, { recursive: true });
  const { podSandboxId } = await rpc('RunPodSandbox', { config, runtimeHandler: '' }, 120_000);
  const { containerId } = await rpc(
    'CreateContainer',
    {
      podSandboxId,
      config: {
        metadata: { name: 'source', attempt: 0 },
        image: { image },
        // -ll: keep listening; every connection gets its own `head` (whose exit closes it) or `cat`.
        command: ['sh', '-c', `nc -ll -p ${ECHO_PORT} -e cat & exec nc -ll -p ${SOURCE_PORT} -e head -c ${BYTES} /dev/zero`],
        logPath: 'source.log',
        linux: {},
      },
      sandboxConfig: config,
    },
    120_000,
  );
  await rpc('StartContainer', { containerId }, 120_000);
  console.log(`${name}: pod ${podSandboxId.slice(0, 12)}, container ${containerId.slice(0, 12)} running nc -ll -p ${SOURCE_PORT} -e head -c ${BYTES} /dev/zero and nc -ll -p ${ECHO_PORT} -e cat`);
  return { podId: podSandboxId, containerId };
}

/** One round for one side: version/exec pairs, one stdout run, one port-forward read, one port-forward echo. */
async function round(s: Side): Promise<void> {
  const version: number[] = [];
  for (let i = 0; i < EXECS && !isAborted(); i++) {
    // Paired and back to back: the baseline sees the same moment of the machine.
    const v = await timedRun(CRICTL, crictlArgs(s.socket, 'version'));
    const e = await timedRun(CRICTL, crictlArgs(s.socket, 'exec', s.containerId, 'true'));
    if (v.code === 0) version.push(v.ms);
    else s.errors.push(`crictl version: exit ${v.code}: ${v.stderr.trim()}`);
    if (e.code === 0) s.execTrue.push(e.ms);
    else s.errors.push(`crictl exec true: exit ${e.code}: ${e.stderr.trim()}`);
  }
  s.version.push(...version);
  if (isAborted()) return;
  const cmd = `${CRICTL} ${crictlArgs(s.socket, 'exec', s.containerId, 'head', '-c', String(BYTES), '/dev/zero').map(shQuote).join(' ')} | wc -c`;
  const t = await timedRun('sh', ['-c', cmd], 300_000);
  const got = Number(t.stdout.trim());
  if (t.code === 0 && got === BYTES) {
    s.stdoutMs.push(t.ms);
    s.stdoutBase.push(p50(version));
  } else s.errors.push(`exec stdout: exit ${t.code}, ${got} of ${BYTES} bytes: ${t.stderr.trim()}`);
  if (isAborted()) return;
  try {
    const r = await readFrom(s.localPort, BYTES);
    if (r.bytes === BYTES) {
      s.portForwardMs.push(r.ms);
      s.closeMs.push(r.closeMs);
    } else s.errors.push(`port-forward: ${r.bytes} bytes, ${BYTES} expected`);
  } catch (e) {
    s.errors.push(`port-forward: ${errMessage(e)}`);
  }
  if (isAborted()) return;
  try {
    s.echoMs.push((await echoThrough(s.echoPort, BYTES)).ms);
  } catch (e) {
    s.errors.push(`port-forward echo: ${errMessage(e)}`);
  }
  for (let i = 0; i < SHORT_CONNECTIONS && !isAborted(); i++) {
    try {
      s.shortMs.push(await shortEcho(s.echoPort));
    } catch (e) {
      s.errors.push(`port-forward short connection: ${errMessage(e)}`);
    }
  }
}

// ---------------------------------------------------------------- report

const mbps = (bytes: number, ms: number) => (ms > 0 ? bytes / 1e6 / (ms / 1000) : NaN);

function report(sides: Side[]): void {
  const [c, d] = [sides.find((s) => s.name === 'Corral')!, sides.find((s) => s.name === 'containerd')];
  const execNet = (s: Side | undefined) => (s ? p50(s.execTrue) - p50(s.version) : NaN);
  const stdoutNet = (s: Side | undefined) => (s ? p50(s.stdoutMs.map((ms, i) => ms - s.stdoutBase[i]!)) : NaN);
  const rows: string[][] = [['figure', 'Corral', 'containerd', 'ratio']];
  const row = (fig: string, a: number, b: number, fmt: (v: number) => string, higherIsBetter = false) =>
    rows.push([fig, fmt(a), fmt(b), higherIsBetter ? ratio(a, b) : ratio(b, a)]);
  row('crictl version, p50 ms (baseline)', p50(c.version), d ? p50(d.version) : NaN, fmtMs);
  row('crictl exec CTR true, p50 ms', p50(c.execTrue), d ? p50(d.execTrue) : NaN, fmtMs);
  row('  exec minus version baseline, ms', execNet(c), execNet(d), fmtMs);
  row(`exec stdout ${BYTES / 1e6} MB, whole command, MB/s`, mbps(BYTES, p50(c.stdoutMs)), d ? mbps(BYTES, p50(d.stdoutMs)) : NaN, (v) => fmtNum(v), true);
  row('  minus version baseline, MB/s', mbps(BYTES, stdoutNet(c)), mbps(BYTES, stdoutNet(d)), (v) => fmtNum(v), true);
  row(`port-forward ${BYTES / 1e6} MB pod -> client, MB/s`, mbps(BYTES, p50(c.portForwardMs)), d ? mbps(BYTES, p50(d.portForwardMs)) : NaN, (v) => fmtNum(v), true);
  row(`port-forward echo, ${BYTES / 1e6} MB each way at once, MB/s`, mbps(BYTES, p50(c.echoMs)), d ? mbps(BYTES, p50(d.echoMs)) : NaN, (v) => fmtNum(v), true);
  row('port-forward short connection (100 bytes echoed), p50 ms', p50(c.shortMs), d ? p50(d.shortMs) : NaN, fmtMs);
  console.log(`\n=== Side by side: medians (ratio: containerd/Corral for ms, Corral/containerd for MB/s; >1 means Corral is ahead) ===`);
  printTable(rows);
  console.log(`\nraw figures (ms):`);
  for (const s of sides) {
    const list = (v: number[]) => v.map((x) => fmtMs(x)).join(' ');
    console.log(`  ${s.name}`);
    console.log(`    version     ${list(s.version)}`);
    console.log(`    exec true   ${list(s.execTrue)}`);
    console.log(`    exec stdout ${list(s.stdoutMs)}  (baseline ${list(s.stdoutBase)})`);
    console.log(`    port-fwd    ${list(s.portForwardMs)}`);
    console.log(`    port-fwd echo ${list(s.echoMs)}`);
    console.log(`    port-fwd short connections ${list(s.shortMs)}`);
    console.log(`    port-fwd close after the last byte: ${s.closeMs.map((x) => (x === undefined ? `still open after ${CLOSE_WAIT_MS / 1000} s` : fmtMs(x))).join(', ')}`);
    for (const e of [...new Set(s.errors)].slice(0, 5)) console.log(`    error: ${e}`);
    if (s.errors.length) console.log(`    (${s.errors.length} errors)`);
  }
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  installSignalHandlers();
  const { tag, dir } = await makeBenchDir();
  const octet = parseInt(tag.slice(0, 2), 16);
  const logRoot = path.join(dir, 'pod-logs');

  console.log(`streambench: ${ROUNDS} rounds; per round and side ${EXECS} crictl version + exec true pairs, one ${BYTES / 1e6} MB exec stdout, one ${BYTES / 1e6} MB port-forward; ${new Date().toISOString()}`);
  console.log(`machine: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Linux ${os.release()}, Node ${process.version}`);
  console.log(`crictl: ${(await execFile(CRICTL, ['--version'])).stdout.trim() || 'NOT FOUND (scripts/install-deps.sh installs it)'}`);
  console.log('note: this machine is shared and noisy; the sides are interleaved round by round.');
  console.log(`load average at start: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);

  const reg = await startRegistry();
  onCleanup('registry', () => reg.stop());
  // busybox plus `head`, linked like the other applets.
  const headLayer = await buildLayer([{ path: 'bin/', type: 'directory' }, { path: 'bin/head', type: 'symlink', linkname: 'busybox' }]);
  await pushImage(reg, 'bench/busybox', '1', await busyboxImage({ extraLayers: [headLayer] }));
  const image = `${reg.host}/bench/busybox:1`;

  const sides: Side[] = [];
  const newSide = async (name: Side['name'], socket: string, rpc: (m: any, req: object, deadlineMs?: number) => Promise<any>) => {
    const { podId, containerId } = await setUpPod(name, socket, rpc, image, logRoot);
    const forward = async (podPort: number) => {
      const localPort = await freePort();
      const forwarder = await startPortForward(socket, podId, localPort, podPort);
      // Registered after the daemon's cleanup, so it runs before it.
      onCleanup(`${name} crictl port-forward ${podPort}`, async () => {
        if (forwarder.exitCode !== null || forwarder.signalCode !== null) return;
        const gone = new Promise((r) => forwarder.once('exit', r));
        forwarder.kill('SIGTERM');
        await gone;
      });
      return localPort;
    };
    const localPort = await forward(SOURCE_PORT);
    const echoPort = await forward(ECHO_PORT);
    sides.push({ name, socket, podId, containerId, localPort, echoPort, version: [], execTrue: [], stdoutMs: [], stdoutBase: [], portForwardMs: [], closeMs: [], echoMs: [], shortMs: [], errors: [] });
  };

  const corral = new BenchCorral(path.join(dir, 'corral'), tag, `10.250.${octet}.0/24`);
  onCleanup('Corral daemon', () => corral.cleanup());
  await corral.start();
  await newSide('Corral', corral.socket, (m, q, dl) => corral.rpc(m, q, dl));

  if (flags['skip-containerd']) {
    console.log('containerd: skipped (--skip-containerd)');
  } else {
    try {
      const version = await ensureContainerd();
      const prep = await execFile('bash', [path.join(packageRoot(), 'scripts/prepare-cgroups.sh')]);
      if (prep.code !== 0) throw new Error(`scripts/prepare-cgroups.sh failed: ${prep.stderr.trim()}`);
      // The CRI plugin's registry settings: the loopback registry over plain HTTP.
      const mirror = `\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."${reg.host}"]\n  endpoint = ["http://${reg.host}"]\n`;
      const ctrd = new BenchContainerd(path.join(dir, 'containerd'), tag, `10.252.${octet}.0/24`, mirror);
      onCleanup('containerd', () => ctrd.cleanup());
      await fs.mkdir(ctrd.dir, { recursive: true });
      const tarball = await buildPauseImage(path.join(dir, 'image'));
      await ctrd.start();
      await ctrd.importPauseImage(tarball);
      await newSide('containerd', ctrd.socket, (m, q, dl) => ctrd.rpc(m, q, dl));
      console.log(`containerd: ${version}`);
    } catch (e) {
      console.log(`containerd: SKIPPED — it could not be run here: ${errMessage(e).split('\n').slice(0, 8).join('\n    ')}`);
    }
  }

  // One unmeasured warm-up pass per side (first exec, first connection), then the rounds.
  for (const s of sides) {
    await timedRun(CRICTL, crictlArgs(s.socket, 'exec', s.containerId, 'true'));
    await readFrom(s.localPort, BYTES).catch(() => undefined);
    await echoThrough(s.echoPort, BYTES).catch(() => undefined);
  }
  for (let r = 0; r < ROUNDS && !isAborted(); r++) {
    const order = r % 2 === 0 ? sides : [...sides].reverse();
    for (const s of order) {
      if (isAborted()) break;
      const before = { exec: s.execTrue.length, version: s.version.length, stdout: s.stdoutMs.length, pf: s.portForwardMs.length, echo: s.echoMs.length };
      await round(s);
      // This round's figures only ("-" where every attempt failed).
      const ms = (v: number[], from: number) => (v.length > from ? fmtMs(p50(v.slice(from))) : '-');
      const rate = (v: number[], from: number) => (v.length > from ? fmtNum(mbps(BYTES, v[v.length - 1]!)) : '-');
      console.log(
        `round ${r + 1} ${s.name.padEnd(10)} exec true p50 ${ms(s.execTrue, before.exec)} ms (version ${ms(s.version, before.version)}), ` +
          `stdout ${rate(s.stdoutMs, before.stdout)} MB/s, port-forward ${rate(s.portForwardMs, before.pf)} MB/s, echo ${rate(s.echoMs, before.echo)} MB/s`,
      );
    }
  }
  if (!isAborted()) report(sides);
  console.log(`load average at end: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
}

runBench('streambench', main);
