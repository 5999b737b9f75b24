/**
 * The metrics (src/metrics/): what each report does to the exposition, the state gauges read
 * at scrape time, the bounded HTTP endpoint; and the domain's reports through the
 * RuntimeObserver (sandbox steps, OCI runtime and CNI plugin failures).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { CorralMetrics, type StateSources } from '../../src/metrics/registry.js';
import { MetricsServer } from '../../src/metrics/server.js';
import { startMetrics } from '../../src/metrics/index.js';
import type { RuntimeObserver } from '../../src/observer.js';
import { silentLogger } from '../../src/util/log.js';
import { OciRuntime } from '../../src/oci/runtime.js';
import { execPlugin, type RuntimeConf } from '../../src/network/cni/invoke.js';
import { CniPluginError } from '../../src/network/cni/errors.js';
import { makeFakeCni } from '../helpers/cni-fake.js';
import { makeService, pod, removeServiceDirs } from '../helpers/service-fakes.js';
import { parseExposition, sampleValue } from '../helpers/prometheus.js';

/** Every report, in order, for assertions on what the domain said. */
function recordingObserver(): RuntimeObserver & { calls: unknown[][] } {
  const calls: unknown[][] = [];
  return {
    calls,
    sandboxSteps: (...a) => void calls.push(['sandboxSteps', ...a]),
    cniPluginFailed: (...a) => void calls.push(['cniPluginFailed', ...a]),
    runtimeFailed: (...a) => void calls.push(['runtimeFailed', ...a]),
    imagePulled: (...a) => void calls.push(['imagePulled', ...a]),
  };
}

async function scrape(m: CorralMetrics) {
  return parseExposition(await m.render());
}

test('CRI calls: a count and a latency histogram per method and gRPC code', async () => {
  const m = new CorralMetrics(silentLogger());
  m.observeCall('RunPodSandbox', 'OK', 0.3);
  m.observeCall('RunPodSandbox', 'OK', 0.004);
  m.observeCall('RunPodSandbox', 'INVALID_ARGUMENT', 0);
  const s = await scrape(m);
  assert.equal(sampleValue(s, 'corral_cri_requests_total', { method: 'RunPodSandbox', grpc_code: 'OK' }), 2);
  assert.equal(sampleValue(s, 'corral_cri_requests_total', { method: 'RunPodSandbox', grpc_code: 'INVALID_ARGUMENT' }), 1);
  assert.equal(sampleValue(s, 'corral_cri_request_duration_seconds_count', { method: 'RunPodSandbox', grpc_code: 'OK' }), 2);
  assert.ok(Math.abs(sampleValue(s, 'corral_cri_request_duration_seconds_sum', { method: 'RunPodSandbox', grpc_code: 'OK' })! - 0.304) < 1e-9);
  assert.equal(sampleValue(s, 'corral_cri_request_duration_seconds_bucket', { method: 'RunPodSandbox', grpc_code: 'OK', le: '0.005' }), 1);
  assert.equal(sampleValue(s, 'corral_cri_request_duration_seconds_bucket', { method: 'RunPodSandbox', grpc_code: 'OK', le: '0.5' }), 2);
  assert.equal(sampleValue(s, 'corral_cri_requests_total', { method: 'Version', grpc_code: 'OK' }), undefined);
});

