import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  IMAGE_RPCS, RUNTIME_RPCS, criPackage, decodeMessage, encodeMessage, frozenMessage, imageServiceDefinition, messageType, protoRoot, runtimeServiceDefinition,
} from '../../src/cri/proto.js';
import { endpointToTarget } from '../../src/cri/client.js';

test('the RPC name lists match the schema, and every type resolves', () => {
  protoRoot().resolveAll();
  assert.deepEqual(Object.keys(runtimeServiceDefinition), [...RUNTIME_RPCS]);
  assert.deepEqual(Object.keys(imageServiceDefinition), [...IMAGE_RPCS]);
  assert.equal(runtimeServiceDefinition.Version!.path, '/runtime.v1.RuntimeService/Version');
  assert.equal(runtimeServiceDefinition.GetContainerEvents!.responseStream, true);
  const pkg = criPackage() as any;
  assert.equal(typeof pkg.runtime.v1.RuntimeService, 'function');
  assert.equal(typeof pkg.runtime.v1.ImageService, 'function');
});

test('int64: requests decode to numbers, responses to exact strings; encoding takes number, string or bigint', () => {
  const stop = runtimeServiceDefinition.StopContainer!;
  const req = stop.requestDeserialize(stop.requestSerialize({ containerId: 'c', timeout: 30 }));
  assert.deepEqual(req, { containerId: 'c', timeout: 30 });
  const ns = '1700000000123456789';
  for (const createdAt of [ns, BigInt(ns)]) {
    const res = decodeMessage('ContainerStatusResponse', encodeMessage('ContainerStatusResponse', { status: { id: 'c', createdAt, state: 'CONTAINER_RUNNING' } }));
    assert.equal(res.status.createdAt, ns);
    assert.equal(res.status.state, 'CONTAINER_RUNNING');
  }
  // defaults are filled in
  assert.deepEqual(decodeMessage('VersionResponse', encodeMessage('VersionResponse', {})), { version: '', runtimeName: '', runtimeVersion: '', runtimeApiVersion: '' });
});

test('endpoints: unix URLs and bare paths', () => {
  assert.equal(endpointToTarget('unix:///run/corral/corral.sock'), 'unix:///run/corral/corral.sock');
  assert.equal(endpointToTarget('/run/corral/corral.sock'), 'unix:///run/corral/corral.sock');
  assert.equal(endpointToTarget('unix:/run/x.sock'), 'unix:///run/x.sock');
});

test('frozen List items are encoded once and reused; the bytes are what a fresh encoding gives', () => {
  const pod = (i: number, state = 'SANDBOX_READY') => ({
    id: `p${i}`, metadata: { name: `n${i}`, uid: `u${i}`, namespace: 'ns', attempt: 1 }, state, createdAt: BigInt('1700000000123456789') + BigInt(i),
    labels: { app: `a${i}`, 'io.kubernetes.pod.name': `n${i}` }, annotations: { seen: 'x' }, runtimeHandler: '',
  });
  const plain = [pod(1), pod(2), pod(3, 'SANDBOX_NOTREADY')];
  const frozen = plain.map((p) => frozenMessage(p));
  const list = runtimeServiceDefinition.ListPodSandbox!;
  const expected = list.responseSerialize({ items: plain });
  const elementType = messageType('PodSandbox');
  const encode = elementType.encode;
  let encoded = 0;
  elementType.encode = function (this: typeof elementType, ...args: Parameters<typeof encode>) {
    encoded++;
    return encode.apply(this, args);
  } as typeof encode;
  try {
    assert.deepEqual(list.responseSerialize({ items: frozen }), expected, 'byte for byte the fresh encoding');
    assert.equal(encoded, 3);
    assert.deepEqual(list.responseSerialize({ items: frozen }), expected);
    assert.equal(encoded, 3, 'the second answer reuses every item\'s bytes');
    // An item that is not frozen may change between calls: encoded afresh each time.
    const changing = { ...pod(4) };
    const mixed = () => list.responseSerialize({ items: [frozen[0], changing] });
    mixed();
    changing.state = 'SANDBOX_NOTREADY';
    const res = decodeMessage('ListPodSandboxResponse', mixed());
    assert.deepEqual(res.items.map((i: any) => [i.id, i.state]), [['p1', 'SANDBOX_READY'], ['p4', 'SANDBOX_NOTREADY']]);
  } finally {
    elementType.encode = encode;
  }
  const decoded = decodeMessage('ListPodSandboxResponse', expected);
  assert.equal(decoded.items[2].createdAt, '1700000000123456792');
  assert.deepEqual(decoded.items[0].labels, plain[0]!.labels);
  // Other fields of the message come along with the items (ListContainerStats-like shapes too).
  const version = runtimeServiceDefinition.ListContainers!;
  const c = frozenMessage({ id: 'c1', podSandboxId: 'p1', state: 'CONTAINER_RUNNING', labels: {}, annotations: {} });
  assert.deepEqual(decodeMessage('ListContainersResponse', version.responseSerialize({ containers: [c, c] })).containers.map((x: any) => x.id), ['c1', 'c1']);
});

test('frozenMessage freezes a deep copy, never the caller\'s objects', () => {
  const labels = { a: 'b' };
  const rec = { id: 'x', labels, metadata: { name: 'n' } };
  const f = frozenMessage(rec);
  assert.ok(Object.isFrozen(f) && Object.isFrozen(f.labels) && Object.isFrozen(f.metadata));
  assert.ok(!Object.isFrozen(labels) && !Object.isFrozen(rec.metadata));
  labels.a = 'changed';
  assert.equal(f.labels.a, 'b');
});
