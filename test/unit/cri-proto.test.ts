import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  IMAGE_RPCS, RUNTIME_RPCS, criPackage, decodeMessage, encodeMessage, imageServiceDefinition, protoRoot, runtimeServiceDefinition,
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
