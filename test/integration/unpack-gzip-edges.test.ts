/**
 * The gzip edge cases of corral-unpack --layer, pinned for its decoder (ISA-L's
 * isal_inflate): the trailer's CRC32 and ISIZE are checked, the header's optional fields
 * (FEXTRA, FNAME, FCOMMENT, FHCRC) are read and its CRC checked, reserved flags are refused,
 * several members make one tar, and a stream cut anywhere (header, data, trailer) or
 * followed by garbage fails the layer as LayerCorruptError. A header that reaches the
 * helper's stdin a byte at a time (a slow download) unpacks like one read whole.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { crc32, deflateRawSync, gzipSync } from 'node:zlib';
import { setTimeout as sleep } from 'node:timers/promises';
import { applyLayer } from '../../src/image/unpack.js';
import { nativeBinary } from '../../src/util/paths.js';
import { makeTar, sha256, MT, type TarEntry } from '../helpers/test-images.js';

let work: string;
let n = 0;
let tar: Buffer;

const entries: TarEntry[] = Array.from({ length: 40 }, (_, i) => ({ path: `d/f${i}`, content: `file ${i} `.repeat(40 + i * 7) }));

before(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-gzip-edges-'));
  tar = await makeTar(entries);
});

after(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

async function emptyDir(): Promise<string> {
  const d = path.join(work, `dir-${n++}`);
  await fs.mkdir(d);
  return d;
}

async function unpack(bytes: Buffer) {
  const blob = path.join(work, `blob-${n++}`);
  await fs.writeFile(blob, bytes);
  const dir = await emptyDir();
  return { dir, applied: await applyLayer(blob, MT.ociLayerGzip, dir) };
}

async function fails(bytes: Buffer, reason: RegExp): Promise<void> {
  await assert.rejects(unpack(bytes), (e: Error) => {
    assert.equal(e.name, 'LayerCorruptError', e.message);
    assert.match(e.message, reason);
    return true;
  });
}

interface HeaderFields {
  extra?: Buffer;
  name?: string;
  comment?: string;
  /** Write FHCRC; `badHcrc` writes a wrong one. */
  hcrc?: boolean;
  badHcrc?: boolean;
  /** Extra flag bits (the reserved ones: 0x20, 0x40, 0x80). */
  flags?: number;
}

/** One gzip member of `data`, written by hand so the header can hold every optional field. */
function gzipMember(data: Buffer, h: HeaderFields = {}): Buffer {
  const flags = (h.hcrc ? 0x02 : 0) | (h.extra ? 0x04 : 0) | (h.name !== undefined ? 0x08 : 0) | (h.comment !== undefined ? 0x10 : 0) | (h.flags ?? 0);
  const parts: Buffer[] = [Buffer.from([0x1f, 0x8b, 8, flags, 0x78, 0x56, 0x34, 0x12, 0, 3])];
  if (h.extra) {
    const len = Buffer.alloc(2);
    len.writeUInt16LE(h.extra.length);
    parts.push(len, h.extra);
  }
  if (h.name !== undefined) parts.push(Buffer.from(`${h.name}\0`, 'latin1'));
  if (h.comment !== undefined) parts.push(Buffer.from(`${h.comment}\0`, 'latin1'));
  if (h.hcrc) {
    const crc = Buffer.alloc(2);
    crc.writeUInt16LE((crc32(Buffer.concat(parts)) & 0xffff) ^ (h.badHcrc ? 0x0101 : 0));
    parts.push(crc);
  }
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc32(data), 0);
  trailer.writeUInt32LE(data.length >>> 0, 4);
  return Buffer.concat([...parts, deflateRawSync(data), trailer]);
}

const allFields: HeaderFields = { extra: Buffer.from('AB\x04\x00wxyz', 'latin1'), name: 'layer.tar', comment: 'made by hand', hcrc: true };

test('a layer whose gzip header has FEXTRA, FNAME, FCOMMENT and FHCRC unpacks, in one member or split in two', async () => {
  const one = await unpack(gzipMember(tar, allFields));
  assert.equal(one.applied.diffId, sha256(tar));
  assert.equal(await fs.readFile(path.join(one.dir, 'd/f39'), 'utf8'), 'file 39 '.repeat(40 + 39 * 7));
  const cut = 512 * 5 + 77;
  const two = await unpack(Buffer.concat([gzipMember(tar.subarray(0, cut), allFields), gzipMember(tar.subarray(cut), { name: 'second' })]));
  assert.equal(two.applied.diffId, sha256(tar));
  assert.equal(two.applied.size, tar.length);
});

