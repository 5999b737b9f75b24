/** `corral doctor`'s state dir check: a memory file system is fine, anything else is said with its remedy. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileSystemOf, stateDirFinding } from '../../src/cli/doctor.js';

test('a state dir on tmpfs or ramfs is ok; on ext4 it is a warning that names the file system and the fix', () => {
  assert.equal(stateDirFinding('/run/corral', '/run/corral', 0x01021994).level, 'ok');
  assert.equal(stateDirFinding('/run/corral', '/run/corral', 0x858458f6).level, 'ok');
  const ext4 = stateDirFinding('/run/corral', '/run', 0xef53);
  assert.equal(ext4.level, 'warn');
  assert.match(ext4.what, /\/run is on ext2\/3\/4/);
  assert.match(ext4.fix ?? '', /mount a tmpfs on \/run\/corral/);
  assert.match(stateDirFinding('/x', '/', 0x12345678).what, /file system type 0x12345678/);
});

test('the file system of a state dir that does not exist yet is its nearest existing parent\'s', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-doctor-'));
  try {
    const missing = path.join(dir, 'not', 'made', 'yet');
    const found = await fileSystemOf(missing);
    assert.deepEqual(found, { folder: dir, type: (await fs.statfs(dir)).type });
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
