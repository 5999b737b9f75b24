import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  NETNS_PREFIX,
  NSFS_MAGIC,
  isNetnsPinned,
  listCorralNetns,
  netnsPathFor,
  sandboxIdFromNetnsPath,
} from '../../src/network/netns.js';

const ID = 'a3f1c0de9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817060f5e';

test('NETNS_PREFIX and NSFS_MAGIC', () => {
  assert.equal(NETNS_PREFIX, 'corral-');
  assert.equal(NSFS_MAGIC, 0x6e736673);
});

test('netnsPathFor is deterministic and uses the full sandbox ID', () => {
  const p = netnsPathFor('/var/run/netns', ID);
  assert.equal(p, `/var/run/netns/corral-${ID}`);
  assert.equal(netnsPathFor('/var/run/netns', ID), p);
  assert.equal(netnsPathFor('/var/run/netns/', ID), p, 'a trailing slash on the folder does not matter');
  assert.notEqual(netnsPathFor('/var/run/netns', ID.slice(0, 63) + '0'), p, 'IDs differing only at the end do not collide');
  assert.ok(path.basename(p).length <= 255);
});

test('netnsPathFor rejects IDs that cannot be a single safe file name', () => {
  for (const bad of ['', '.', '..', '../etc', 'a/b', '.hidden', '-x', 'a b', 'a\nb', 'x'.repeat(201)]) {
    assert.throws(() => netnsPathFor('/var/run/netns', bad), /cannot name a netns file/, `ID ${JSON.stringify(bad)}`);
  }
});

test('netnsPathFor needs an absolute folder', () => {
  assert.throws(() => netnsPathFor('run/netns', ID), /absolute/);
});

test('sandboxIdFromNetnsPath inverts netnsPathFor and ignores foreign names', () => {
  assert.equal(sandboxIdFromNetnsPath(netnsPathFor('/run/netns', ID)), ID);
  assert.equal(sandboxIdFromNetnsPath(`corral-${ID}`), ID);
  assert.equal(sandboxIdFromNetnsPath('/run/netns/cni-1234-5678'), undefined);
  assert.equal(sandboxIdFromNetnsPath('/run/netns/corral-'), undefined);
  assert.equal(sandboxIdFromNetnsPath('/run/netns/corral-.tmp'), undefined);
  assert.equal(sandboxIdFromNetnsPath('/run/netns/mycorral-abc'), undefined);
});

test('listCorralNetns lists only Corral pins; missing folder gives []', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-netns-unit-'));
  try {
    for (const name of [`corral-${ID}`, 'corral-abc', 'cni-0a1b2c3d', 'corral-', 'corral-.x', 'other']) {
      await fs.writeFile(path.join(dir, name), '');
    }
    assert.deepEqual(await listCorralNetns(dir), [path.join(dir, `corral-${ID}`), path.join(dir, 'corral-abc')]);
    assert.deepEqual(await listCorralNetns(path.join(dir, 'missing')), []);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('isNetnsPinned is false for a plain file and for a missing path', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-netns-unit-'));
  try {
    const file = path.join(dir, 'corral-plain');
    await fs.writeFile(file, '');
    assert.equal(await isNetnsPinned(file), false);
    assert.equal(await isNetnsPinned(path.join(dir, 'missing')), false);
    assert.equal(await isNetnsPinned(path.join(file, 'below-a-file')), false);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('isNetnsPinned recognises nsfs (the process\'s own /proc/self/ns/net)', async () => {
  assert.equal(await isNetnsPinned('/proc/self/ns/net'), true);
});
