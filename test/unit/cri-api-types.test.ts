/**
 * src/cri-api/types.ts is generated from the proto: it must be what `npm run gen:types`
 * writes today, and its decoded shapes must be what the server's deserializer produces.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { REQUEST_OBJECT, protoRoot, runtimeServiceDefinition } from '../../src/cri/proto.js';
import type { ContainerConfig, CreateContainerRequest, PodSandboxConfig } from '../../src/cri-api/types.js';
import type { StoredContainerConfig } from '../../src/container/record.js';
import { containerEnv } from '../../src/oci/container-spec.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const committed = path.join(repoRoot, 'src', 'cri-api', 'types.ts');

test('the committed CRI types are what npm run gen:types generates from the proto', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-gen-types-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  execFileSync(path.join(repoRoot, 'node_modules', '.bin', 'tsx'), ['scripts/gen-cri-types.ts', '--out', dir], { cwd: repoRoot, stdio: 'pipe' });
  const fresh = fs.readFileSync(path.join(dir, 'types.ts'), 'utf8');
  assert.ok(fresh.includes('export interface PodSandboxConfig {'), 'the generator wrote no PodSandboxConfig');
  assert.ok(fresh === fs.readFileSync(committed, 'utf8'), 'src/cri-api/types.ts is stale: run `npm run gen:types` and commit the result');
});

/** Field name → type text of every `export interface X {` (decoded shapes only). */
function decodedShapes(source: string): Map<string, Map<string, string>> {
  const shapes = new Map<string, Map<string, string>>();
  for (const m of source.matchAll(/^export interface (\w+) \{\n([^}]*(?:\{[^}]*\}[^}]*)*)\n\}/gm)) {
    if (m[1]!.endsWith('Init') || m[1]!.endsWith('Methods')) continue;
    const fields = new Map<string, string>();
    for (const line of m[2]!.split('\n')) {
      const f = /^ {2}(\w+): (.*);$/.exec(line);
      if (f) fields.set(f[1]!, f[2]!);
    }
    shapes.set(m[1]!, fields);
  }
  return shapes;
}

test('every decoded shape matches what the server deserializer produces for an empty message', () => {
  const shapes = decodedShapes(fs.readFileSync(committed, 'utf8'));
  assert.ok(shapes.size > 150, `expected the schema's messages, found ${shapes.size}`);
  for (const [name, fields] of shapes) {
    const type = protoRoot().lookupType(`runtime.v1.${name}`);
    const decoded = type.toObject(type.decode(new Uint8Array()), REQUEST_OBJECT) as Record<string, unknown>;
    assert.deepEqual(Object.keys(decoded).sort(), [...fields.keys()].sort(), `${name}: field names`);
    for (const [field, text] of fields) {
      const v = decoded[field];
      const where = `${name}.${field}: ${text}`;
      if (text.startsWith('{ [key: string]')) assert.deepEqual(v, {}, where);
      else if (text.endsWith('[]')) assert.deepEqual(v, [], where);
      else if (text.endsWith(' | null')) assert.equal(v, null, where);
      else if (text === 'number') assert.equal(typeof v, 'number', where);
      else if (text === 'string') assert.equal(v, '', where);
      else if (text === 'boolean') assert.equal(v, false, where);
      else if (text === 'Buffer') assert.ok(Buffer.isBuffer(v), where);
      else if (text.endsWith(' | number')) assert.equal(typeof v, 'string', where); // an enum, by name
      else assert.fail(`${where}: no check for this type`);
    }
  }
});

test('an enum value the schema does not name arrives as its number, as the generated type says', () => {
  const type = protoRoot().lookupType('runtime.v1.PortMapping');
  const bytes = type.encode(type.fromObject({ protocol: 7, containerPort: 80 })).finish();
  const decoded = type.toObject(type.decode(bytes), REQUEST_OBJECT) as Record<string, unknown>;
  assert.equal(decoded.protocol, 7);
  assert.equal(decoded.containerPort, 80);
});

test('the generated module imports nothing: the domain may use it without the transport', () => {
  const source = fs.readFileSync(committed, 'utf8');
  assert.doesNotMatch(source, /^\s*(import|export\s+\*|export\s+\{[^}]*\}\s+from)\b/m);
  assert.doesNotMatch(source, /\brequire\(|\bimport\(/);
});

/** Whether a bytes field (Buffer) is reachable in T: those do not survive a record's JSON round trip as such. */
type HasBytes<T> = T extends Buffer ? true
  : T extends (infer U)[] ? HasBytes<U>
  : T extends object ? (true extends { [K in keyof T]-?: HasBytes<T[K]> }[keyof T] ? true : false)
  : false;

test('records: a PodSandboxConfig has no bytes (stored as is); a ContainerConfig only in envs, whose text survives the JSON round trip', () => {
  // Compile-time: each line fails to build if the schema grows bytes elsewhere.
  const sandboxBytes: HasBytes<PodSandboxConfig> = false;
  const containerBytes: HasBytes<ContainerConfig> = true;
  const containerBytesOutsideEnvs: HasBytes<Omit<ContainerConfig, 'envs'>> = false;
  assert.deepEqual([sandboxBytes, containerBytes, containerBytesOutsideEnvs], [false, true, false]);

  const create = runtimeServiceDefinition.CreateContainer!;
  const req = create.requestDeserialize(create.requestSerialize({
    podSandboxId: 'p',
    config: { metadata: { name: 'c' }, image: { image: 'i' }, envs: [{ key: 'GREETING', value: Buffer.from('grüß dich') }] },
  })) as CreateContainerRequest;
  const received: StoredContainerConfig = req.config!;
  assert.ok(Buffer.isBuffer(received.envs[0]!.value), 'KeyValue.value is bytes in the proto');
  const reloaded = JSON.parse(JSON.stringify(received)) as StoredContainerConfig;
  assert.ok(!Buffer.isBuffer(reloaded.envs[0]!.value), 'a stored record holds the JSON form');
  assert.deepEqual(containerEnv([], reloaded.envs), containerEnv([], received.envs));
  assert.equal(containerEnv([], reloaded.envs)[0], 'GREETING=grüß dich');
});
