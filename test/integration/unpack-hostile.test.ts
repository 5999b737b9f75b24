/**
 * A hostile-layer corpus against applyLayer (root: owners, devices, trusted.* xattrs).
 * Every case runs next to a canary tree outside the layer; whatever the layer does
 * (refused with a reason, failed, or unpacked with the attack neutralised), the canary's
 * content, modes, owners, times, link counts and xattrs must be exactly as before and
 * nothing may appear outside the layer directory. corral-unpack, the helper that does
 * all the writing, is also fed hostile operations directly, without Node's checks in
 * front, to show that it alone keeps writes beneath the layer.
 */
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { applyLayer } from '../../src/image/unpack.js';
import { nativeBinary, packageRoot } from '../../src/util/paths.js';
import { layerFromTar } from '../helpers/test-images.js';
import { encodeUnpackOps, fingerprint, hostileTar, makeCanaryTree, type HostileEntry, type UnpackOp } from '../helpers/hostile-tar.js';

let host: string;
let outside: string;
let canary: Record<string, unknown>;
let n = 0;

// A fresh host and canary per test, so one escape cannot taint the next test's verdict.
beforeEach(async () => {
  host = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-hostile-'));
  outside = path.join(host, 'outside');
  await makeCanaryTree(outside);
  canary = fingerprint(outside);
});

/** After each test: the canary unchanged and nothing but layer dirs and files next to it. */
afterEach(async () => {
  try {
    assert.deepEqual(fingerprint(outside), canary, 'the tree outside the layer is untouched');
    const strays = (await fs.readdir(host)).filter((e) => e !== 'outside' && !/^(target|layer)-\d+$/.test(e));
    assert.deepEqual(strays, [], 'nothing created next to the layer');
  } finally {
    await fs.rm(host, { recursive: true, force: true });
  }
});

type Outcome = { refused: RegExp } | { failed: RegExp } | { neutralised: (target: string) => Promise<void> | void };

async function unpack(entries: HostileEntry[]): Promise<{ target: string; result: Promise<unknown> }> {
  const i = n++;
  const target = path.join(host, `target-${i}`);
  await fs.mkdir(target);
  const layer = await layerFromTar(await hostileTar(entries), 'gzip');
  const file = path.join(host, `layer-${i}`);
  await fs.writeFile(file, layer.bytes);
  return { target, result: applyLayer(file, layer.mediaType, target) };
}

async function expectOutcome(entries: HostileEntry[], outcome: Outcome): Promise<void> {
  const { target, result } = await unpack(entries);
  if ('refused' in outcome) {
    await assert.rejects(result, (e: Error) => {
      assert.equal(e.name, 'LayerRefusedError', e.message);
      assert.match(e.message, outcome.refused);
      return true;
    });
  } else if ('failed' in outcome) {
    await assert.rejects(result, outcome.failed);
  } else {
    await result;
    await outcome.neutralised(target);
  }
  assert.deepEqual(fingerprint(outside), canary, `host untouched by ${JSON.stringify(entries.map((e) => e.name).slice(-3))}`);
}

const isSymlink = (rel: string) => async (target: string) => assert.ok((await fs.lstat(path.join(target, rel))).isSymbolicLink(), `${rel} is the symlink`);
const xattrPax = (name: string, value: string | Buffer) => ({ [`SCHILY.xattr.${name}`]: value });
/** dirs a, a/b, ... down to depth, and the path at that depth. */
function dirsTo(depth: number): { entries: HostileEntry[]; at: string } {
  const parts = ['a', 'b', 'c', 'x', 'y'].slice(0, depth);
  return { entries: parts.map((_, i) => ({ name: `${parts.slice(0, i + 1).join('/')}/`, type: 'directory' as const })), at: parts.join('/') };
}
/** The relative symlink target that reaches outside from a symlink at `at`. */
const upTo = (at: string, abs: boolean) => (abs ? outside : `${'../'.repeat(at.split('/').length)}outside`);

// ---- defect 1: work recorded for a path, the path's directory then replaced by a symlink

