/**
 * The daemon's CPU per pod (bench/cpubench.ts): every async file-system call is a round trip
 * through libuv's thread pool (a worker woken, the event loop woken back), ~0.1 ms of the
 * daemon's CPU each on this VM, for calls that take microseconds on tmpfs, cgroupfs, procfs
 * or the page cache. These tests count the round trips of the per-pod steps that must not
 * make them (async_hooks sees each as an FSREQCALLBACK or FSREQPROMISE resource).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHook } from 'node:async_hooks';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stopPodInit } from '../../src/sandbox/pod-init.js';
import { fsyncDir, fsyncFile } from '../../src/util/fs.js';
import { listCachedAttachments, writeCachedAttachment } from '../../src/network/cni/cache.js';
import { RecordStore } from '../../src/store/record-store.js';

/** Runs fn and counts the thread-pool file-system requests it started, by kind. */
async function threadPoolCalls(fn: () => Promise<unknown>): Promise<{ total: number; kinds: Record<string, number> }> {
  const kinds: Record<string, number> = {};
  const hook = createHook({
    init(_id, type) {
      if (type === 'FSREQCALLBACK' || type === 'FSREQPROMISE') kinds[type] = (kinds[type] ?? 0) + 1;
    },
  });
  hook.enable();
  try {
    await fn();
  } finally {
    hook.disable();
  }
  return { total: Object.values(kinds).reduce((a, b) => a + b, 0), kinds };
}

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-tp-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('the counter sees an async file-system call (so a zero below means none)', async () => {
  const { promises: fs } = await import('node:fs');
  const calls = await threadPoolCalls(() => fs.stat(os.tmpdir()));
  assert.equal(calls.total, 1);
});

test("Stop of the pod's own pause: its pidfile, cgroups (11 hierarchies) and their removal make no thread-pool round trip", async (t) => {
  const dir = tempDir(t);
  // A pause already gone: its pidfile names a dead process; an empty folder stands in for
  // each cgroup (no cgroup.procs reads as no members; rmdir of it succeeds as of an empty cgroup).
  const cgroups = Array.from({ length: 11 }, (_, i) => path.join(dir, `hier${i}`, 'pod'));
  for (const cg of cgroups) mkdirSync(cg, { recursive: true });
  const pidFile = path.join(dir, 'pause.pid');
  writeFileSync(pidFile, '999999999 1\n');
  const calls = await threadPoolCalls(() => stopPodInit({ pidFile, cgroups }));
  assert.deepEqual(calls.kinds, {}, 'no thread-pool round trips');
  assert.equal(existsSync(pidFile), false, 'pidfile removed');
  for (const cg of cgroups) assert.equal(existsSync(cg), false, `${cg} removed`);
});

test('fsyncFile and fsyncDir: one thread-pool round trip each (the fsync), not three', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'f');
  writeFileSync(file, 'x');
  assert.equal((await threadPoolCalls(() => fsyncFile(file))).total, 1);
  assert.equal((await threadPoolCalls(() => fsyncDir(dir))).total, 1);
  await assert.rejects(fsyncFile(path.join(dir, 'missing')), { code: 'ENOENT' });
});

test("CNI DEL's cache lookup (list + read of the container's entries) makes no thread-pool round trip", async (t) => {
  const cacheDir = tempDir(t);
  for (const id of ['a'.repeat(64), 'b'.repeat(64)]) {
    await writeCachedAttachment(cacheDir, { containerId: id, networkName: 'net', ifName: 'eth0', netns: '/run/netns/x', config: Buffer.from('{}'), cniArgs: [], capabilityArgs: {}, result: { cniVersion: '1.0.0' } });
  }
  let found: Awaited<ReturnType<typeof listCachedAttachments>> | undefined;
  const calls = await threadPoolCalls(async () => {
    found = await listCachedAttachments(cacheDir, 'a'.repeat(64));
  });
  assert.equal(found?.attachments.length, 1);
  assert.equal(found?.attachments[0]?.containerId, 'a'.repeat(64));
  assert.deepEqual(calls.kinds, {});
});

test("Remove of a record (its folder and file) makes no thread-pool round trip", async (t) => {
  const dir = tempDir(t);
  const store = new RecordStore<{ id: string; updatedAt?: string }>(dir, 'record.json');
  await store.save({ id: 'r1' }, { durable: false });
  const calls = await threadPoolCalls(() => store.remove('r1'));
  assert.deepEqual(calls.kinds, {});
  assert.equal(existsSync(path.join(dir, 'r1')), false);
});
