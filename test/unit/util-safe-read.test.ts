import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readFileInRoot, readJsonIfExists, readRegularFile, SafeReadError } from '../../src/util/safe-read.js';

// Every test has a timeout: a reader that blocks on a FIFO or a device would hang here.
const PROMPT = { timeout: 5000 };
const MAX = 1024;

/** A scratch dir with `root/` (the "image") and `outside/` (the "host") beside it. */
async function scratch(t: { after: (fn: () => Promise<void>) => void }) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-safe-read-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const root = path.join(dir, 'root');
  const outside = path.join(dir, 'outside');
  await fs.mkdir(path.join(root, 'etc'), { recursive: true });
  await fs.mkdir(outside);
  await fs.writeFile(path.join(outside, 'secret'), 'HOST SECRET\n');
  return { dir, root, outside };
}

const refused = (code: string, re?: RegExp) => (e: unknown) => e instanceof SafeReadError && e.code === code && (!re || re.test(e.message));

test('a regular file under the cap is read whole', PROMPT, async (t) => {
  const { root } = await scratch(t);
  await fs.writeFile(path.join(root, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
  assert.equal((await readFileInRoot(root, 'etc/passwd', { maxBytes: MAX })).toString(), 'root:x:0:0::/root:/bin/sh\n');
  assert.equal((await readFileInRoot(root, '/etc//./passwd', { maxBytes: MAX })).toString(), 'root:x:0:0::/root:/bin/sh\n');
  await fs.writeFile(path.join(root, 'etc/empty'), '');
  assert.equal((await readFileInRoot(root, 'etc/empty', { maxBytes: MAX })).length, 0);
  await fs.writeFile(path.join(root, 'etc/exact'), 'x'.repeat(MAX));
  assert.equal((await readRegularFile(path.join(root, 'etc/exact'), { maxBytes: MAX })).length, MAX);
});

test('a missing file or directory is ENOENT / ENOTDIR, told apart from a refusal', PROMPT, async (t) => {
  const { root } = await scratch(t);
  await assert.rejects(readFileInRoot(root, 'etc/passwd', { maxBytes: MAX }), refused('ENOENT', /etc\/passwd: does not exist/));
  await assert.rejects(readFileInRoot(root, 'nope/passwd', { maxBytes: MAX }), refused('ENOENT'));
  await fs.writeFile(path.join(root, 'file'), 'x');
  await assert.rejects(readFileInRoot(root, 'file/passwd', { maxBytes: MAX }), refused('ENOTDIR'));
  await assert.rejects(readRegularFile(path.join(root, 'missing'), { maxBytes: MAX }), refused('ENOENT'));
});

test('a FIFO is refused at once, even many at a time, and file work goes on', PROMPT, async (t) => {
  const { root } = await scratch(t);
  execFileSync('mkfifo', [path.join(root, 'etc/passwd')]);
  // More concurrent reads than libuv has pool threads (4): a blocking open would starve them all.
  const reads = Array.from({ length: 12 }, (_, i) =>
    i % 2 ? readFileInRoot(root, 'etc/passwd', { maxBytes: MAX }) : readRegularFile(path.join(root, 'etc/passwd'), { maxBytes: MAX }),
  );
  for (const r of await Promise.allSettled(reads)) {
    assert.equal(r.status, 'rejected');
    assert.ok(refused('ENOTREG', /is a FIFO, not a regular file/)((r as PromiseRejectedResult).reason), String((r as PromiseRejectedResult).reason));
  }
  await fs.writeFile(path.join(root, 'after'), 'still works');
  assert.equal(await fs.readFile(path.join(root, 'after'), 'utf8'), 'still works');
});

test('a character device, directly or through a symlink, is refused without reading it', PROMPT, async (t) => {
  const { root } = await scratch(t);
  await assert.rejects(readRegularFile('/dev/zero', { maxBytes: MAX }), refused('ENOTREG', /character device/));
  await fs.symlink('/dev/zero', path.join(root, 'zero'));
  await assert.rejects(readRegularFile(path.join(root, 'zero'), { maxBytes: MAX }), refused('ENOTREG', /character device/));
  // Inside a root, /dev/zero means the root's own dev/zero: absent here, never the host's.
  await fs.symlink('/dev/zero', path.join(root, 'etc/passwd'));
  await assert.rejects(readFileInRoot(root, 'etc/passwd', { maxBytes: MAX }), refused('ENOENT'));
  await fs.mkdir(path.join(root, 'dev'));
  await fs.writeFile(path.join(root, 'dev/zero'), 'the image file');
  assert.equal((await readFileInRoot(root, 'etc/passwd', { maxBytes: MAX })).toString(), 'the image file');
});

test('a directory, the root itself, and ".." are refused', PROMPT, async (t) => {
  const { root } = await scratch(t);
  await assert.rejects(readFileInRoot(root, 'etc', { maxBytes: MAX }), refused('ENOTREG', /directory/));
  await assert.rejects(readFileInRoot(root, '', { maxBytes: MAX }), refused('ENOTREG', /directory/));
  await assert.rejects(readRegularFile(root, { maxBytes: MAX }), refused('ENOTREG', /directory/));
  await assert.rejects(readFileInRoot(root, '../outside/secret', { maxBytes: MAX }), refused('EINVAL', /\.\./));
  await assert.rejects(readFileInRoot(root, 'etc/../../outside/secret', { maxBytes: MAX }), refused('EINVAL'));
});

test('a symlink in the last component pointing outside resolves inside the root', PROMPT, async (t) => {
  const { root, outside } = await scratch(t);
  // Absolute to the host file, relative climbing out, and absolute to a host path: none reach the host.
  await fs.symlink(path.join(outside, 'secret'), path.join(root, 'etc/passwd'));
  await fs.symlink('../../outside/secret', path.join(root, 'etc/group'));
  await fs.symlink('../../../../../../../../etc/hosts', path.join(root, 'etc/hostname'));
  for (const f of ['etc/passwd', 'etc/group', 'etc/hostname']) {
    await assert.rejects(readFileInRoot(root, f, { maxBytes: MAX }), refused('ENOENT'), f);
  }
  // `..` in a link stops at the root: ../../outside/secret from /etc is /outside/secret of the root.
  await fs.mkdir(path.join(root, 'outside'));
  await fs.writeFile(path.join(root, 'outside/secret'), 'image file');
  assert.equal((await readFileInRoot(root, 'etc/group', { maxBytes: MAX })).toString(), 'image file');
  // A link that stays inside is followed as in a chroot.
  await fs.writeFile(path.join(root, 'etc/real'), 'real');
  await fs.symlink('real', path.join(root, 'etc/rel'));
  await fs.symlink('/etc/rel', path.join(root, 'etc/abs'));
  assert.equal((await readFileInRoot(root, 'etc/abs', { maxBytes: MAX })).toString(), 'real');
});

test('a symlink in a middle component pointing outside resolves inside the root', PROMPT, async (t) => {
  const { root, outside } = await scratch(t);
  await fs.writeFile(path.join(outside, 'passwd'), 'HOST PASSWD\n');
  await fs.rm(path.join(root, 'etc'), { recursive: true });
  await fs.symlink(outside, path.join(root, 'etc')); // /etc -> /host/etc
  await assert.rejects(readFileInRoot(root, 'etc/passwd', { maxBytes: MAX }), refused('ENOENT'));
  await fs.rm(path.join(root, 'etc'));
  await fs.mkdir(path.join(root, 'usr'));
  await fs.symlink('../..', path.join(root, 'usr/up')); // /usr/up/.. would be above the root
  await fs.symlink('usr/up/outside', path.join(root, 'etc'));
  await assert.rejects(readFileInRoot(root, 'etc/passwd', { maxBytes: MAX }), refused('ENOENT'));
  // The same layout inside the root is followed.
  await fs.mkdir(path.join(root, 'outside'));
  await fs.writeFile(path.join(root, 'outside/passwd'), 'image passwd');
  assert.equal((await readFileInRoot(root, 'etc/passwd', { maxBytes: MAX })).toString(), 'image passwd');
});

test('refuseUnder: a path resolving into a runtime-mounted top-level directory is EXDEV', PROMPT, async (t) => {
  const { root } = await scratch(t);
  const opts = { maxBytes: MAX, refuseUnder: ['proc', 'dev'] };
  await fs.mkdir(path.join(root, 'proc'));
  await fs.writeFile(path.join(root, 'proc/kmsg'), 'the image file, hidden by the runtime mount');
  await fs.symlink('/proc/kmsg', path.join(root, 'etc/abs'));
  await fs.symlink('../proc/kmsg', path.join(root, 'etc/rel'));
  await fs.mkdir(path.join(root, 'usr'));
  await fs.symlink('/usr/../dev/null', path.join(root, 'etc/devnull'));
  for (const [f, where] of [['etc/abs', '/proc/kmsg'], ['etc/rel', '/proc/kmsg'], ['proc/kmsg', '/proc/kmsg'], ['etc/devnull', '/dev/null']] as const) {
    await assert.rejects(readFileInRoot(root, f, opts), (e: unknown) => refused('EXDEV')(e) && (e as SafeReadError).resolvedPath === where, f);
  }
  assert.equal((await readFileInRoot(root, 'etc/rel', { maxBytes: MAX })).toString(), 'the image file, hidden by the runtime mount', 'only when asked');
});

test('symlink loops and very deep paths end with ELOOP', PROMPT, async (t) => {
  const { root } = await scratch(t);
  await fs.symlink('b', path.join(root, 'etc/a'));
  await fs.symlink('a', path.join(root, 'etc/b'));
  await assert.rejects(readFileInRoot(root, 'etc/a', { maxBytes: MAX }), refused('ELOOP'));
  // A link to a very deep path: bounded (each level holds a file descriptor while walked).
  await fs.symlink('d/'.repeat(300) + 'f', path.join(root, 'etc/deep'));
  await assert.rejects(readFileInRoot(root, 'etc/deep', { maxBytes: MAX }), refused('ENOENT'), 'absent: resolved step by step');
  await fs.mkdir(path.join(root, 'etc', 'd/'.repeat(300)), { recursive: true });
  await assert.rejects(readFileInRoot(root, 'etc/deep', { maxBytes: MAX }), refused('ELOOP', /more than 256 directories deep/));
});

test('a file over the cap is refused before it is read', PROMPT, async (t) => {
  const { root } = await scratch(t);
  await fs.writeFile(path.join(root, 'etc/passwd'), 'x'.repeat(MAX + 1));
  await assert.rejects(readFileInRoot(root, 'etc/passwd', { maxBytes: MAX }), refused('EFBIG', /1025 bytes, more than the 1024-byte limit/));
  // A sparse 1 TiB file: refused from its size alone, nothing allocated.
  const huge = await fs.open(path.join(root, 'etc/group'), 'w');
  await huge.truncate(2 ** 40);
  await huge.close();
  await assert.rejects(readFileInRoot(root, 'etc/group', { maxBytes: 4 << 20 }), refused('EFBIG'));
  await assert.rejects(readRegularFile(path.join(root, 'etc/group'), { maxBytes: 4 << 20, describe: 'the image config' }), refused('EFBIG', /^the image config: is 1099511627776 bytes/));
});

test('readJsonIfExists: undefined when absent, capped, bad JSON named', PROMPT, async (t) => {
  const { dir } = await scratch(t);
  assert.equal(await readJsonIfExists(path.join(dir, 'none.json'), MAX), undefined);
  await fs.writeFile(path.join(dir, 'ok.json'), '{"a":1}');
  assert.deepEqual(await readJsonIfExists(path.join(dir, 'ok.json'), MAX), { a: 1 });
  await fs.writeFile(path.join(dir, 'big.json'), `"${'x'.repeat(MAX)}"`);
  await assert.rejects(readJsonIfExists(path.join(dir, 'big.json'), MAX), refused('EFBIG'));
  await fs.writeFile(path.join(dir, 'bad.json'), '{nope');
  await assert.rejects(readJsonIfExists(path.join(dir, 'bad.json'), MAX), /bad\.json is not valid JSON/);
  execFileSync('mkfifo', [path.join(dir, 'fifo.json')]);
  await assert.rejects(readJsonIfExists(path.join(dir, 'fifo.json'), MAX), refused('ENOTREG'));
});

test('no file descriptor is left open, whatever the outcome', PROMPT, async (t) => {
  const { root, outside } = await scratch(t);
  await fs.writeFile(path.join(root, 'etc/passwd'), 'ok');
  execFileSync('mkfifo', [path.join(root, 'etc/fifo')]);
  await fs.symlink(outside, path.join(root, 'etc/out'));
  const before = (await fs.readdir('/proc/self/fd')).length;
  for (let i = 0; i < 20; i++) {
    for (const f of ['etc/passwd', 'etc/fifo', 'etc/out/secret', 'etc', 'etc/nope', 'etc/passwd/x']) {
      await readFileInRoot(root, f, { maxBytes: MAX }).catch(() => undefined);
    }
  }
  assert.equal((await fs.readdir('/proc/self/fd')).length, before);
});