for (const depth of [1, 2, 3]) {
  for (const abs of [true, false]) {
    const how = `${abs ? 'absolute' : 'relative'} symlink, depth ${depth}`;
    test(`a PAX xattr recorded under a directory later replaced by a symlink stays in the layer (${how})`, async () => {
      const { entries, at } = dirsTo(depth);
      await expectOutcome(
        [
          ...entries,
          { name: `${at}/f`, content: 'in the layer', pax: xattrPax('trusted.hostile', 'pwned') },
          { name: `${at}/e`, content: 'in the layer', pax: xattrPax('security.capability', Buffer.from('0100000200200000000000000000000000000000', 'hex')) },
          { name: at, type: 'symlink', linkname: upTo(at, abs) },
        ],
        { neutralised: isSymlink(at) },
      );
    });
    test(`an opaque marker under a directory later replaced by a symlink stays in the layer (${how})`, async () => {
      const { entries, at } = dirsTo(depth);
      await expectOutcome([...entries, { name: `${at}/d/`, type: 'directory' }, { name: `${at}/d/.wh..wh..opq` }, { name: at, type: 'symlink', linkname: upTo(at, abs) }], {
        neutralised: isSymlink(at),
      });
    });
    test(`directory and node metadata recorded under a directory later replaced by a symlink stay in the layer (${how})`, async () => {
      const { entries, at } = dirsTo(depth);
      await expectOutcome(
        [
          ...entries,
          { name: `${at}/d/`, type: 'directory', mode: 0o7777, uid: 666, gid: 666, mtime: new Date('1990-01-01Z') },
          { name: `${at}/c/`, type: 'directory', mode: 0o777, uid: 666, gid: 666 },
          { name: `${at}/fifo`, type: 'fifo', mode: 0o666, uid: 666, gid: 666 },
          { name: at, type: 'symlink', linkname: upTo(at, abs) },
        ],
        { neutralised: isSymlink(at) },
      );
    });
    test(`nothing is written below a directory swapped for a symlink (${how})`, async () => {
      const { entries, at } = dirsTo(depth);
      await expectOutcome([...entries, { name: `${at}/f`, content: 'x' }, { name: at, type: 'symlink', linkname: upTo(at, abs) }, { name: `${at}/f`, content: 'pwned' }], {
        refused: /through the symlink/,
      });
    });
  }
}

for (const how of ['absolute', 'relative']) {
  test(`a symlink then a file, directory, node, whiteout, opaque marker or xattr through it is refused (${how})`, async () => {
    const link = how === 'absolute' ? outside : '../outside';
    const through: HostileEntry[] = [
      { name: 'l/f', content: 'pwned' },
      { name: 'l/new', content: 'pwned' },
      { name: 'l/d/', type: 'directory', mode: 0o777 },
      { name: 'l/d/inner', content: 'pwned' },
      { name: 'l/n', type: 'fifo' },
      { name: 'l/.wh.f' },
      { name: 'l/.wh..wh..opq' },
      { name: 'l/c/d', type: 'symlink', linkname: '/' },
    ];
    for (const e of through) {
      await expectOutcome([{ name: 'l', type: 'symlink', linkname: link }, e], { refused: /through the symlink "l"/ });
    }
  });
}

test('a symlink to a host file replaced by a file: the file is written in the layer, not through the link', async () => {
  await expectOutcome([{ name: 'y', type: 'symlink', linkname: path.join(outside, 'f') }, { name: 'y', content: 'pwned', mode: 0o4777, uid: 666 }], {
    neutralised: async (target) => assert.equal(await fs.readFile(path.join(target, 'y'), 'utf8'), 'pwned'),
  });
});

// ---- hard links

test('hard links out of the layer or through a symlink are refused', async () => {
  const cases: [HostileEntry[], RegExp][] = [
    [[{ name: 'h', type: 'link', linkname: '../outside/f' }], /'\.\.' component/],
    [[{ name: 'h', type: 'link', linkname: path.join(outside, 'f') }], /absolute path/],
    [[{ name: 'l', type: 'symlink', linkname: outside }, { name: 'h', type: 'link', linkname: 'l/f' }], /through the symlink "l"/],
    [[{ name: 'a/', type: 'directory' }, { name: 'a/f', content: 'x' }, { name: 'a', type: 'symlink', linkname: outside }, { name: 'h', type: 'link', linkname: 'a/f' }], /through the symlink "a"/],
    [[{ name: 'a/', type: 'directory' }, { name: 'a/f', content: 'x' }, { name: 'a', type: 'symlink', linkname: '../outside' }, { name: 'a/h', type: 'link', linkname: 'f' }], /through the symlink "a"/],
    [[{ name: 'h', type: 'link', linkname: 'f' }], /not a file earlier in this layer/],
    [[{ name: 'h', type: 'link', linkname: 'a/'.repeat(2100) + 'f' }], /does not exist|longer than/],
  ];
  for (const [entries, reason] of cases) await expectOutcome(entries, { refused: reason });
});

