/**
 * Every pod shape kubelet sends (network, PID and IPC each POD or NODE, PID also
 * CONTAINER) in every infra mode: each namespace a container must join has a holder
 * (the host, the pause or a pin), host network means host UTS, and every sysctl the pod
 * may set goes to the holder of its namespace — never dropped. Also the CRI log path.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { grpcCode } from '../../src/cri/errors.js';
import { podConfig } from '../helpers/cri-messages.js';
import { resolveConfig } from '../../src/config/config.js';
import { infraMode, namespaceChoice, namespaceMode, namespacePlan, podPins, type NamespaceMode } from '../../src/sandbox/options.js';
import { validateSysctls, withDefaultSysctls } from '../../src/oci/sysctls.js';
import { containerLogPath } from '../../src/oci/container-spec.js';

const cfg = resolveConfig({ runtimes: { runc: {}, crun: {} } });

interface Shape {
  network: NamespaceMode;
  pid: NamespaceMode;
  ipc: NamespaceMode;
}
const shapes: Shape[] = [];
for (const network of ['POD', 'NODE'] as const) for (const pid of ['POD', 'CONTAINER', 'NODE'] as const) for (const ipc of ['POD', 'NODE'] as const) shapes.push({ network, pid, ipc });

const shapeConfig = (s: Shape, sysctls: Record<string, string> = {}) => podConfig({ linux: { sysctls, securityContext: { namespaceOptions: { ...s } } } });
/** The sysctls a pod of this shape may ask for (one per namespace it owns). */
const allowedSysctls = (s: Shape): Record<string, string> => ({
  ...(s.ipc === 'POD' ? { 'kernel.shm_rmid_forced': '1', 'fs.mqueue.msg_max': '100' } : {}),
  ...(s.network === 'POD' ? { 'net.ipv4.ip_forward': '1' } : {}),
});

for (const drop of [true, false]) {
  for (const handler of ['runc', 'crun']) {
    for (const ownInit of [false, true]) test(`every pod shape has a holder for each namespace and for each sysctl (drop_infra_container=${drop}, ${handler}, ${ownInit ? "Corral's own pause" : 'pause container'})`, () => {
      for (const s of shapes) {
        const what = `${JSON.stringify(s)} drop=${drop} ${handler}`;
        const ns = namespaceChoice(shapeConfig(s));
        const mode = infraMode(cfg.runtimes[handler]!, ns, drop, ownInit);
        const plan = namespacePlan(ns, mode);
        const hostNetwork = s.network === 'NODE';
        const hostIpc = s.ipc === 'NODE';
        const requested = allowedSysctls(s);
        validateSysctls(requested, { hostNetwork, hostIpc });
        const sysctls = withDefaultSysctls(requested, { hostNetwork });
        const pins = podPins(plan, { netnsPath: hostNetwork ? null : '/run/netns/corral-x', stateDir: '/run/corral/sandboxes/x', hostname: 'h', sysctls });

        assert.equal(plan.network, hostNetwork ? 'host' : 'pin', what);
        assert.equal(plan.uts, hostNetwork ? 'host' : mode === 'pause' ? 'pause' : 'pin', `${what}: host network means host UTS`);
        assert.equal(plan.ipc, hostIpc ? 'host' : mode === 'pause' ? 'pause' : 'pin', what);
        assert.equal(plan.pid, s.pid === 'NODE' ? 'host' : s.pid === 'POD' ? 'pause' : 'container', what);
        if (s.pid === 'POD') assert.equal(mode, ownInit ? 'init' : 'pause', `${what}: a shared PID namespace needs an init`);
        // Every pinned namespace has its file, and nothing else is pinned.
        assert.equal(pins.netnsPath !== null, plan.network === 'pin', what);
        assert.equal(pins.ipcPath !== undefined, plan.ipc === 'pin', what);
        assert.equal(pins.utsPath !== undefined, plan.uts === 'pin', what);
        assert.equal(pins.pins.length, [plan.network, plan.ipc, plan.uts].filter((h) => h === 'pin').length, what);
        if (pins.utsPath) assert.equal(pins.hostname, 'h');
        else assert.equal(pins.hostname, undefined, `${what}: never rename the host`);
        // Each sysctl is carried by the pins, or by the pause (its spec gets them all).
        for (const name of Object.keys(sysctls)) {
          const carried = name in pins.sysctls || mode === 'pause';
          assert.ok(carried, `${what}: sysctl ${name} is dropped`);
          if (name in pins.sysctls) assert.ok(name.startsWith('net.') ? pins.netnsPath : pins.ipcPath, `${what}: ${name} given to the helper without its namespace`);
        }
      }
    });
  }
}

