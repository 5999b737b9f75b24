/**
 * The order of network setup and sandbox start, seen from the runtime's side.
 *
 * VM runtimes (Kata-style) cannot run here, so a recording OCI-runtime wrapper
 * (test/helpers/vm-recorder.sh) is configured as a handler of type "vm": on `create` it
 * records what a VM runtime would find — the netns path of the bundle, whether it is a
 * pinned nsfs, `ip -o addr` inside it, the sandbox annotations — and then execs runc.
 * A second copy ("vmfail") records and then fails create, for the rollback tests.
 */
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs, mkdtempSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { TestDaemon, hostTraces, podConfig } from '../helpers/daemon.js';
import { execFile } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { isNetnsPinned } from '../../src/network/netns.js';
import { BUILTIN_SANDBOX_IMAGE_NAME } from '../../src/oci/sandbox-spec.js';

const ORDER = 'io.corral.sandbox.network-order';
const ISULAD = 'cri.sandbox.network.setup.v2';

/** Where the recorder copies live: <vmDir>/<handler>/vm-recorder.sh, records in <vmDir>/<handler>/records. */
const vmDir = mkdtempSync('/run/corral-vmrec-');
const VM_HANDLERS = ['vmrec', 'vmfail'] as const;
const recorderPath = (h: string) => path.join(vmDir, h, 'vm-recorder.sh');
const recordsDir = (h: string) => path.join(vmDir, h, 'records');

const d = new TestDaemon({
  extraToml: [
    `[runtimes.runc]`,
    `path = "runc"`,
    ...VM_HANDLERS.flatMap((h) => [`[runtimes.${h}]`, `path = "${recorderPath(h)}"`, `type = "vm"`]),
  ].join('\n'),
});
const vmRoot = (h: string) => path.join(d.stateDir, h);

before(async () => {
  for (const tool of ['jq', 'nsenter', 'ip', 'stat']) {
    const r = await execFile('sh', ['-c', `command -v ${tool}`]);
    assert.equal(r.code, 0, `${tool} is needed by vm-recorder.sh`);
  }
  for (const h of VM_HANDLERS) {
    await fs.mkdir(recordsDir(h), { recursive: true });
    await fs.copyFile(path.join(packageRoot(), 'test/helpers/vm-recorder.sh'), recorderPath(h));
    await fs.chmod(recorderPath(h), 0o755);
  }
  await d.start();
});

after(async () => {
  try {
    // The harness's cleanup only knows the runc and crun roots: remove pods through the
    // API, then force-delete anything left under the VM handlers' roots, then the rest.
    const { items } = await d.rpc('ListPodSandbox', {}, 10_000).catch(() => ({ items: [] as any[] }));
    for (const i of items) await d.rpc('RemovePodSandbox', { podSandboxId: i.id }).catch(() => {});
    for (const h of VM_HANDLERS) {
      const list = await execFile('runc', ['--root', vmRoot(h), 'list', '-q']).catch(() => undefined);
      for (const id of (list?.stdout ?? '').split('\n').filter(Boolean)) await execFile('runc', ['--root', vmRoot(h), 'delete', '-f', id]);
    }
  } finally {
    try {
      await d.cleanup();
    } finally {
      await fs.rm(vmDir, { recursive: true, force: true });
    }
  }
});

// A failed assertion must not leave pods (or a failure switch) for the next test to trip over.
afterEach(async () => {
  await fs.rm(path.join(vmDir, 'vmfail', 'fail-create'), { force: true });
  await fs.rm(path.join(vmDir, 'vmfail', 'fail-stderr-only'), { force: true });
  const { items } = await d.rpc('ListPodSandbox', {});
  for (const i of items) await d.rpc('RemovePodSandbox', { podSandboxId: i.id });
});

interface Recorded {
  id: string;
  bundle: string;
  netnsPath: string;
  netnsExists: boolean;
  netnsFsType: string;
  ipAddr: string;
  ipAddrExit: number;
  annotations: Record<string, string>;
}

async function readRecord(handler: string, id: string): Promise<Recorded> {
  return JSON.parse(await fs.readFile(path.join(recordsDir(handler), id, 'record.json'), 'utf8'));
}

async function recordedArgv(handler: string, id: string): Promise<string[]> {
  return (await fs.readFile(path.join(recordsDir(handler), id, 'argv'), 'utf8')).split('\n').filter(Boolean);
}