test('a hard link to a symlink that points outside links the symlink itself', async () => {
  await expectOutcome([{ name: 'l', type: 'symlink', linkname: path.join(outside, 'f') }, { name: 'h', type: 'link', linkname: 'l' }], {
    neutralised: async (target) => {
      const [l, h] = await Promise.all([fs.lstat(path.join(target, 'l')), fs.lstat(path.join(target, 'h'))]);
      assert.ok(h.isSymbolicLink());
      assert.equal(h.ino, l.ino);
    },
  });
});

// ---- names

test('".." and absolute names are refused, in names and in link names', async () => {
  const cases: [HostileEntry[], RegExp][] = [
    [[{ name: '../escaped', content: 'x' }], /'\.\.' component/],
    [[{ name: './../escaped', content: 'x' }], /'\.\.' component/],
    [[{ name: 'a/../../escaped', content: 'x' }], /'\.\.' component/],
    [[{ name: path.join(host, 'escaped'), content: 'x' }], /absolute path/],
    [[{ name: '../escaped/', type: 'directory' }], /'\.\.' component/],
    [[{ name: '../escaped', type: 'symlink', linkname: 'x' }], /'\.\.' component/],
    [[{ name: '../escaped', type: 'fifo' }], /'\.\.' component/],
    [[{ name: 'x/../.wh.escaped' }], /'\.\.' component/],
    [[{ name: 'a', content: 'x', pax: { path: '../escaped' } }], /'\.\.' component/],
  ];
  for (const [entries, reason] of cases) await expectOutcome(entries, { refused: reason });
});

test('a symlink may point anywhere: it is created, never followed', async () => {
  await expectOutcome(
    [
      { name: 'up', type: 'symlink', linkname: '../../../../../../..' },
      { name: 'abs', type: 'symlink', linkname: outside },
      { name: 'up2', type: 'symlink', linkname: '../outside/f' },
    ],
    { neutralised: async (target) => assert.equal(await fs.readlink(path.join(target, 'abs')), outside) },
  );
});

test('whiteouts that would escape are refused', async () => {
  const cases: [HostileEntry[], RegExp][] = [
    [[{ name: '.wh...' }], /whiteout of "\.\."/],
    [[{ name: 'a/.wh...' }], /whiteout of "\.\."/],
    [[{ name: '.wh..' }], /whiteout of "\."/],
    [[{ name: 'a/b/.wh..' }], /whiteout of "\."/],
    [[{ name: 'l', type: 'symlink', linkname: outside }, { name: 'l/.wh.f' }], /through the symlink "l"/],
    [[{ name: 'l', type: 'symlink', linkname: '../outside' }, { name: 'l/d/.wh.inner' }], /through the symlink "l"/],
    [[{ name: 'a/', type: 'directory' }, { name: 'a', type: 'symlink', linkname: outside }, { name: 'a/.wh..wh..opq' }], /through the symlink "a"/],
  ];
  for (const [entries, reason] of cases) await expectOutcome(entries, { refused: reason });
});

test('names longer than PATH_MAX, components longer than NAME_MAX and huge link targets are refused or fail, host untouched', async () => {
  await expectOutcome([{ name: 'a/'.repeat(2100) + 'f', content: 'x' }], { refused: /longer than 4095 bytes/ });
  await expectOutcome([{ name: 'l', type: 'symlink', linkname: 'x'.repeat(5000) }], { refused: /longer than 4095 bytes/ });
  await expectOutcome([{ name: `a/${'n'.repeat(300)}/f`, content: 'x' }], { refused: /longer than 255 bytes/ });
  await expectOutcome([{ name: 'f', content: 'x', pax: xattrPax(`trusted.${'k'.repeat(300)}`, 'v') }], { refused: /xattr name/ });
});

