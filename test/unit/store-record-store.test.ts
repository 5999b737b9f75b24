import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RecordStore } from '../../src/store/record-store.js';

interface Rec {
  id: string;
  updatedAt?: string;
  state: string;
  payload?: string;
}

async function tempStore(t: { after: (fn: () => Promise<void>) => void }): Promise<RecordStore<Rec>> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-records-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return new RecordStore<Rec>(path.join(dir, 'sandboxes'), 'record.json');
}

const byId = (a: Rec, b: Rec) => a.id.localeCompare(b.id);

test('a missing store directory loads as empty', async (t) => {
  const store = await tempStore(t);
  assert.deepEqual(await store.loadAll(), { records: [], errors: [] });
});

test('save, load, overwrite and remove; updatedAt is stamped on save; files are private', async (t) => {
  const store = await tempStore(t);
  const a: Rec = { id: 'a', state: 'READY' };
  await store.save(a);
  assert.ok(a.updatedAt && !Number.isNaN(Date.parse(a.updatedAt)), 'save stamps updatedAt');
  await store.save({ id: 'b', state: 'READY' });
  await store.save({ ...a, state: 'NOTREADY' });
  const loaded = await store.loadAll();
  assert.deepEqual(loaded.errors, []);
  assert.deepEqual(loaded.records.sort(byId).map((r) => [r.id, r.state]), [['a', 'NOTREADY'], ['b', 'READY']]);
  const file = path.join(store.recordDir('a'), 'record.json');
  assert.equal((await fs.stat(file)).mode & 0o777, 0o600);

  await store.remove('a');
  await store.remove('a'); // removing twice is fine (a retried Remove)
  await assert.rejects(fs.stat(store.recordDir('a')), { code: 'ENOENT' });
  assert.deepEqual((await store.loadAll()).records.map((r) => r.id), ['b']);
});

test('unreadable records are reported, not fatal: the good ones still load', async (t) => {
  const store = await tempStore(t);
  await store.save({ id: 'good', state: 'READY' });
  const dir = (id: string) => store.recordDir(id);
  await fs.mkdir(dir('empty-dir'), { recursive: true }); // crashed before the first write
  await fs.mkdir(dir('torn'));
  await fs.writeFile(path.join(dir('torn'), 'record.json'), '{"id": "torn", "sta');
  await fs.mkdir(dir('renamed'));
  await fs.writeFile(path.join(dir('renamed'), 'record.json'), JSON.stringify({ id: 'other', state: 'READY' }));
  await fs.mkdir(dir('no-id'));
  await fs.writeFile(path.join(dir('no-id'), 'record.json'), JSON.stringify({ state: 'READY' }));
  await fs.mkdir(dir('fifo'));
  execFileSync('mkfifo', [path.join(dir('fifo'), 'record.json')]); // a naive read would block forever
  await fs.mkdir(dir('link'));
  await fs.symlink('/etc/hostname', path.join(dir('link'), 'record.json'));

  const t0 = Date.now();
  const { records, errors } = await store.loadAll();
  assert.ok(Date.now() - t0 < 5_000);
  assert.deepEqual(records.map((r) => r.id), ['good']);
  const reported = Object.fromEntries(errors.map((e) => [path.basename(e.dir), e.error]));
  assert.deepEqual(Object.keys(reported).sort(), ['empty-dir', 'fifo', 'link', 'no-id', 'renamed', 'torn']);
  assert.match(reported['renamed']!, /record ID other does not match its directory/);
  assert.match(reported['no-id']!, /record ID undefined does not match/);
  assert.match(reported['empty-dir']!, /does not exist|ENOENT/);
  for (const e of errors) assert.equal(e.dir, store.recordDir(path.basename(e.dir)), 'errors name the record directory');
});

test('writes are atomic: concurrent readers never see a torn record, and no temp file is left', async (t) => {
  const store = await tempStore(t);
  // Large enough that a non-atomic write would be observed half-written.
  const big = (n: number) => ({ id: 'r', state: `v${n}`, payload: String(n).repeat(200_000) });
  await store.save(big(0));
  let writing = true;
  const writer = (async () => {
    for (let n = 1; n <= 15; n++) await store.save(big(n));
    writing = false;
  })();
  let reads = 0;
  while (writing) {
    const { records, errors } = await store.loadAll();
    assert.deepEqual(errors, [], 'a read during a write saw a torn or missing record');
    assert.equal(records.length, 1);
    const r = records[0]!;
    assert.equal(r.payload, r.state.slice(1).repeat(200_000), 'record content is one whole version');
    reads++;
  }
  await writer;
  assert.ok(reads > 0);
  assert.deepEqual(await fs.readdir(store.recordDir('r')), ['record.json'], 'no temp files left');
  assert.equal((await store.loadAll()).records[0]!.state, 'v15');
});