/** `ip -o addr` output → interface name → its IPv4 addresses (without prefix length). */
function parseIpAddr(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^\d+:\s+(\S+?)(?:@\S+)?\s+(inet6?)\s+(\S+)/.exec(line);
    if (!m) continue;
    const [, ifName, family, cidr] = m;
    if (!out.has(ifName!)) out.set(ifName!, []);
    if (family === 'inet') out.get(ifName!)!.push(cidr!.split('/')[0]!);
  }
  return out;
}

function podWith(opts: { annotations?: Record<string, string>; pid?: 'POD' | 'CONTAINER' } = {}): any {
  return podConfig({
    annotations: opts.annotations ?? {},
    linux: { securityContext: { namespaceOptions: { network: 'POD', pid: opts.pid ?? 'CONTAINER', ipc: 'POD' } } },
  });
}

async function readyStatus(id: string): Promise<{ st: any; info: any }> {
  const st = await d.rpc('PodSandboxStatus', { podSandboxId: id, verbose: true });
  assert.equal(st.status.state, 'SANDBOX_READY');
  assert.match(st.status.network.ip, /^\d+\.\d+\.\d+\.\d+$/, 'pod has an IPv4 address');
  assert.equal(st.status.network.ip.split('.').slice(0, 3).join('.'), d.subnet.split('.').slice(0, 3).join('.'), `pod IP in ${d.subnet}`);
  return { st, info: JSON.parse(st.info.info) };
}

/** The netns a VM runtime was handed at create: given, present, and a pinned nsfs at the path Corral uses. */
function assertPinnedAtCreate(rec: Recorded, id: string) {
  assert.equal(rec.id, id);
  assert.equal(rec.netnsPath, `${d.netnsDir}/corral-${id}`, 'config.json carries the pinned netns path');
  assert.equal(rec.netnsExists, true, 'the netns path existed at create');
  assert.equal(rec.netnsFsType, 'nsfs', 'the netns path was a pinned namespace (nsfs) at create');
  assert.equal(rec.ipAddrExit, 0, `nsenter ip -o addr at create: ${rec.ipAddr}`);
}

/** At create, eth0 was there with exactly the pod IP (IPv4) that status reports. */
function assertWiredAtCreate(rec: Recorded, podIp: string) {
  const ifs = parseIpAddr(rec.ipAddr);
  assert.ok(ifs.has('lo'), `lo at create: ${rec.ipAddr}`);
  assert.deepEqual(ifs.get('eth0'), [podIp], `eth0 carries exactly the pod IP at create:\n${rec.ipAddr}`);
}

/** At create, only lo existed in the netns. */
function assertUnwiredAtCreate(rec: Recorded) {
  const ifs = parseIpAddr(rec.ipAddr);
  assert.deepEqual([...ifs.keys()], ['lo'], `only lo at create:\n${rec.ipAddr}`);
  assert.doesNotMatch(rec.ipAddr, /eth0/);
}

/** After Run: eth0 in the pinned netns carries the pod IP, and the pod answers ping. */
async function assertWiredNow(netnsPath: string, podIp: string) {
  const addr = await execFile('nsenter', [`--net=${netnsPath}`, 'ip', '-o', '-4', 'addr', 'show', 'eth0']);
  assert.equal(addr.code, 0, `eth0 in ${netnsPath}: ${addr.stderr}`);
  assert.deepEqual(parseIpAddr(addr.stdout).get('eth0'), [podIp]);
  const ping = await execFile('ping', ['-c', '1', '-W', '2', podIp]);
  assert.equal(ping.code, 0, `ping ${podIp}: ${ping.stdout}${ping.stderr}`);
}

async function assertPauseInNetns(info: any) {
  assert.ok(info.pid > 0, 'a sandbox (pause) process runs');
  const [podNs, pauseNs] = await Promise.all([fs.stat(info.netnsPath), fs.stat(`/proc/${info.pid}/ns/net`)]);
  assert.equal(pauseNs.ino, podNs.ino, 'the sandbox process runs in the pinned netns');
}

async function containersUnder(root: string): Promise<string[]> {
  const list = await execFile('runc', ['--root', root, 'list', '-q']);
  return list.stdout.split('\n').filter(Boolean);
}

async function bridgeMembers(): Promise<string[]> {
  const r = await execFile('ip', ['-o', 'link', 'show', 'master', d.bridge]);
  return r.stdout.split('\n').filter(Boolean);
}

/**
 * Host-side veths of this daemon's pods: those enslaved to its bridge. (Not the host-wide
 * veth count: other tests on the same host may add and remove veths meanwhile.)
 */
