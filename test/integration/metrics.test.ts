/**
 * The Prometheus endpoint of a real daemon, scraped: a pull (and a failed one), a pod with a
 * container, a failing call, a runtime handler whose create fails and one whose CNI plugin
 * fails, Stop and Remove; each moves its counters, histograms and state gauges. With
 * metrics_address unset nothing more listens and prom-client is never loaded. A daemon that
 * cannot start (metrics address or CRI socket taken) exits with the reason instead of
 * staying up half-started.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { status } from '@grpc/grpc-js';
import { TestDaemon, podConfig } from '../helpers/daemon.js';
import { pushImage, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { busyboxImage, type TestImage } from '../helpers/test-images.js';
import { createImageClient, call } from '../../src/cri/client.js';
import { packageRoot } from '../../src/util/paths.js';
import { parseExposition, sampleValue, type Sample } from '../helpers/prometheus.js';

const TRACE_HOOK = path.join(packageRoot(), 'dist/test/helpers/module-trace.js');

let reg: TestRegistry;
let img: TestImage;
/** With metrics on 127.0.0.1:0, and two extra handlers: `broken` (create fails) and `badnet` (its CNI plugin fails). */
let d: TestDaemon;
/** metrics_address unset. */
let plain: TestDaemon;

function traceArgs(file: string): string[] {
  return ['--import', `${pathToFileURL(TRACE_HOOK).href}?out=${encodeURIComponent(file)}`];
}

before(async () => {
  reg = await startRegistry();
  img = await busyboxImage();
  await pushImage(reg, 'test/busybox', '1', img);
  d = new TestDaemon({
    nodeArgs: (t) => traceArgs(path.join(t.dir, 'modules.txt')),
    extraToml: (t) => [
      'metrics_address = "127.0.0.1:0"',
      '[runtimes.runc]',
      'path = "runc"',
      '[runtimes.broken]',
      `path = "${path.join(t.dir, 'broken-runtime')}"`,
      'type = "vm"', // always a sandbox container, so its create runs (a runc pod's shared PID gets Corral's own pause)
      '[runtimes.badnet]',
      'path = "runc"',
      `cni_conf_dir = "${path.join(t.dir, 'net-bad.d')}"`,
    ].join('\n'),
  });
  // runc, except that `create` fails the way a broken runtime does.
  await d.writeScript('broken-runtime', '#!/bin/sh\nfor a in "$@"; do [ "$a" = create ] && { echo "injected create failure" >&2; exit 1; }; done\nexec runc "$@"\n');
  // A CNI plugin whose ADD fails with a CNI error (DEL succeeds: nothing to release).
  await d.writeScript('bin/corral-failcni', [
    '#!/bin/sh',
    'case "$CNI_COMMAND" in',
    '  ADD) echo \'{"cniVersion":"1.0.0","code":11,"msg":"injected ADD failure"}\'; exit 1 ;;',
    '  VERSION) echo \'{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}\' ;;',
    'esac',
    'exit 0',
  ].join('\n') + '\n');
  await d.writeScript('net-bad.d/10-bad.conflist', JSON.stringify({ cniVersion: '1.0.0', name: `corraltest-bad-${d.tag}`, plugins: [{ type: 'corral-failcni' }] }));
  await d.start();
  plain = new TestDaemon({ nodeArgs: (t) => traceArgs(path.join(t.dir, 'modules.txt')) });
  await plain.start();
});

after(async () => {
  await d?.cleanup();
  await plain?.cleanup();
  await reg?.stop();
});

/** Where the daemon's metrics server listens, from its log. */
async function metricsAddress(t: TestDaemon): Promise<string | undefined> {
  return (await t.logLines()).find((l) => l.msg === 'metrics server listening')?.address;
}

async function scrape(): Promise<Sample[]> {
  const res = await fetch(`http://${await metricsAddress(d)}/metrics`);
  assert.equal(res.status, 200);
  return parseExposition(await res.text());
}