test('a trailer whose CRC32 does not match the data fails the layer', async () => {
  const gz = gzipSync(tar);
  const bad = Buffer.from(gz);
  bad[bad.length - 8] ^= 0x01;
  await fails(bad, /gzip: incorrect data check/);
});

test('a trailer whose ISIZE does not match the data fails the layer (the CRC32 being right)', async () => {
  const gz = gzipSync(tar);
  const bad = Buffer.from(gz);
  bad.writeUInt32LE((tar.length + 512) >>> 0, bad.length - 4);
  await fails(bad, /gzip: incorrect (data|length) check/);
});

test('a wrong header CRC (FHCRC) and reserved header flags fail the layer, as zlib refuses them', async () => {
  await fails(gzipMember(tar, { ...allFields, badHcrc: true }), /gzip: header crc mismatch/);
  for (const flag of [0x20, 0x40, 0x80]) await fails(gzipMember(tar, { flags: flag }), /gzip: unknown header flags set/);
});

test('a gzip stream cut in its header, its data or its trailer fails as truncated', async () => {
  const gz = gzipMember(tar, allFields);
  for (const keep of [3, 10, 14, 25, Math.floor(gz.length / 2), gz.length - 8, gz.length - 5, gz.length - 1]) {
    await fails(gz.subarray(0, keep), /unexpected end of file/);
  }
  // The second member cut too: the first one ended well, the layer did not.
  const cut = 512 * 3;
  const second = gzipSync(tar.subarray(cut));
  await fails(Buffer.concat([gzipSync(tar.subarray(0, cut)), second.subarray(0, second.length - 3)]), /unexpected end of file/);
});

test('bytes after the last gzip member fail the layer, whether garbage, zeros or half a gzip header', async () => {
  const two = Buffer.concat([gzipSync(tar.subarray(0, 1024)), gzipSync(tar.subarray(1024))]);
  await fails(Buffer.concat([two, Buffer.from('garbage')]), /data after the end of the compressed stream/);
  await fails(Buffer.concat([two, Buffer.alloc(512)]), /data after the end of the compressed stream/);
  await fails(Buffer.concat([two, Buffer.from([0x1f])]), /unexpected end of file/);
  await fails(Buffer.concat([two, Buffer.from([0x1f, 0x8b, 8])]), /unexpected end of file/);
  await fails(Buffer.concat([two, Buffer.from([0x1f, 0x00, 8, 0, 0, 0, 0, 0, 0, 3])]), /gzip: incorrect header check/);
});

/** Runs corral-unpack --layer - on `bytes`, the first `slowly` of them written one at a time with a pause between. */
async function unpackFromStdin(bytes: Buffer, slowly: number): Promise<{ code: number | null; verdict: Record<string, unknown> }> {
  const dir = await emptyDir();
  const child = spawn(nativeBinary('corral-unpack'), ['--layer', '-', dir], { stdio: ['pipe', 'pipe', 'pipe'] });
  try {
    const out: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stdin.on('error', () => {}); // a helper that failed early closes its end
    const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    for (let i = 0; i < slowly; i++) {
      child.stdin.write(bytes.subarray(i, i + 1));
      await sleep(2); // the helper, waiting in read(), gets this byte alone
    }
    child.stdin.end(bytes.subarray(slowly));
    const code = await closed;
    return { code, verdict: JSON.parse(Buffer.concat(out).toString('utf8')) as Record<string, unknown> };
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

test('gzip headers that reach stdin a byte at a time (every optional field, two members) unpack as when read whole', async () => {
  const cut = 512 * 4;
  const first = gzipMember(tar.subarray(0, cut), allFields);
  const second = gzipMember(tar.subarray(cut), allFields);
  const bytes = Buffer.concat([first, second]);
  // Byte by byte: the first member's header; then its data and trailer and the second member's header.
  const whole = await unpackFromStdin(bytes, 40);
  assert.equal(whole.code, 0, JSON.stringify(whole.verdict));
  assert.equal(whole.verdict.diffId, sha256(tar));
  assert.equal(whole.verdict.inputDigest, sha256(bytes));
  const across = await unpackFromStdin(bytes, first.length + 40);
  assert.equal(across.code, 0, JSON.stringify(across.verdict));
  assert.equal(across.verdict.diffId, sha256(tar));
  // And a wrong header CRC is still found when the header comes a byte at a time.
  const bad = await unpackFromStdin(gzipMember(tar, { ...allFields, badHcrc: true }), 40);
  assert.equal(bad.code, 1);
  assert.match(String(bad.verdict.corrupt), /header crc mismatch/);
});