test('the defect: a host-network pod without a pause pins its own IPC (with its sysctls) and uses the host UTS', () => {
  const ns = namespaceChoice(shapeConfig({ network: 'NODE', pid: 'CONTAINER', ipc: 'POD' }));
  const mode = infraMode(cfg.runtimes.runc!, ns, true);
  assert.equal(mode, 'pinned');
  const pins = podPins(namespacePlan(ns, mode), { netnsPath: null, stateDir: '/s', hostname: 'h', sysctls: { 'kernel.shm_rmid_forced': '1' } });
  assert.deepEqual(pins, { pins: ['/s/ipcns'], netnsPath: null, ipcPath: '/s/ipcns', sysctls: { 'kernel.shm_rmid_forced': '1' } });
});

test('a sysctl of a namespace the pod does not own is refused (INVALID_ARGUMENT), never dropped', () => {
  const hostIpc = namespacePlan(namespaceChoice(shapeConfig({ network: 'POD', pid: 'CONTAINER', ipc: 'NODE' })), 'pinned');
  assert.throws(
    () => podPins(hostIpc, { netnsPath: '/n', stateDir: '/s', hostname: 'h', sysctls: { 'kernel.msgmax': '1' } }),
    (e: any) => grpcCode(e) === status.INVALID_ARGUMENT && /kernel\.msgmax.*host's ipc/.test(e.message),
  );
  const hostNet = namespacePlan(namespaceChoice(shapeConfig({ network: 'NODE', pid: 'POD', ipc: 'POD' })), 'pause');
  assert.throws(() => podPins(hostNet, { netnsPath: null, stateDir: '/s', hostname: 'h', sysctls: { 'net.core.somaxconn': '1' } }), (e: any) => grpcCode(e) === status.INVALID_ARGUMENT);
  assert.throws(() => podPins(hostNet, { netnsPath: null, stateDir: '/s', hostname: 'h', sysctls: { 'kernel.hostname': 'x' } }), (e: any) => grpcCode(e) === status.INVALID_ARGUMENT);
});

test('a shared PID namespace without a pause is an internal contradiction, not a silent per-container one', () => {
  assert.throws(() => namespacePlan({ network: 'POD', pid: 'POD', ipc: 'POD' }, 'pinned'), (e: any) => grpcCode(e) === status.INTERNAL);
});

test('namespace modes arrive as names or as enum numbers', () => {
  assert.deepEqual([0, 1, 2, 3, 'NODE', undefined, 'bogus'].map(namespaceMode), ['POD', 'CONTAINER', 'NODE', 'TARGET', 'NODE', 'POD', 'POD']);
  assert.deepEqual(namespaceChoice(podConfig({ linux: { securityContext: { namespaceOptions: { network: 2, pid: 1 } } } })), { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' });
});

test('the CRI log path stays beneath the pod log directory', () => {
  assert.equal(containerLogPath('/var/log/pods/p', 'c/0.log'), '/var/log/pods/p/c/0.log');
  assert.equal(containerLogPath('/var/log/pods/p', 'web.log'), '/var/log/pods/p/web.log');
  assert.equal(containerLogPath('/var/log/pods/p', 'a/./b.log'), '/var/log/pods/p/a/b.log');
  assert.equal(containerLogPath('/var/log/pods/p', ''), '', 'no log_path: no CRI log');
  assert.equal(containerLogPath('', 'c.log'), '', 'no log_directory: no CRI log');
  for (const bad of ['../escape.log', 'c/../../escape.log', '..', '.', 'c/..', '/etc/cron.d/x', 'c/', 'a\0b']) {
    assert.throws(() => containerLogPath('/var/log/pods/p', bad), /log_path|NUL/, JSON.stringify(bad));
  }
  assert.throws(() => containerLogPath('/var/log/pods/p', 42), /string/);
});