test('many entries, then their directory swapped for a symlink: all stay in the layer', async () => {
  const entries: HostileEntry[] = [{ name: 'many/', type: 'directory' }];
  for (let i = 0; i < 3000; i++) entries.push({ name: `many/f${i}`, content: `${i}`, mode: 0o600, uid: 666, pax: i % 100 === 0 ? xattrPax('trusted.hostile', `${i}`) : undefined });
  entries.push({ name: 'many/f', content: 'x', pax: xattrPax('trusted.hostile', 'pwned') }, { name: 'many', type: 'symlink', linkname: outside });
  await expectOutcome(entries, { neutralised: isSymlink('many') });
});

// ---- defect 2: a bad entry fails its layer, never the process

test('a symlink with an empty target is refused with a reason', async () => {
  const entries: HostileEntry[] = [{ name: 'empty', type: 'symlink', linkname: '' }];
  for (let i = 0; i < 63; i++) entries.push({ name: `s${i}`, type: 'symlink', linkname: `t${i}` });
  await expectOutcome(entries, { refused: /"empty".*empty target/ });
});

/** Applies each layer in a child Node process, as the daemon would; an unhandled rejection would end it with status 1. */
async function applyInChild(layers: HostileEntry[][]): Promise<string> {
  const jobs: { file: string; target: string; mediaType: string }[] = [];
  for (const entries of layers) {
    const layer = await layerFromTar(await hostileTar(entries), 'none');
    const file = path.join(host, `layer-${n++}`);
    const target = path.join(host, `target-${n++}`);
    await fs.writeFile(file, layer.bytes);
    await fs.mkdir(target);
    jobs.push({ file, target, mediaType: layer.mediaType });
  }
  const script = `
    const { applyLayer } = await import(${JSON.stringify(path.join(packageRoot(), 'dist/src/image/unpack.js'))});
    for (const j of ${JSON.stringify(jobs)}) {
      try { await applyLayer(j.file, j.mediaType, j.target); console.log('applied'); }
      catch (e) { console.log('rejected: ' + e.message); }
    }
    await new Promise((r) => setTimeout(r, 500)); // time for a stray background failure to surface
    console.log('still alive');`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `child exited with ${r.status}: ${r.stderr}`);
  assert.match(r.stdout, /still alive/);
  return r.stdout;
}

test('the process survives a layer whose entries fail in the background (empty symlink target, then 63 symlinks)', async () => {
  const entries: HostileEntry[] = [{ name: 'empty', type: 'symlink', linkname: '' }];
  for (let i = 0; i < 63; i++) entries.push({ name: `s${i}`, type: 'symlink', linkname: `t${i}` });
  assert.match(await applyInChild([entries]), /rejected: .*empty target/);
});

test('a failure inside corral-unpack mid-stream (an xattr the kernel refuses, more entries queued behind it) fails that layer with its reason; the process survives', async () => {
  const entries: HostileEntry[] = [{ name: 'f', content: 'x', pax: { 'SCHILY.xattr.nonsense.namespace': 'v' } }];
  for (let i = 0; i < 300; i++) entries.push({ name: `g${i}`, content: 'y'.repeat(i * 100) });
  entries.push({ name: 'big', content: Buffer.alloc(4 << 20, 1) });
  const out = await applyInChild([entries, [{ name: 'ok', content: 'fine' }]]);
  assert.match(out, /rejected: unpacking into .* failed: xattr "f": Operation not supported\napplied\n/);
});

// ---- corral-unpack alone: the guarantee does not depend on Node's checks

function runHelper(target: string, ops: UnpackOp[]): { status: number | null; report: { error?: string; escape?: boolean; done?: number } } {
  const r = spawnSync(nativeBinary('corral-unpack'), [target], { input: encodeUnpackOps([...ops, { op: 'e', path: '' }]), encoding: 'utf8' });
  return { status: r.status, report: JSON.parse(r.stdout || '{}') as { error?: string; escape?: boolean; done?: number } };
}

