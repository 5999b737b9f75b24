import { test } from 'node:test';
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { grpcCode } from '../../src/cri/errors.js';
import { resolveSeccomp } from '../../src/oci/seccomp-choice.js';

const files: Record<string, string> = { '/etc/seccomp/block.json': '{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}', '/etc/seccomp/bad.json': '{nope' };
const read = async (f: string) => {
  if (!(f in files)) throw new Error('ENOENT');
  return files[f]!;
};

test('the structured field and the old profile path both choose the profile', async () => {
  assert.deepEqual(await resolveSeccomp({}, read), { type: 'unconfined' });
  assert.deepEqual(await resolveSeccomp({ seccomp: { profileType: 'RuntimeDefault' } }, read), { type: 'runtimeDefault' });
  assert.deepEqual(await resolveSeccomp({ seccomp: { profileType: 'Unconfined' }, seccompProfilePath: 'runtime/default' }, read), { type: 'unconfined' });
  for (const p of ['runtime/default', 'docker/default']) assert.deepEqual(await resolveSeccomp({ seccompProfilePath: p }, read), { type: 'runtimeDefault' });
  assert.deepEqual(await resolveSeccomp({ seccompProfilePath: 'unconfined' }, read), { type: 'unconfined' });
  assert.deepEqual(await resolveSeccomp({ seccompProfilePath: 'localhost//etc/seccomp/block.json' }, read), { type: 'localhost', profile: { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [] } });
  assert.deepEqual(await resolveSeccomp({ seccomp: { profileType: 'Localhost', localhostRef: '/etc/seccomp/block.json' } }, read), { type: 'localhost', profile: { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [] } });
});

test('a custom profile without localhost/, a relative, missing or unreadable file is INVALID_ARGUMENT', async () => {
  const bad = (e: any) => grpcCode(e) === status.INVALID_ARGUMENT;
  await assert.rejects(resolveSeccomp({ seccompProfilePath: '/etc/seccomp/block.json' }, read), bad);
  await assert.rejects(resolveSeccomp({ seccompProfilePath: 'localhost/relative.json' }, read), bad);
  await assert.rejects(resolveSeccomp({ seccompProfilePath: 'localhost//etc/seccomp/missing.json' }, read), (e: any) => bad(e) && /cannot read/.test(e.message));
  await assert.rejects(resolveSeccomp({ seccompProfilePath: 'localhost//etc/seccomp/bad.json' }, read), (e: any) => bad(e) && /not JSON/.test(e.message));
});