async function bridgeVeths(): Promise<number> {
  const r = await execFile('ip', ['-o', 'link', 'show', 'master', d.bridge, 'type', 'veth']);
  return r.stdout.split('\n').filter(Boolean).length;
}

/** Nothing of sandbox `id` is left on the host, in Corral's state, or in any handler's runtime root. */
async function assertNothingLeft(id: string) {
  const traces = await hostTraces(d);
  assert.deepEqual(traces.netns.filter((n) => n.includes(id)), [], 'netns pin left');
  assert.deepEqual(traces.reservations, [], 'IP reservation left');
  assert.deepEqual(traces.runtimeContainers.filter((c) => c === id), [], 'runc/crun container left');
  for (const h of VM_HANDLERS) assert.deepEqual((await containersUnder(vmRoot(h))).filter((c) => c === id), [], `${h} container left`);
  assert.deepEqual(traces.mounts.filter((m) => m.includes(id)), [], 'mount left');
  assert.equal(await isNetnsPinned(`${d.netnsDir}/corral-${id}`), false);
  await assert.rejects(fs.stat(`${d.rootDir}/sandboxes/${id}`), /ENOENT/, 'sandbox record left');
  await assert.rejects(fs.stat(`${d.stateDir}/sandboxes/${id}`), /ENOENT/, 'sandbox state dir left');
  await assert.rejects(d.rpc('PodSandboxStatus', { podSandboxId: id }), (e: any) => e.code === status.NOT_FOUND);
}

/** Stop, then Remove, then check that nothing is left (and that the veth went with Stop). */
async function stopRemoveAndCheck(id: string, vethsBefore: number) {
  await d.rpc('StopPodSandbox', { podSandboxId: id });
  assert.equal((await d.rpc('PodSandboxStatus', { podSandboxId: id })).status.state, 'SANDBOX_NOTREADY');
  assert.equal(await bridgeVeths(), vethsBefore, 'veth removed by Stop');
  assert.deepEqual((await hostTraces(d)).reservations, [], 'IP released by Stop');
  await d.rpc('RemovePodSandbox', { podSandboxId: id });
  await assertNothingLeft(id);
  assert.deepEqual((await d.rpc('ListPodSandbox', {})).items, []);
}

// ---------------------------------------------------------------- 1. network-first

test('vm handler, network-first (default): at create the pinned netns already has eth0 with the pod IP, and the annotations are set', async () => {
  const vethsBefore = await bridgeVeths();
  const config = podWith();
  config.logDirectory = `/tmp/corral-test-logs/vm-${randomBytes(3).toString('hex')}`;
  const { podSandboxId: id } = await d.rpc('RunPodSandbox', { config, runtimeHandler: 'vmrec' });
  assert.match(id, /^[0-9a-f]{64}$/);

  const { st, info } = await readyStatus(id);
  assert.equal(st.status.runtimeHandler, 'vmrec');
  assert.equal(info.infraMode, 'pause', 'a vm handler always runs a sandbox container, even with pid CONTAINER');
  assert.equal(info.networkOrder, 'network-first');
  await assertPauseInNetns(info);

  const rec = await readRecord('vmrec', id);
  assertPinnedAtCreate(rec, id);
  assert.equal(rec.netnsPath, info.netnsPath);
  assertWiredAtCreate(rec, st.status.network.ip);

  const a = rec.annotations;
  assert.equal(a['io.kubernetes.cri.container-type'], 'sandbox');
  assert.equal(a['io.kubernetes.cri.sandbox-id'], id);
  assert.equal(a['io.kubernetes.cri.sandbox-name'], config.metadata.name);
  assert.equal(a['io.kubernetes.cri.sandbox-namespace'], config.metadata.namespace);
  assert.equal(a['io.kubernetes.cri.sandbox-uid'], config.metadata.uid);
  assert.equal(a['io.kubernetes.cri.sandbox-log-directory'], config.logDirectory);
  assert.equal(a['io.kubernetes.cri.image-name'], BUILTIN_SANDBOX_IMAGE_NAME);

  // Corral's runc-style command line: global flags first, root under the state dir.
  const argv = await recordedArgv('vmrec', id);
  assert.deepEqual(argv.slice(0, 2), ['--root', vmRoot('vmrec')]);
  assert.deepEqual(argv.slice(4, 6), ['--log-format', 'json']);
  assert.equal(argv[6], 'create');
  assert.equal(argv.at(-1), id);
  assert.deepEqual(await containersUnder(vmRoot('vmrec')), [id], 'the container lives under the vm handler root');

  await assertWiredNow(info.netnsPath, st.status.network.ip);
  await stopRemoveAndCheck(id, vethsBefore);
});

