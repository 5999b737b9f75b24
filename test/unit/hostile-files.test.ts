/**
 * Files from an image, a client or the disk that are not what they should be: a FIFO or a
 * symlink out for /etc/passwd, a FIFO for a seccomp profile, a 1 GiB image config, a
 * corrupt record. Each is answered at once, with a clear error, never read whole.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { grpcCode } from '../../src/cri/errors.js';
import { readImageAccountFile } from '../../src/image/image-user.js';
import { resolveUser } from '../../src/oci/container-spec.js';
import { readSeccompProfile, resolveSeccomp } from '../../src/oci/seccomp-choice.js';
import { BlobTooLargeError, ContentStore } from '../../src/image/content-store.js';
import { RecordStore } from '../../src/store/record-store.js';
import { readJsonIfExists } from '../../src/util/safe-read.js';
import { MAX_JSON_BLOB_BYTES } from '../../src/util/safe-read.js';

const PROMPT = { timeout: 5000 };

async function tmpdir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-hostile-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

test('image /etc/passwd: present is read, missing is empty, FIFO refused, symlink out resolved inside, directory / huge unreadable', PROMPT, async (t) => {
  const rootfs = path.join(await tmpdir(t), 'rootfs');
  await fs.mkdir(path.join(rootfs, 'etc'), { recursive: true });
  assert.equal(await readImageAccountFile(rootfs, 'etc/passwd'), '');
  await fs.writeFile(path.join(rootfs, 'etc/passwd'), 'app:x:1000:1000::/:/bin/sh\n');
  assert.equal(await readImageAccountFile(rootfs, 'etc/passwd'), 'app:x:1000:1000::/:/bin/sh\n');

  // A FIFO (or device, or socket) is refused whatever the user: runc opens it in the container too.
  execFileSync('mkfifo', [path.join(rootfs, 'etc/group')]);
  await assert.rejects(readImageAccountFile(rootfs, 'etc/group'), (e: any) => grpcCode(e) === status.INVALID_ARGUMENT && /^the image's \/etc\/group: is a FIFO, not a regular file: the OCI runtime would block/.test(e.message));
  await fs.rm(path.join(rootfs, 'etc/group'));
  await fs.symlink('/dev/null', path.join(rootfs, 'etc/group'));
  assert.equal(await readImageAccountFile(rootfs, 'etc/group'), '', '/dev/null is empty in the container too');
  // Other links into /proc, /sys or /dev name the runtime's files, not the image's: refused.
  for (const target of ['/proc/kmsg', '../proc/self/fd/0', '/dev/tty', '/sys/kernel/debug/tracing/trace_pipe', '../../../dev/./zero']) {
    await fs.rm(path.join(rootfs, 'etc/group'));
    await fs.symlink(target, path.join(rootfs, 'etc/group'));
    await assert.rejects(readImageAccountFile(rootfs, 'etc/group'), (e: any) => grpcCode(e) === status.INVALID_ARGUMENT && /^the image's \/etc\/group: leads to \/(proc|dev|sys)\/.*which the container runtime mounts over: the OCI runtime would read/.test(e.message), target);
  }
  await fs.rm(path.join(rootfs, 'etc/group'));
  await fs.mkdir(path.join(rootfs, 'etc/group'));
  assert.deepEqual(await readImageAccountFile(rootfs, 'etc/group'), { unreadable: "the image's /etc/group: is a directory, not a regular file" });

  // /etc/passwd -> /etc/hosts of the host: resolved in the image, where it does not exist.
  await fs.rm(path.join(rootfs, 'etc/passwd'));
  await fs.symlink('/etc/hosts', path.join(rootfs, 'etc/passwd'));
  assert.equal(await readImageAccountFile(rootfs, 'etc/passwd'), '');

  await fs.rm(path.join(rootfs, 'etc/passwd'));
  const fh = await fs.open(path.join(rootfs, 'etc/passwd'), 'w');
  await fh.truncate(1 << 30);
  await fh.close();
  const huge = await readImageAccountFile(rootfs, 'etc/passwd');
  assert.ok(typeof huge !== 'string' && /1073741824 bytes, more than the 4194304-byte limit/.test(huge.unreadable), JSON.stringify(huge));
});

test('an unreadable /etc/passwd: numeric users still resolve, names fail saying why', () => {
  const unreadable = { unreadable: "the image's /etc/passwd: is a FIFO, not a regular file" };
  assert.deepEqual(resolveUser({ imageUser: '1000', passwd: unreadable, group: '' }), { uid: 1000, gid: 0 });
  assert.deepEqual(resolveUser({ imageUser: '1000:50', passwd: unreadable, group: unreadable }), { uid: 1000, gid: 50 });
  assert.deepEqual(resolveUser({ imageUser: 'app', runAsUser: 7, passwd: unreadable, group: '' }), { uid: 7, gid: 0 });
  assert.deepEqual(resolveUser({ imageUser: '', passwd: unreadable, group: unreadable }), { uid: 0, gid: 0 });
  assert.throws(() => resolveUser({ imageUser: 'app', passwd: unreadable, group: '' }), /cannot look up user "app": the image's \/etc\/passwd: is a FIFO/);
  assert.throws(() => resolveUser({ imageUser: '', runAsUsername: 'app', passwd: unreadable, group: '' }), /cannot look up user "app"/);
  const groupUnreadable = { unreadable: "the image's /etc/group: is a character device, not a regular file" };
  assert.throws(() => resolveUser({ imageUser: '1:staff', passwd: '', group: groupUnreadable }), /cannot look up group "staff": the image's \/etc\/group: is a character device/);
  // A missing file stays "no such user", as before.
  assert.throws(() => resolveUser({ imageUser: 'app', passwd: '', group: '' }), /user "app" is not in the image's \/etc\/passwd/);
});

test('a localhost seccomp profile that is a FIFO or a device is INVALID_ARGUMENT at once', PROMPT, async (t) => {
  const dir = await tmpdir(t);
  const fifo = path.join(dir, 'profile.json');
  execFileSync('mkfifo', [fifo]);
  const invalid = (re: RegExp) => (e: any) => grpcCode(e) === status.INVALID_ARGUMENT && re.test(e.message);
  await assert.rejects(resolveSeccomp({ seccompProfilePath: `localhost/${fifo}` }, readSeccompProfile), invalid(/cannot read the seccomp profile .*profile\.json: is a FIFO, not a regular file/));
  await assert.rejects(resolveSeccomp({ seccomp: { profileType: 'Localhost', localhostRef: '/dev/zero' } }, readSeccompProfile), invalid(/\/dev\/zero: is a character device/));
  await assert.rejects(resolveSeccomp({ seccomp: { profileType: 'Localhost', localhostRef: path.join(dir, 'none.json') } }, readSeccompProfile), invalid(/does not exist/));
  // Through a symlink (kubelet's ConfigMap mounts are symlinks): followed.
  await fs.writeFile(path.join(dir, 'real.json'), '{"defaultAction":"SCMP_ACT_ALLOW"}');
  await fs.symlink('real.json', path.join(dir, 'link.json'));
  assert.deepEqual(await resolveSeccomp({ seccompProfilePath: `localhost/${path.join(dir, 'link.json')}` }, readSeccompProfile), { type: 'localhost', profile: { defaultAction: 'SCMP_ACT_ALLOW' } });
});

test('a JSON blob over the cap (a 1 GiB image config) is refused without reading it', PROMPT, async (t) => {
  const store = new ContentStore(await tmpdir(t));
  const small = Buffer.from('{"config":{}}');
  const smallDigest = `sha256:${createHash('sha256').update(small).digest('hex')}`;
  await store.ingest(smallDigest, small.length, async () => (await import('node:stream')).Readable.from([small]));
  assert.deepEqual(await store.readJson(smallDigest), { config: {} });
  // Planted in place (sparse): what a 1 GiB config pulled before the cap existed looks like.
  const digest = `sha256:${'ab'.repeat(32)}`;
  await fs.mkdir(store.blobsDir, { recursive: true });
  const fh = await fs.open(store.blobPath(digest), 'w');
  await fh.truncate(1 << 30);
  await fh.close();
  const heapBefore = process.memoryUsage().arrayBuffers;
  await assert.rejects(store.readJson(digest), (e: unknown) => e instanceof BlobTooLargeError && /is 1073741824 bytes, more than the 4194304-byte limit.*cannot be used/.test(e.message));
  assert.ok(process.memoryUsage().arrayBuffers - heapBefore < 64 << 20, 'nothing near the blob size was allocated');
  // Exactly the cap is fine; one byte more is not.
  const atCap = `sha256:${'cd'.repeat(32)}`;
  await fs.writeFile(store.blobPath(atCap), `"${'x'.repeat(MAX_JSON_BLOB_BYTES - 2)}"`);
  assert.equal((await store.readJson<string>(atCap)).length, MAX_JSON_BLOB_BYTES - 2);
  await fs.appendFile(store.blobPath(atCap), ' ');
  await assert.rejects(store.readJson(atCap), BlobTooLargeError);
  // A FIFO planted as a blob does not hang.
  const fifo = `sha256:${'ef'.repeat(32)}`;
  execFileSync('mkfifo', [store.blobPath(fifo)]);
  await assert.rejects(store.readJson(fifo), /is a FIFO/);
});

test('state files: a FIFO or oversized record is reported, never read; images.json is capped', PROMPT, async (t) => {
  const dir = await tmpdir(t);
  const store = new RecordStore<{ id: string }>(dir, 'record.json');
  await store.save({ id: 'good' });
  await fs.mkdir(path.join(dir, 'fifo'));
  execFileSync('mkfifo', [path.join(dir, 'fifo', 'record.json')]);
  await fs.mkdir(path.join(dir, 'huge'));
  const fh = await fs.open(path.join(dir, 'huge', 'record.json'), 'w');
  await fh.truncate(2 ** 40);
  await fh.close();
  const loaded = await store.loadAll();
  assert.deepEqual(loaded.records.map((r) => r.id), ['good']);
  const why = Object.fromEntries(loaded.errors.map((e) => [path.basename(e.dir), e.error]));
  assert.match(why.fifo!, /is a FIFO, not a regular file/);
  assert.match(why.huge!, /is 1099511627776 bytes, more than the/);
  assert.equal(await readJsonIfExists(path.join(dir, 'none.json')), undefined);
  await assert.rejects(readJsonIfExists(path.join(dir, 'huge', 'record.json')), /more than the/);
});