test('loading does not wait for the thread pool: records load while every pool thread is stuck', async (t) => {
  const store = await tempStore(t);
  for (let i = 0; i < 50; i++) await store.save({ id: `r${i}`, state: 'READY' });
  // Each open of a FIFO with no writer holds one pool thread until a writer comes.
  const fifoDir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-pool-'));
  const threads = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
  const fifos = Array.from({ length: threads }, (_, i) => path.join(fifoDir, `f${i}`));
  for (const f of fifos) execFileSync('mkfifo', [f]);
  const stuck = fifos.map((f) => fs.open(f, 'r'));
  const release = async () => {
    for (const f of fifos) {
      try {
        closeSync(openSync(f, constants.O_WRONLY | constants.O_NONBLOCK));
      } catch {
        /* its reader is already gone */
      }
    }
    for (const h of await Promise.allSettled(stuck)) if (h.status === 'fulfilled') await h.value.close();
    await fs.rm(fifoDir, { recursive: true, force: true });
  };
  // Released before any other cleanup: those need the pool too.
  let loaded: Awaited<ReturnType<typeof store.loadAll>> | 'stuck';
  try {
    await new Promise((r) => setTimeout(r, 100)); // the opens have reached the pool
    loaded = await Promise.race([store.loadAll(), new Promise<'stuck'>((r) => setTimeout(() => r('stuck'), 3000))]);
  } finally {
    await release();
  }
  assert.notEqual(loaded, 'stuck', 'loadAll waited for the thread pool');
  assert.equal((loaded as Exclude<typeof loaded, 'stuck'>).records.length, 50);
});

test('a save with durable false is atomic, private and readable at once; sync() makes it durable later', async (t) => {
  const store = await tempStore(t);
  const a: Rec = { id: 'a', state: 'creating' };
  await store.save(a, { durable: false });
  assert.ok(a.updatedAt, 'updatedAt stamped');
  const file = path.join(store.recordDir('a'), 'record.json');
  assert.equal(JSON.parse(await fs.readFile(file, 'utf8')).state, 'creating');
  assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
  await store.save({ ...a, state: 'ready' }, { durable: false });
  assert.deepEqual(await fs.readdir(store.recordDir('a')), ['record.json'], 'no temp file left');
  await store.sync('a');
  assert.deepEqual((await store.loadAll()).records.map((r) => r.state), ['ready']);
  await assert.rejects(store.sync('missing'), { code: 'ENOENT' });
});

/** A store whose folder fsyncs are held until released, and counted. */
class HeldSyncStore extends RecordStore<Rec> {
  readonly dirSyncs: { dir: string; release: (e?: Error) => void }[] = [];
  protected override syncDir(dir: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.dirSyncs.push({ dir, release: (e) => (e ? reject(e) : resolve()) });
    });
  }
  storeDirSyncs(): { dir: string; release: (e?: Error) => void }[] {
    return this.dirSyncs.filter((s) => s.dir === this.dir);
  }
}

const turns = async (n = 20) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

test('sync() group-commits the store folder: the Runs that ask while one fsync runs share the next one', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-records-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const store = new HeldSyncStore(path.join(dir, 'sandboxes'), 'record.json');
  for (const id of ['a', 'b', 'c', 'd']) await store.save({ id, state: 'creating' }, { durable: false });

  let aDone = false;
  const a = store.sync('a').then(() => (aDone = true));
  await turns();
  assert.equal(store.storeDirSyncs().length, 1, 'the first sync starts an fsync of the store folder');
  // Three more while it runs: their folders may be newer than that fsync, so they need
  // another one; one for all three, not three.
  const done: string[] = [];
  const rest = ['b', 'c', 'd'].map((id) => store.sync(id).then(() => done.push(id)));
  await turns();
  assert.equal(store.storeDirSyncs().length, 1, 'the next fsync waits for the one under way');
  for (const s of store.dirSyncs.filter((s) => s.dir !== store.dir)) s.release(); // each record's own folder
  await turns();
  assert.equal(aDone, false, 'not durable before the store folder is synced');
  store.storeDirSyncs()[0]!.release();
  await a;
  await turns();
  assert.equal(store.storeDirSyncs().length, 2, 'one more fsync of the store folder for the three');
  assert.deepEqual(done, [], 'they wait for their own fsync, not the earlier one');
  store.storeDirSyncs()[1]!.release();
  await Promise.all(rest);
  assert.deepEqual(done.sort(), ['b', 'c', 'd']);
  assert.equal(store.storeDirSyncs().length, 2);
  // Idle again: the next sync starts its own fsync at once.
  const e = store.sync('a');
  await turns();
  assert.equal(store.storeDirSyncs().length, 3);
  for (const s of store.dirSyncs.slice(-2)) s.release();
  await e;
});