/** TCP ports the process listens on (its sockets in /proc/net/tcp{,6} in state LISTEN). */
async function listeningPorts(pid: number): Promise<number[]> {
  const inodes = new Set<string>();
  for (const fd of await fs.readdir(`/proc/${pid}/fd`)) {
    const link = await fs.readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (m) inodes.add(m[1]!);
  }
  const ports: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of (await fs.readFile(table, 'utf8')).split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== '0A' || !inodes.has(f[9]!)) continue;
      ports.push(parseInt(f[1]!.split(':')[1]!, 16));
    }
  }
  return ports.sort((a, b) => a - b);
}

async function streamingPort(t: TestDaemon): Promise<number> {
  const url = (await t.logLines()).find((l) => l.msg === 'streaming server listening')?.url;
  return Number(new URL(url).port);
}

async function rpcCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (e) {
    return status[(e as { code: number }).code]!;
  }
}

test('a pull, a pod, a container, failing calls and handlers: every series moves as it should', async () => {
  const before = await scrape();
  assert.ok(sampleValue(before, 'process_resident_memory_bytes', {})! > 0, 'process metrics');
  assert.equal(sampleValue(before, 'corral_pods', { state: 'ready', runtime_handler: 'runc' }), 0);
  assert.equal(sampleValue(before, 'corral_image_pull_bytes_total', {}), 0);

  // Pulls: one that downloads the whole image, one of an image that is not there.
  const images = createImageClient(d.socket);
  const image = `${reg.host}/test/busybox:1`;
  try {
    await call(images, 'PullImage', { image: { image } }, { deadlineMs: 60_000 });
    assert.equal(await rpcCode(call(images, 'PullImage', { image: { image: `${reg.host}/test/nothing-here:1` } }, { deadlineMs: 60_000 })), 'NOT_FOUND');
  } finally {
    images.close();
  }
  // A failing call.
  assert.equal(await rpcCode(d.rpc('ContainerStatus', { containerId: 'no-such-container' })), 'NOT_FOUND');

  // A pod with a pause (pid POD) and a running container.
  const cfg = podConfig({ linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'POD', ipc: 'POD' } } } });
  const { podSandboxId } = await d.rpc('RunPodSandbox', { config: cfg, runtimeHandler: 'runc' });
  const { containerId } = await d.rpc('CreateContainer', {
    podSandboxId,
    config: { metadata: { name: 'sleeper', attempt: 0 }, image: { image }, command: ['/bin/busybox', 'sleep', '600'], linux: {} },
    sandboxConfig: cfg,
  });
  await d.rpc('StartContainer', { containerId });

  // Handlers that fail: the runtime's create, and the CNI plugin's ADD.
  const brokenCode = await rpcCode(d.rpc('RunPodSandbox', { config: podConfig({ linux: cfg.linux }), runtimeHandler: 'broken' }));
  const badnetCode = await rpcCode(d.rpc('RunPodSandbox', { config: podConfig(), runtimeHandler: 'badnet' }));
  assert.notEqual(brokenCode, 'OK');
  assert.notEqual(badnetCode, 'OK');

  let s = await scrape();
  // Pulls.
  const imageBytes = img.manifest.size + img.blobs.reduce((n, b) => n + b.size, 0);
  assert.equal(sampleValue(s, 'corral_image_pull_bytes_total', {}), imageBytes, 'the manifest, config and layers downloaded');
  assert.equal(sampleValue(s, 'corral_image_pull_duration_seconds_count', { outcome: 'success' }), 1);
  assert.equal(sampleValue(s, 'corral_image_pull_duration_seconds_count', { outcome: 'failure' }), 1);
  assert.equal(sampleValue(s, 'corral_image_pull_errors_total', { reason: 'not-found' }), 1);
  // Calls, by method and code.
  assert.equal(sampleValue(s, 'corral_cri_requests_total', { method: 'PullImage', grpc_code: 'OK' }), 1);
  assert.equal(sampleValue(s, 'corral_cri_requests_total', { method: 'PullImage', grpc_code: 'NOT_FOUND' }), 1);
  assert.equal(sampleValue(s, 'corral_cri_requests_total', { method: 'ContainerStatus', grpc_code: 'NOT_FOUND' }), 1);
  assert.equal(sampleValue(s, 'corral_cri_requests_total', { method: 'RunPodSandbox', grpc_code: 'OK' }), 1);
  const failedRuns = brokenCode === badnetCode ? [[brokenCode, 2]] : [[brokenCode, 1], [badnetCode, 1]];
  for (const [code, n] of failedRuns) assert.equal(sampleValue(s, 'corral_cri_requests_total', { method: 'RunPodSandbox', grpc_code: code as string }), n);
  assert.equal(sampleValue(s, 'corral_cri_request_duration_seconds_count', { method: 'RunPodSandbox', grpc_code: 'OK' }), 1);
  assert.ok(sampleValue(s, 'corral_cri_request_duration_seconds_sum', { method: 'RunPodSandbox', grpc_code: 'OK' })! > 0);
  assert.equal(sampleValue(s, 'corral_cri_request_duration_seconds_bucket', { method: 'RunPodSandbox', grpc_code: 'OK', le: '+Inf' }), 1);
  // RunPodSandbox's steps, once each for the pod that ran.
  // (A shared-PID pod on runc gets Corral's own pause: started, not created through the runtime.)
  for (const step of ['netns', 'cni', 'start', 'total']) {
    assert.equal(sampleValue(s, 'corral_sandbox_step_duration_seconds_count', { operation: 'run', step, runtime_handler: 'runc' }), 1, `run step ${step}`);
  }
  // Failures by handler and plugin.
  assert.equal(sampleValue(s, 'corral_runtime_errors_total', { runtime_handler: 'broken', operation: 'create' }), 1);
  assert.equal(sampleValue(s, 'corral_cni_plugin_errors_total', { plugin: 'corral-failcni', verb: 'ADD' }), 1);
  assert.equal(sampleValue(s, 'corral_runtime_errors_total', { runtime_handler: 'runc', operation: 'create' }), undefined, 'runc did not fail');
  // State, read from the stores.
  assert.equal(sampleValue(s, 'corral_pods', { state: 'ready', runtime_handler: 'runc' }), 1);
  assert.equal(sampleValue(s, 'corral_pods', { state: 'notready', runtime_handler: 'runc' }), 0);
  assert.equal(sampleValue(s, 'corral_pods', { state: 'ready', runtime_handler: 'broken' }), 0, 'a rolled-back Run leaves no pod');
  assert.equal(sampleValue(s, 'corral_containers', { state: 'running', runtime_handler: 'runc' }), 1);

  // Stop: the container exits, the pod is not ready, Stop's steps are observed.
  await d.rpc('StopContainer', { containerId, timeout: 0 });
  await d.rpc('StopPodSandbox', { podSandboxId });
  s = await scrape();
  assert.equal(sampleValue(s, 'corral_containers', { state: 'running', runtime_handler: 'runc' }), 0);
  assert.equal(sampleValue(s, 'corral_containers', { state: 'exited', runtime_handler: 'runc' }), 1);
  assert.equal(sampleValue(s, 'corral_pods', { state: 'ready', runtime_handler: 'runc' }), 0);
  assert.equal(sampleValue(s, 'corral_pods', { state: 'notready', runtime_handler: 'runc' }), 1);
  for (const step of ['container', 'cni', 'netns']) {
    assert.equal(sampleValue(s, 'corral_sandbox_step_duration_seconds_count', { operation: 'stop', step, runtime_handler: 'runc' }), 1, `stop step ${step}`);
  }

  // Removed: the gauges follow the stores back to zero.
  await d.rpc('RemovePodSandbox', { podSandboxId });
  s = await scrape();
  assert.equal(sampleValue(s, 'corral_pods', { state: 'notready', runtime_handler: 'runc' }), 0);
  assert.equal(sampleValue(s, 'corral_containers', { state: 'exited', runtime_handler: 'runc' }), 0);
});