test('corral-unpack refuses every operation through a symlink or out of the root, whatever it is told', async () => {
  const hostile: UnpackOp[] = [
    { op: 'f', path: 's/new', data: Buffer.from('pwned') },
    { op: 'f', path: 's/f', data: Buffer.from('pwned') },
    { op: 'd', path: 's/newdir', mode: 0o777 },
    { op: 'n', path: 's/node', mode: 0o010666 },
    { op: 'l', path: 's/link', arg: '/' },
    { op: 'x', path: 's/f', arg: 'trusted.hostile', data: Buffer.from('pwned') },
    { op: 'x', path: 's/d', arg: 'trusted.overlay.opaque', data: Buffer.from('y') },
    { op: 'x', path: 'a/s/f', arg: 'trusted.hostile', data: Buffer.from('pwned') },
    { op: 'm', path: 's/d', mode: 0o7777, uid: 666, gid: 666 },
    { op: 'r', path: 's/f' },
    { op: 'r', path: 's/d' },
    { op: 'h', path: 'h', arg: 's/f' },
    { op: 'h', path: 's/h', arg: 'file' },
    { op: 'f', path: '../escaped', data: Buffer.from('pwned') },
    { op: 'f', path: `${host}/escaped`, data: Buffer.from('pwned') },
    { op: 'd', path: 'a/../../escaped' },
    { op: 'h', path: 'h', arg: '../outside/f' },
    { op: 'h', path: 'h', arg: `${outside}/f` },
    { op: 'r', path: '..' },
    { op: 'r', path: 'a/..' },
    { op: 'x', path: '..', arg: 'trusted.hostile', data: Buffer.from('pwned') },
    { op: 'm', path: '.', mode: 0o777 },
  ];
  for (const op of hostile) {
    const target = path.join(host, `target-${n++}`);
    await fs.mkdir(target);
    const setup: UnpackOp[] = [
      { op: 'f', path: 'file', data: Buffer.from('mine') },
      { op: 'd', path: 'a', mode: 0o755 },
      { op: 'l', path: 's', arg: outside },
      { op: 'l', path: 'a/s', arg: '../../outside' },
    ];
    const { status, report } = runHelper(target, [...setup, op]);
    assert.equal(status, 1, `${JSON.stringify({ ...op, data: undefined })} was refused: ${JSON.stringify(report)}`);
    assert.equal(report.escape, true, `${op.op} ${op.path}: refused as an escape, not another failure: ${JSON.stringify(report)}`);
    assert.deepEqual(fingerprint(outside), canary, `${op.op} ${op.path}: host untouched`);
  }
});

test('corral-unpack does not follow a final symlink: metadata meant for a directory fails on a symlink', async () => {
  const target = path.join(host, `target-${n++}`);
  await fs.mkdir(target);
  const { status, report } = runHelper(target, [{ op: 'l', path: 's', arg: outside }, { op: 'm', path: 's', mode: 0o7777, uid: 666, gid: 666 }]);
  assert.equal(status, 1);
  assert.match(report.error ?? '', /not a directory/);
});

test('corral-unpack removes a symlink or a tree holding symlinks without following them, and sets xattrs on a symlink itself', async () => {
  const target = path.join(host, `target-${n++}`);
  await fs.mkdir(target);
  const { status, report } = runHelper(target, [
    { op: 'd', path: 'a', mode: 0o755 },
    { op: 'l', path: 'a/s', arg: outside },
    { op: 'l', path: 'a/t', arg: '../../outside/f' },
    { op: 'l', path: 's', arg: outside },
    { op: 'x', path: 's', arg: 'trusted.on-the-link', data: Buffer.from('y') },
    { op: 'r', path: 'a' },
    { op: 'r', path: 's' },
    { op: 'r', path: 'never-there' },
  ]);
  assert.deepEqual([status, report.done], [0, 8], JSON.stringify(report));
  assert.deepEqual(await fs.readdir(target), []);
});

test('corral-unpack: a short or malformed stream fails cleanly', async () => {
  const target = path.join(host, `target-${n++}`);
  await fs.mkdir(target);
  const whole = encodeUnpackOps([{ op: 'f', path: 'f', data: Buffer.alloc(1000, 1) }]);
  for (const input of [whole.subarray(0, 20), whole.subarray(0, 500), whole, Buffer.from('garbage')]) {
    const r = spawnSync(nativeBinary('corral-unpack'), [target], { input, encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(JSON.parse(r.stdout).error as string, /input ended|unknown operation|longer than/);
    await fs.rm(path.join(target, 'f'), { force: true });
  }
});