// ---------------------------------------------------------------- 2. start-first

test('vm handler, start-first: at create the pinned netns has only lo; after Run eth0 with the pod IP is wired in', async () => {
  const vethsBefore = await bridgeVeths();
  const config = podWith({ annotations: { [ORDER]: 'start-first' } });
  const { podSandboxId: id } = await d.rpc('RunPodSandbox', { config, runtimeHandler: 'vmrec' });

  const rec = await readRecord('vmrec', id);
  assertPinnedAtCreate(rec, id);
  assertUnwiredAtCreate(rec);
  assert.equal(rec.annotations['io.kubernetes.cri.sandbox-id'], id);
  assert.equal(rec.annotations[ORDER], 'start-first', 'pod annotations are passed through to the runtime');

  const { st, info } = await readyStatus(id);
  assert.equal(info.infraMode, 'pause');
  assert.equal(info.networkOrder, 'start-first');
  assert.equal(info.netnsPath, rec.netnsPath);
  await assertPauseInNetns(info);
  await assertWiredNow(info.netnsPath, st.status.network.ip);
  assert.equal(await bridgeVeths(), vethsBefore + 1);

  await stopRemoveAndCheck(id, vethsBefore);
});

// ---------------------------------------------------------------- 3. iSulad's annotation

for (const [value, order] of [['false', 'start-first'], ['true', 'network-first']] as const) {
  test(`vm handler, ${ISULAD}="${value}" behaves as ${order}`, async () => {
    const vethsBefore = await bridgeVeths();
    const config = podWith({ annotations: { [ISULAD]: value } });
    const { podSandboxId: id } = await d.rpc('RunPodSandbox', { config, runtimeHandler: 'vmrec' });
    const { st, info } = await readyStatus(id);
    assert.equal(info.networkOrder, order);

    const rec = await readRecord('vmrec', id);
    assertPinnedAtCreate(rec, id);
    if (order === 'start-first') assertUnwiredAtCreate(rec);
    else assertWiredAtCreate(rec, st.status.network.ip);
    await assertWiredNow(info.netnsPath, st.status.network.ip);

    await stopRemoveAndCheck(id, vethsBefore);
  });
}

test(`an invalid ${ISULAD} value is INVALID_ARGUMENT and touches nothing`, async () => {
  const config = podWith({ annotations: { [ISULAD]: 'yes' } });
  const vethsBefore = await bridgeVeths();
  const recordsBefore = await fs.readdir(recordsDir('vmrec'));
  await assert.rejects(d.rpc('RunPodSandbox', { config, runtimeHandler: 'vmrec' }), (e: any) => e.code === status.INVALID_ARGUMENT && e.details.includes(ISULAD));
  assert.deepEqual(await fs.readdir(recordsDir('vmrec')), recordsBefore, 'the runtime was not called');
  assert.equal(await bridgeVeths(), vethsBefore);
  assert.deepEqual((await d.rpc('ListPodSandbox', {})).items, []);
  assert.deepEqual((await hostTraces(d)).netns, []);
});

// ---------------------------------------------------------------- 4. plain runc

for (const pid of ['POD', 'CONTAINER'] as const) {
  // A shared PID namespace under runc: Corral's own pause ('init'), no runtime container.
  const mode = pid === 'POD' ? 'init' : 'pinned';
  test(`runc handler, start-first, pid ${pid} (${mode} mode): the pod gets its network and answers ping`, async () => {
    const vethsBefore = await bridgeVeths();
    const config = podWith({ annotations: { [ORDER]: 'start-first' }, pid });
    const { podSandboxId: id } = await d.rpc('RunPodSandbox', { config, runtimeHandler: 'runc' });
    const { st, info } = await readyStatus(id);
    assert.equal(st.status.runtimeHandler, 'runc');
    assert.equal(info.infraMode, mode);
    assert.equal(info.networkOrder, 'start-first', 'the requested order is kept in the record');
    assert.ok(await isNetnsPinned(info.netnsPath));
    if (mode === 'init') {
      await assertPauseInNetns(info);
      assert.deepEqual((await hostTraces(d)).runtimeContainers, [], "Corral's own pause is no runtime container");
    } else {
      // No sandbox container to start first: the network is wired into the pinned netns anyway.
      assert.equal(info.pid, 0);
      assert.deepEqual((await hostTraces(d)).runtimeContainers, [], 'pinned mode runs no container');
    }
    await assertWiredNow(info.netnsPath, st.status.network.ip);
    assert.equal(await bridgeVeths(), vethsBefore + 1);
    await stopRemoveAndCheck(id, vethsBefore);
  });
}