test('sandbox steps, CNI and runtime failures, image pulls: each report moves its series', async () => {
  const m = new CorralMetrics(silentLogger());
  m.sandboxSteps('run', 'runc', { netns: 2.5, cni: 120, create: 40, start: 10, total: 180 });
  m.sandboxSteps('stop', 'runc', { container: 30, cni: 50, netns: 1 });
  m.cniPluginFailed('bridge', 'ADD');
  m.cniPluginFailed('bridge', 'ADD');
  m.runtimeFailed('crun', 'create');
  m.imagePulled({ seconds: 1.5, bytes: 1000 });
  m.imagePulled({ seconds: 0.5, bytes: 24 });
  m.imagePulled({ seconds: 0.2, bytes: 0, failure: 'not-found' });
  const s = await scrape(m);
  assert.equal(sampleValue(s, 'corral_sandbox_step_duration_seconds_sum', { operation: 'run', step: 'cni', runtime_handler: 'runc' }), 0.12);
  assert.equal(sampleValue(s, 'corral_sandbox_step_duration_seconds_count', { operation: 'run', step: 'total', runtime_handler: 'runc' }), 1);
  assert.equal(sampleValue(s, 'corral_sandbox_step_duration_seconds_count', { operation: 'stop', step: 'container', runtime_handler: 'runc' }), 1);
  assert.equal(sampleValue(s, 'corral_sandbox_step_duration_seconds_count', { operation: 'stop', step: 'create', runtime_handler: 'runc' }), undefined);
  assert.equal(sampleValue(s, 'corral_cni_plugin_errors_total', { plugin: 'bridge', verb: 'ADD' }), 2);
  assert.equal(sampleValue(s, 'corral_runtime_errors_total', { runtime_handler: 'crun', operation: 'create' }), 1);
  assert.equal(sampleValue(s, 'corral_image_pull_bytes_total', {}), 1024);
  assert.equal(sampleValue(s, 'corral_image_pull_duration_seconds_count', { outcome: 'success' }), 2);
  assert.equal(sampleValue(s, 'corral_image_pull_duration_seconds_count', { outcome: 'failure' }), 1);
  assert.equal(sampleValue(s, 'corral_image_pull_errors_total', { reason: 'not-found' }), 1);
});

test('process metrics are there under their standard names', async () => {
  const s = await scrape(new CorralMetrics(silentLogger()));
  assert.ok(sampleValue(s, 'process_resident_memory_bytes', {})! > 0);
  assert.ok(sampleValue(s, 'process_cpu_seconds_total', {})! >= 0);
  assert.ok(sampleValue(s, 'process_start_time_seconds', {})! > 0);
});

test('a report that cannot be recorded never throws into the call it observes', () => {
  const m = new CorralMetrics(silentLogger());
  assert.doesNotThrow(() => m.observeCall('Version', 'OK', Number.NaN));
  assert.doesNotThrow(() => m.imagePulled({ seconds: Number.NaN, bytes: 0 }));
  assert.doesNotThrow(() => m.sandboxSteps('run', 'runc', { cni: Number.NaN }));
});

test('pods and containers by state are read from the sources at each scrape, zero for every handler and state', async () => {
  const m = new CorralMetrics(silentLogger());
  // Before the stores are there (daemon start-up), no samples rather than wrong zeros.
  let s = await scrape(m);
  assert.equal(sampleValue(s, 'corral_pods', { state: 'ready', runtime_handler: 'runc' }), undefined);
  let pods: { state: 'ready' | 'notready'; runtimeHandler: string }[] = [{ state: 'ready', runtimeHandler: 'runc' }, { state: 'ready', runtimeHandler: 'runc' }, { state: 'notready', runtimeHandler: 'crun' }];
  let failContainers = false;
  const sources: StateSources = {
    handlers: () => ['runc', 'crun'],
    pods: async () => pods,
    containers: async () => {
      if (failContainers) throw new Error('store unreadable');
      return [{ state: 'running', runtimeHandler: 'runc' }, { state: 'exited', runtimeHandler: 'runc' }];
    },
  };
  m.setStateSources(sources);
  s = await scrape(m);
  assert.equal(sampleValue(s, 'corral_pods', { state: 'ready', runtime_handler: 'runc' }), 2);
  assert.equal(sampleValue(s, 'corral_pods', { state: 'notready', runtime_handler: 'runc' }), 0);
  assert.equal(sampleValue(s, 'corral_pods', { state: 'notready', runtime_handler: 'crun' }), 1);
  assert.equal(sampleValue(s, 'corral_pods', { state: 'ready', runtime_handler: 'crun' }), 0);
  assert.equal(sampleValue(s, 'corral_containers', { state: 'running', runtime_handler: 'runc' }), 1);
  assert.equal(sampleValue(s, 'corral_containers', { state: 'created', runtime_handler: 'crun' }), 0);
  // The next scrape sees the stores as they are then: nothing accumulates.
  pods = [];
  failContainers = true;
  s = await scrape(m);
  assert.equal(sampleValue(s, 'corral_pods', { state: 'ready', runtime_handler: 'runc' }), 0);
  assert.equal(sampleValue(s, 'corral_pods', { state: 'notready', runtime_handler: 'crun' }), 0);
  // A source that fails leaves its gauge without samples; the rest of the scrape still answers.
  assert.equal(sampleValue(s, 'corral_containers', { state: 'running', runtime_handler: 'runc' }), undefined);
  assert.ok(sampleValue(s, 'process_resident_memory_bytes', {})! > 0);
});