test('a failed store-folder fsync fails every sync that shared it, and the next sync tries again', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-records-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const store = new HeldSyncStore(path.join(dir, 'sandboxes'), 'record.json');
  for (const id of ['a', 'b', 'c']) await store.save({ id, state: 'creating' }, { durable: false });
  const a = store.sync('a');
  await turns();
  const shared = [store.sync('b'), store.sync('c')];
  await turns();
  for (const s of store.dirSyncs.filter((s) => s.dir !== store.dir)) s.release();
  store.storeDirSyncs()[0]!.release();
  await a;
  await turns();
  // Both rejections are awaited together: awaiting one while the other is already rejected would leave it unhandled.
  const failures = shared.map((p) => assert.rejects(p, /EIO/));
  store.storeDirSyncs()[1]!.release(new Error('EIO'));
  await Promise.all(failures);
  const again = store.sync('b');
  await turns();
  for (const s of store.dirSyncs.slice(-2)) s.release();
  await again;
});

test('INODES_RECYCLED: pod cycles (intent, ready, stopped, removed) write into the files of earlier records, not new ones', async (t) => {
  const store = await tempStore(t);
  const seen = new Set<number>();
  /** The inodes of a cycle's saves with durable false; every inode it had goes into `seen` after the check. */
  const cycle = async (id: string): Promise<number[]> => {
    const inodes: number[] = [];
    const ino = async () => {
      const st = await fs.stat(path.join(store.recordDir(id), 'record.json'));
      assert.equal(st.mode & 0o777, 0o600, 'still private');
      return st.ino;
    };
    for (const state of ['creating', 'ready', 'notready']) {
      await store.save({ id, state, payload: `${id}:${state}` }, { durable: false });
      inodes.push(await ino());
    }
    await store.save({ id, state: 'notready', payload: `${id}:durable` }); // a durable save (a new file, as before)
    const durable = await ino();
    await store.remove(id);
    return [...inodes, -durable];
  };
  const remember = (inodes: number[]) => inodes.forEach((i) => seen.add(Math.abs(i)));
  remember(await cycle('first'));
  remember(await cycle('second'));
  for (const id of ['third', 'fourth']) {
    const inodes = await cycle(id);
    assert.deepEqual(inodes.filter((i) => i > 0 && !seen.has(i)), [], `${id}: every save with durable false reused a file of an earlier record`);
    remember(inodes);
  }
  assert.deepEqual(await fs.readdir(path.join(path.dirname(store.dir))).then((n) => n.sort()), ['.sandboxes-spare', 'sandboxes'], 'spares live beside the store, not in it');
  assert.deepEqual(await fs.readdir(store.dir), [], 'no record left');
});

test('INODES_RECYCLED: a spare never shares its file with a live record; records stay whole; a restart drops the spares', async (t) => {
  const store = await tempStore(t);
  const ids = ['a', 'b', 'c'];
  for (let round = 0; round < 4; round++) {
    for (const id of ids) await store.save({ id, state: `r${round}`, payload: `${id}`.repeat(1000 * (round + 1)) }, { durable: false });
    await store.remove('b');
  }
  const spareDir = path.join(path.dirname(store.dir), '.sandboxes-spare');
  const spareInodes = new Set(await Promise.all((await fs.readdir(spareDir)).map(async (n) => (await fs.stat(path.join(spareDir, n))).ino)));
  assert.ok(spareInodes.size > 0);
  for (const id of ['a', 'c']) {
    const file = path.join(store.recordDir(id), 'record.json');
    const st = await fs.stat(file);
    assert.equal(st.nlink, 1, `${id}: its file has no other name`);
    assert.ok(!spareInodes.has(st.ino), `${id}: not a spare`);
    assert.deepEqual(await fs.readdir(store.recordDir(id)), ['record.json'], `${id}: no temp file left`);
  }
  const again = new RecordStore<Rec>(store.dir, 'record.json');
  const loaded = await again.loadAll();
  assert.deepEqual(loaded.errors, []);
  assert.deepEqual(loaded.records.sort(byId).map((r) => [r.id, r.state, r.payload]), [['a', 'r3', 'a'.repeat(4000)], ['c', 'r3', 'c'.repeat(4000)]]);
  await assert.rejects(fs.stat(spareDir), { code: 'ENOENT' }, 'spares of the earlier run dropped');
  await again.save({ id: 'a', state: 'after', payload: 'x' }, { durable: false });
  assert.equal((await again.loadAll()).records.find((r) => r.id === 'a')?.state, 'after');
});

test('INODES_RECYCLED: a shorter record written into a longer spare leaves none of the old bytes', async (t) => {
  const store = await tempStore(t);
  await store.save({ id: 'big', state: 'x', payload: 'b'.repeat(50_000) }, { durable: false });
  await store.save({ id: 'big', state: 'y', payload: 'b'.repeat(40_000) }, { durable: false }); // the 50 kB file becomes a spare
  await store.remove('big'); // and the 40 kB one
  for (const id of ['s1', 's2', 's3']) await store.save({ id, state: 'small' }, { durable: false });
  for (const id of ['s1', 's2', 's3']) {
    const text = await fs.readFile(path.join(store.recordDir(id), 'record.json'), 'utf8');
    assert.equal(JSON.parse(text).state, 'small');
    assert.ok(text.length < 200, `${id}: ${text.length} bytes, nothing of the spare's old content`);
  }
});