// ---------------------------------------------------------------- 6. a VM runtime that fails create

for (const order of ['network-first', 'start-first'] as const) {
  test(`vm handler failing create (${order}): RunPodSandbox fails with the runtime's message, rolls everything back, and the name can be reused`, async () => {
    const vethsBefore = await bridgeVeths();
    const message = `injected VM boot failure ${randomBytes(4).toString('hex')}`;
    await fs.writeFile(path.join(vmDir, 'vmfail', 'fail-create'), message);
    const recordsBefore = new Set(await fs.readdir(recordsDir('vmfail')));
    const config = podWith({ annotations: { [ORDER]: order } });

    await assert.rejects(d.rpc('RunPodSandbox', { config, runtimeHandler: 'vmfail' }), (e: any) => {
      assert.equal(e.code, status.INTERNAL, `code: ${e.code} ${e.details}`);
      assert.ok(e.details.includes(message), `error carries the runtime's message: ${e.details}`);
      return true;
    });

    // The recorder saw exactly one create: that is the sandbox ID Corral had chosen.
    const created = (await fs.readdir(recordsDir('vmfail'))).filter((x) => !recordsBefore.has(x));
    assert.equal(created.length, 1, `one create reached the runtime: ${created.join(' ')}`);
    const id = created[0]!;
    const rec = await readRecord('vmfail', id);
    assertPinnedAtCreate(rec, id);
    if (order === 'start-first') assertUnwiredAtCreate(rec);
    else assert.ok(parseIpAddr(rec.ipAddr).get('eth0')?.length === 1, `network-first: eth0 had an address at create:\n${rec.ipAddr}`);

    assert.deepEqual((await d.rpc('ListPodSandbox', {})).items, [], 'no sandbox is listed');
    assert.equal(await bridgeVeths(), vethsBefore, 'no veth left');
    assert.deepEqual(await bridgeMembers(), [], 'nothing left on the bridge');
    await assertNothingLeft(id);
    assert.deepEqual(await containersUnder(vmRoot('vmfail')), []);

    // The name is free again: the same pod runs with the working handler.
    await fs.rm(path.join(vmDir, 'vmfail', 'fail-create'));
    const { podSandboxId: id2 } = await d.rpc('RunPodSandbox', { config, runtimeHandler: 'vmrec' });
    assert.notEqual(id2, id);
    const { st, info } = await readyStatus(id2);
    assert.deepEqual(st.status.metadata, config.metadata);
    assert.equal(st.status.runtimeHandler, 'vmrec');
    await assertWiredNow(info.netnsPath, st.status.network.ip);
    await stopRemoveAndCheck(id2, vethsBefore);
  });
}

/** A runtime that fails before it opens its --log, explaining only on stderr: the reason still reaches the caller. */
test(
  'vm handler failing create with its reason on stderr only: rolled back, and the reason reaches the gRPC error',
  async () => {
    const vethsBefore = await bridgeVeths();
    const message = `stderr-only VM failure ${randomBytes(4).toString('hex')}`;
    await fs.writeFile(path.join(vmDir, 'vmfail', 'fail-create'), message);
    await fs.writeFile(path.join(vmDir, 'vmfail', 'fail-stderr-only'), '');
    const recordsBefore = new Set(await fs.readdir(recordsDir('vmfail')));
    const err: any = await d.rpc('RunPodSandbox', { config: podWith(), runtimeHandler: 'vmfail' }).then(
      () => assert.fail('RunPodSandbox succeeded with a failing runtime'),
      (e) => e,
    );
    assert.equal(err.code, status.INTERNAL, `code: ${err.code} ${err.details}`);
    const created = (await fs.readdir(recordsDir('vmfail'))).filter((x) => !recordsBefore.has(x));
    assert.equal(created.length, 1);
    assert.deepEqual((await d.rpc('ListPodSandbox', {})).items, []);
    assert.equal(await bridgeVeths(), vethsBefore);
    await assertNothingLeft(created[0]!);
    assert.ok(err.details.includes(message), `error carries the runtime's stderr: ${err.details}`);
  },
);