test('scrapes that arrive together share one rendering (the stores are read once)', async () => {
  const m = new CorralMetrics(silentLogger());
  let reads = 0;
  m.setStateSources({
    handlers: () => ['runc'],
    pods: async () => {
      reads++;
      await new Promise((r) => setTimeout(r, 20));
      return [];
    },
    containers: async () => [],
  });
  const [a, b, c] = await Promise.all([m.render(), m.render(), m.render()]);
  assert.equal(reads, 1);
  assert.equal(a, b);
  assert.equal(b, c);
  await m.render();
  assert.equal(reads, 2, 'a later scrape reads again');
});

// ─────────────────────────────────────────────────────────── the HTTP endpoint

/** One raw HTTP/1.1 exchange (so a request with a body or a bad method can be sent as is). */
function rawRequest(address: string, request: string): Promise<string> {
  const { host, port } = splitAddress(address);
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port }, () => s.write(request));
    const chunks: Buffer[] = [];
    s.on('data', (d) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
    s.setTimeout(10_000, () => s.destroy(new Error('no answer within 10 s')));
  });
}

function splitAddress(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  return { host: address.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(address.slice(i + 1)) };
}

test('the endpoint: GET and HEAD /metrics only, no body, closed by close()', async (t) => {
  const { metrics, server } = await startMetrics('127.0.0.1:0', silentLogger());
  t.after(() => server.close());
  metrics.observeCall('Version', 'OK', 0.001);
  const res = await fetch(`http://${server.address}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  assert.equal(sampleValue(parseExposition(await res.text()), 'corral_cri_requests_total', { method: 'Version', grpc_code: 'OK' }), 1);

  const head = await rawRequest(server.address, 'HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.match(head, /^HTTP\/1\.1 200 /);
  assert.doesNotMatch(head, /corral_cri_requests_total/);
  assert.equal((await fetch(`http://${server.address}/`)).status, 404);
  assert.equal((await fetch(`http://${server.address}/metrics/x`)).status, 404);
  const post = await fetch(`http://${server.address}/metrics`, { method: 'POST', body: 'x' });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get('allow'), 'GET, HEAD');
  const withBody = await rawRequest(server.address, 'GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello');
  assert.match(withBody, /^HTTP\/1\.1 413 /);
  assert.match(withBody, /a metrics request has no body/);
  const chunked = await rawRequest(server.address, 'GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n');
  assert.match(chunked, /^HTTP\/1\.1 413 /);
  const hugeHeader = await rawRequest(server.address, `GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
  assert.match(hugeHeader, /^HTTP\/1\.1 (400|431) /);

  // A client that never finishes its headers is answered 408 and cut off after the headers deadline (5 s).
  const t0 = Date.now();
  const slow = await rawRequest(server.address, 'GET /metrics HTTP/1.1\r\nHost: x\r\n');
  assert.match(slow, /^HTTP\/1\.1 408 /);
  assert.ok(Date.now() - t0 < 8000, `cut off after ${Date.now() - t0} ms`);

  // A keep-alive connection left open does not hold close() up, and afterwards nothing listens.
  const idle = net.connect(splitAddress(server.address));
  await new Promise((r) => idle.once('connect', r));
  const closed = new Promise((r) => idle.once('close', r));
  await server.close();
  await closed;
  await assert.rejects(fetch(`http://${server.address}/metrics`), /fetch failed/);
});

test('a bind failure says which address and what to do', async (t) => {
  const taken = net.createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
  t.after(() => taken.close());
  const port = (taken.address() as net.AddressInfo).port;
  const m = new CorralMetrics(silentLogger());
  await assert.rejects(
    MetricsServer.start({ host: '127.0.0.1', port, metrics: m, logger: silentLogger() }),
    new RegExp(`^Error: metrics_address 127\\.0\\.0\\.1:${port}: the address is already in use .*choose another port in metrics_address`),
  );
  // TEST-NET-1: never an address of this host.
  await assert.rejects(MetricsServer.start({ host: '192.0.2.1', port: 0, metrics: m, logger: silentLogger() }), /metrics_address 192\.0\.2\.1:0: 192\.0\.2\.1 is not an address of this host/);
});

// ─────────────────────────────────────────────────────────── the domain's reports

test('RunPodSandbox and StopPodSandbox report their step timings, as recorded for inspectp', async (t) => {
  t.after(removeServiceDirs);
  const observer = recordingObserver();
  const { svc } = await makeService({ observer });
  const id = await svc.run(pod(), 'runc');
  const run = observer.calls.filter((c) => c[0] === 'sandboxSteps');
  assert.equal(run.length, 1);
  assert.equal(run[0]![1], 'run');
  assert.equal(run[0]![2], 'runc');
  assert.deepEqual(run[0]![3], svc.get(id).timings, 'the same timings inspectp shows');
  for (const step of ['netns', 'cni', 'create', 'start', 'total']) assert.ok(step in (run[0]![3] as object), `run step ${step}`);
  await svc.stop(id);
  const stop = observer.calls.filter((c) => c[0] === 'sandboxSteps').slice(1);
  assert.equal(stop.length, 1);
  assert.equal(stop[0]![1], 'stop');
  assert.deepEqual(Object.keys(stop[0]![3] as object).sort(), ['cni', 'container', 'netns']);
  await svc.remove(id);
});

test('an OCI runtime reports each failed command (and not the outcomes that are no failure)', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-metrics-rt-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  // A runtime that knows no container and fails every command.
  const bin = path.join(dir, 'failing-runtime');
  await fs.writeFile(bin, '#!/bin/sh\necho "container does not exist" >&2\nexit 1\n', { mode: 0o755 });
  const observer = recordingObserver();
  const rt = new OciRuntime({ name: 'broken', path: bin, root: path.join(dir, 'root'), type: 'oci', cniConfDir: '', cniMaxNetworks: 0 }, undefined, { observer });
  await assert.rejects(rt.start('c1'), /broken start c1 failed/);
  assert.equal(await rt.state('c1'), null, 'an unknown container is an answer, not a failure');
  await rt.delete('c1'); // unknown: nothing to delete, no failure
  const missing = new OciRuntime({ name: 'missing', path: path.join(dir, 'no-such-binary'), root: path.join(dir, 'root2'), type: 'oci', cniConfDir: '', cniMaxNetworks: 0 }, undefined, { observer });
  await assert.rejects(missing.start('c2'), /cannot run/);
  assert.deepEqual(observer.calls, [['runtimeFailed', 'broken', 'start'], ['runtimeFailed', 'missing', 'start']]);
});

test('a CNI plugin invocation reports its failure with the plugin type and verb', async (t) => {
  const fake = await makeFakeCni();
  t.after(() => fake.cleanup());
  const rt: RuntimeConf = { containerId: 'abc', netns: '/var/run/netns/x', ifName: 'eth0', args: [], capabilityArgs: {} };
  const failures: [string, string][] = [];
  const onPluginError = (e: CniPluginError) => void failures.push([e.pluginType, e.verb]);
  await fake.addPlugin('fk');
  await fake.respond('fk', 'ADD', { stdout: { cniVersion: '1.0.0' } });
  await execPlugin('n', 'fk', 'ADD', {}, rt, { binDirs: [fake.binDir], onPluginError });
  await fake.respond('fk', 'DEL', { stdout: { code: 7, msg: 'bad config' }, code: 1 });
  await assert.rejects(execPlugin('n', 'fk', 'DEL', {}, rt, { binDirs: [fake.binDir], onPluginError }), CniPluginError);
  await assert.rejects(execPlugin('n', 'nope', 'ADD', {}, rt, { binDirs: [fake.binDir], onPluginError }), /not found/);
  assert.deepEqual(failures, [['fk', 'DEL'], ['nope', 'ADD']]);
});
