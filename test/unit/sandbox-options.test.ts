import { test } from 'node:test';
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { grpcCode } from '../../src/cri/errors.js';
import type { PortMapping } from '../../src/cri-api/types.js';
import { partialMessage, podConfig } from '../helpers/cri-messages.js';
import { resolveConfig } from '../../src/config/config.js';
import {
  cniPortMappings, infraMode, isPrivileged, namespaceChoice, networkOrder, podHostname, podMetadata, resolvConf, selectHandler,
} from '../../src/sandbox/options.js';

const cfg = resolveConfig({
  runtimes: { runc: {}, crun: {}, untrusted: { path: 'runc', type: 'vm' } },
});
const podNs = namespaceChoice(podConfig({}));

test('metadata name, namespace and uid are required', () => {
  assert.throws(() => podMetadata(podConfig({})), (e: any) => grpcCode(e) === status.INVALID_ARGUMENT && /metadata/.test(e.message));
  assert.throws(() => podMetadata(podConfig({ metadata: { name: 'a', namespace: 'b', uid: '' } })), /metadata\.uid must not be empty/);
  assert.deepEqual(podMetadata(podConfig({ metadata: { name: 'a', namespace: 'b', uid: 'c', attempt: 2 } })), { name: 'a', namespace: 'b', uid: 'c', attempt: 2 });
});

test('privileged when asked or when any host namespace is used', () => {
  assert.equal(isPrivileged(podConfig({}), podNs), false);
  assert.equal(isPrivileged(podConfig({ linux: { securityContext: { privileged: true } } }), podNs), true);
  for (const key of ['network', 'pid', 'ipc']) {
    const config = podConfig({ linux: { securityContext: { namespaceOptions: { [key]: 'NODE' } } } });
    assert.equal(isPrivileged(config, namespaceChoice(config)), true, key);
  }
});

test('handler selection: default, named, unknown lists the configured ones', () => {
  assert.equal(selectHandler('', {}, podNs, cfg).name, 'runc');
  assert.equal(selectHandler('crun', {}, podNs, cfg).name, 'crun');
  assert.throws(() => selectHandler('kata', {}, podNs, cfg), (e: any) => grpcCode(e) === status.INVALID_ARGUMENT && /unknown runtime handler "kata"; configured handlers: runc, crun, untrusted/.test(e.message));
});

test('untrusted workloads go to the untrusted handler and may not use host namespaces', () => {
  const ann = { 'io.kubernetes.cri.untrusted-workload': 'true' };
  assert.equal(selectHandler('', ann, podNs, cfg).name, 'untrusted');
  assert.throws(() => selectHandler('crun', ann, podNs, cfg), /conflicts with runtime handler "crun"/);
  const hostNet = namespaceChoice(podConfig({ linux: { securityContext: { namespaceOptions: { network: 'NODE' } } } }));
  assert.throws(() => selectHandler('', ann, hostNet, cfg), /host access/);
  const noUntrusted = resolveConfig({});
  assert.throws(() => selectHandler('', ann, podNs, noUntrusted), (e: any) => grpcCode(e) === status.FAILED_PRECONDITION);
});

test('network order from Corral and iSulad annotations', () => {
  assert.equal(networkOrder({}), 'network-first');
  assert.equal(networkOrder({ 'io.corral.sandbox.network-order': 'start-first' }), 'start-first');
  assert.equal(networkOrder({ 'cri.sandbox.network.setup.v2': 'false' }), 'start-first');
  assert.equal(networkOrder({ 'cri.sandbox.network.setup.v2': 'true' }), 'network-first');
  assert.throws(() => networkOrder({ 'io.corral.sandbox.network-order': 'later' }), /must be "network-first" or "start-first"/);
  assert.throws(() => networkOrder({ 'cri.sandbox.network.setup.v2': 'yes' }), /must be "true" or "false"/);
});

test('a pause process only where something needs it', () => {
  const privatePid = namespaceChoice(podConfig({ linux: { securityContext: { namespaceOptions: { pid: 'CONTAINER' } } } }));
  assert.equal(infraMode(cfg.runtimes.runc!, privatePid, true), 'pinned');
  assert.equal(infraMode(cfg.runtimes.runc!, privatePid, false), 'pause');
  assert.equal(infraMode(cfg.runtimes.untrusted!, privatePid, true), 'pause', 'vm handlers always get a sandbox container');
  assert.equal(infraMode(cfg.runtimes.runc!, podNs, true), 'pause', 'a shared PID namespace needs an init');
  // Corral's own pause (no sandbox image configured): only for a shared PID namespace, never for a VM handler.
  assert.equal(infraMode(cfg.runtimes.runc!, podNs, true, true), 'init');
  assert.equal(infraMode(cfg.runtimes.runc!, podNs, false, true), 'init');
  assert.equal(infraMode(cfg.runtimes.runc!, privatePid, false, true), 'pause', 'drop_infra_container=false without a shared PID namespace keeps the pause container');
  assert.equal(infraMode(cfg.runtimes.untrusted!, podNs, true, true), 'pause', 'vm handlers keep the OCI path');
});

test('resolv.conf from DNSConfig, null without one', () => {
  assert.equal(resolvConf(undefined), null);
  assert.equal(resolvConf({ servers: [], searches: [], options: [] }), null);
  assert.equal(
    resolvConf({ servers: ['10.0.0.10', '10.0.0.11'], searches: ['svc.cluster.local'], options: ['ndots:5'] }),
    'search svc.cluster.local\nnameserver 10.0.0.10\nnameserver 10.0.0.11\noptions ndots:5\n',
  );
});

test('port mappings: only host ports, protocol lowercased', () => {
  assert.deepEqual(
    cniPortMappings(partialMessage<PortMapping[]>([
      { protocol: 'TCP', containerPort: 80, hostPort: 8080, hostIp: '127.0.0.1' },
      { protocol: 'UDP', containerPort: 53, hostPort: 0 },
      { containerPort: 443, hostPort: 8443 },
    ])),
    [
      { hostPort: 8080, containerPort: 80, protocol: 'tcp', hostIP: '127.0.0.1' },
      { hostPort: 8443, containerPort: 443, protocol: 'tcp', hostIP: '' },
    ],
  );
});

test('pod hostname: the one asked for, else the node\'s; longer than the kernel allows is refused', () => {
  assert.equal(podHostname(podConfig({ hostname: 'web-0' }), false, 'node-1'), 'web-0');
  assert.equal(podHostname(podConfig({ metadata: { name: 'a-pod-name-that-is-much-longer-than-a-hostname-may-ever-be-at-all' } }), false, 'node-1'), 'node-1');
  assert.equal(podHostname(podConfig({}), true, 'node-1'), 'node-1');
  assert.throws(() => podHostname(podConfig({ hostname: 'x'.repeat(65) }), false, 'node-1'), (e: any) => grpcCode(e) === 3 && /65 bytes/.test(e.message));
});