test('metrics on: the daemon listens on the metrics port too and has loaded prom-client', async () => {
  const address = await metricsAddress(d);
  assert.ok(address, 'the metrics server logged where it listens');
  const port = Number(address.split(':').pop());
  assert.deepEqual(await listeningPorts(d.pid!), [await streamingPort(d), port].sort((a, b) => a - b));
  const modules = await fs.readFile(path.join(d.dir, 'modules.txt'), 'utf8');
  assert.match(modules, /\/node_modules\/prom-client\//, 'the module trace sees prom-client (so its absence below means something)');
});

test('metrics off: nothing but the streaming server listens on TCP, and prom-client is never loaded', async () => {
  assert.equal(await metricsAddress(plain), undefined);
  assert.deepEqual(await listeningPorts(plain.pid!), [await streamingPort(plain)]);
  // Work that would report (a failing call, a pod) loads nothing either.
  assert.equal(await rpcCode(plain.rpc('ContainerStatus', { containerId: 'no-such-container' })), 'NOT_FOUND');
  const { podSandboxId } = await plain.rpc('RunPodSandbox', { config: podConfig() });
  await plain.rpc('RemovePodSandbox', { podSandboxId });
  const modules = await fs.readFile(path.join(plain.dir, 'modules.txt'), 'utf8');
  assert.match(modules, /\/dist\/src\/daemon\.js/, 'the trace saw the daemon load');
  assert.doesNotMatch(modules, /prom-client|\/dist\/src\/metrics\//);
});

/** Runs `corral serve` with a config of its own; resolves with its exit code and stderr (a hang past 30 s is a failure). */
async function serveUntilExit(configToml: string, file: string): Promise<{ code: number | null; stderr: string }> {
  await fs.writeFile(file, configToml);
  const child = spawn(process.execPath, [path.join(packageRoot(), 'dist/src/cli/main.js'), 'serve', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stderr };
}

/** A second daemon's config: dirs of its own under d's, the given socket and metrics address. */
function secondDaemonToml(dir: string, socket: string, metrics: string): string {
  return [
    `root_dir = "${dir}/root"`,
    `state_dir = "${dir}/state"`,
    `socket = "${socket}"`,
    `netns_dir = "${dir}/netns"`,
    `metrics_address = "${metrics}"`,
    '[cni]',
    `conf_dir = "${d.confDir}"`,
    `cache_dir = "${dir}/cni-cache"`,
  ].join('\n') + '\n';
}

test('start-up refused: a taken metrics address, or a taken CRI socket after metrics are bound, ends the process with the reason', async () => {
  const dir = path.join(d.dir, 'second');
  const address = (await metricsAddress(d))!;
  const taken = await serveUntilExit(secondDaemonToml(dir, path.join(dir, 'corral.sock'), address), path.join(d.dir, 'second-1.toml'));
  assert.equal(taken.code, 1, taken.stderr);
  assert.match(taken.stderr, new RegExp(`metrics_address ${address.replace(/\./g, '\\.')}: the address is already in use .*choose another port`));
  // Metrics (and the streaming server) are listening when the CRI socket turns out to be taken: all closed, the process ends.
  const socketTaken = await serveUntilExit(secondDaemonToml(dir, d.socket, '127.0.0.1:0'), path.join(d.dir, 'second-2.toml'));
  assert.equal(socketTaken.code, 1, `a daemon that could not start must exit, not hang (code ${socketTaken.code}): ${socketTaken.stderr}`);
  assert.match(socketTaken.stderr, /another daemon is listening on/);
  assert.doesNotMatch(socketTaken.stderr, /corral: corral:/, "the reason is prefixed once");
  // The first daemon is unharmed.
  assert.equal(await rpcCode(d.rpc('Version', {})), 'OK');
});
