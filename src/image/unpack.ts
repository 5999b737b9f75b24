/**
 * Unpacking one image layer into an empty directory that overlayfs later uses as a
 * lower layer. tar-stream parses the archive; what no tar library does is written here:
 *
 * - OCI whiteouts become overlayfs ones: `.wh.NAME` → a 0/0 character device NAME,
 *   `.wh..wh..opq` → the `trusted.overlay.opaque=y` xattr on its directory;
 * - escape checks: an entry (or hard-link target) with a `..` component, an absolute
 *   name, or a parent that is a symlink is refused, and the whole layer with it (the
 *   caller unpacks into a temporary directory it removes on failure, so nothing is left);
 * - the directory itself is only ever touched by one corral-unpack helper per layer
 *   (native/unpack.c), fed a stream of operations: it resolves every path beneath the
 *   layer root with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | ...) and never
 *   follows a final symlink, so no order of entries (a directory replaced by a symlink
 *   after its xattrs or metadata were recorded ...) can reach a file outside the layer.
 *
 * Modes (with setuid/setgid/sticky), numeric owners, mtimes, symlinks and hard links
 * are kept. The uncompressed stream is hashed on the way, giving the layer's diff ID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createReadStream, promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tarStream from 'tar-stream';
import { CorralError } from '../errors.js';
import { nativeBinary } from '../util/paths.js';
import { sha256Counter } from '../util/hash-stream.js';

export interface AppliedLayer {
  /** "sha256:<hex>" of the uncompressed tar. */
  diffId: string;
  /** Bytes of the uncompressed tar. */
  size: number;
}

/** A layer whose content Corral will not unpack (an escape, a name Linux cannot hold ...): bad input, 'invalid-argument'. */
export class LayerRefusedError extends CorralError {
  constructor(entry: string, reason: string) {
    super('invalid-argument', `refusing layer entry ${JSON.stringify(entry)}: ${reason}`);
    this.name = 'LayerRefusedError';
  }
}

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';
const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';
const PAX_XATTR_PREFIX = 'SCHILY.xattr.';

const READ_CHUNK = 1 << 20;
const GUNZIP_CHUNK = 256 << 10;

const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const S_IFIFO = 0o010000;

/** Unpacks the layer blob `layerFile` (gzip, zstd or plain tar) into the empty directory `targetDir`. */
export async function applyLayer(layerFile: string, mediaType: string, targetDir: string): Promise<AppliedLayer> {
  if (!/\btar\b|\.tar/.test(mediaType) || /encrypted/.test(mediaType)) {
    throw new Error(`unsupported layer media type ${mediaType}`);
  }
  preserveBinaryPaxXattrs();
  const root = path.resolve(targetDir);
  const hasher = sha256Counter();
  const { stream: tarBytes, finished: decompressed } = await openDecompressed(layerFile);
  const extract = tarStream.extract();
  const fed = pipeline(tarBytes, hasher.stream, extract as unknown as NodeJS.WritableStream);
  // If the consumer below stops early, the feeding pipeline's error is the one to report.
  fed.catch(() => {});
  const helper = new UnpackHelper(root);
  const writer = new LayerWriter(helper);
  try {
    for await (const entry of extract) {
      await writer.apply(entry.header, entry as unknown as Readable);
    }
    await fed;
    await decompressed;
    await writer.finish();
  } catch (e) {
    tarBytes.destroy();
    await helper.abort(); // gone before the caller removes the directory
    if (e instanceof LayerRefusedError || e instanceof UnpackHelperError) throw e;
    // A stream error (corrupt gzip, truncated tar): the feeding pipeline's reason is the one to report.
    const fedError = await fed.then(() => undefined, (err: Error) => err);
    throw fedError ?? e;
  }
  return { diffId: hasher.digest(), size: hasher.size() };
}

/** The uncompressed tar stream of a layer blob, by its first bytes (media types lie). */
async function openDecompressed(file: string): Promise<{ stream: Readable; finished: Promise<void> }> {
  const head = Buffer.alloc(4);
  const fh = await fs.open(file, 'r');
  try {
    await fh.read(head, 0, 4, 0);
  } finally {
    await fh.close();
  }
  if (head[0] === 0x1f && head[1] === 0x8b) {
    // Large reads and output chunks: with zlib's 16 KiB default, per-chunk overhead costs 3-4x.
    const gunzip = createGunzip({ chunkSize: GUNZIP_CHUNK });
    createReadStream(file, { highWaterMark: READ_CHUNK }).on('error', (e) => gunzip.destroy(e)).pipe(gunzip);
    return { stream: gunzip, finished: Promise.resolve() };
  }
  if (head.readUInt32LE(0) === 0xfd2fb528) {
    // Node 20 has no zstd; Debian's zstd tool decompresses as fast as anything would.
    const child = spawn('zstd', ['-d', '-c', '-q', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const stderr: Buffer[] = [];
    child.stderr.on('data', (b: Buffer) => stderr.push(b));
    const finished = new Promise<void>((resolve, reject) => {
      child.on('error', (e) => reject(new Error(`zstd layer: cannot run zstd (apt-get install zstd): ${e.message}`)));
      child.on('close', (code, signal) => {
        if (code === 0) resolve();
        else reject(new Error(`zstd layer: zstd ${signal ? `killed by ${signal}` : `exit status ${code}`}: ${Buffer.concat(stderr).toString().trim()}`));
      });
    });
    finished.catch(() => {});
    return { stream: child.stdout, finished };
  }
  return { stream: createReadStream(file, { highWaterMark: READ_CHUNK }), finished: Promise.resolve() };
}

type EntryKind = 'dir' | 'file' | 'symlink' | 'node';

/** Linux's PATH_MAX and NAME_MAX: longer names cannot be created, so they are refused up front. */
const PATH_BYTES_MAX = 4095;
const NAME_BYTES_MAX = 255;

/**
 * Decides what each entry of one layer means and sends the resulting operations to the
 * layer's UnpackHelper, the only code that touches the directory. The layer starts as an
 * empty directory, so an in-memory map of what this layer created is the whole truth
 * about it: the checks here consult it (no lstat per entry) to refuse escapes with a clear
 * reason. They are not what keeps the host safe: the helper resolves every path beneath
 * the root without following symlinks, whatever order the entries come in.
 */
class LayerWriter {
  private readonly kinds = new Map<string, EntryKind>([['', 'dir']]);
  /** Directory metadata, applied once every entry exists (creating entries changes a directory's mtime). */
  private readonly dirMeta = new Map<string, Meta>();

  constructor(private readonly helper: UnpackHelper) {}

  async apply(h: tarStream.Header, body: Readable): Promise<void> {
    try {
      await this.applyEntry(h, body);
      await this.helper.settle(); // bounds what is buffered for the helper, and surfaces its failure
    } finally {
      body.resume(); // a skipped or failed entry must still be drained for the next one to come
    }
  }

  private async applyEntry(h: tarStream.Header, body: Readable): Promise<void> {
    const rel = checkedRelative(h.name);
    if (rel === '') return; // the layer root itself: the snapshot dir keeps its own attributes
    const parent = path.posix.dirname(rel) === '.' ? '' : path.posix.dirname(rel);
    const base = path.posix.basename(rel);
    const meta: Meta = { mode: (h.mode ?? 0o644) & 0o7777, uid: h.uid ?? 0, gid: h.gid ?? 0, mtime: h.mtime ?? new Date(0) };

    if (base === OPAQUE_MARKER) {
      this.ensureDir(parent, h.name);
      this.helper.xattr(parent, OVERLAY_OPAQUE_XATTR, Buffer.from('y'));
      return;
    }
    if (base.startsWith(WHITEOUT_PREFIX)) {
      if (base.startsWith(`${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}`)) return; // AUFS metadata (.wh..wh.plnk ...): no overlay meaning
      const hiddenBase = base.slice(WHITEOUT_PREFIX.length);
      if (hiddenBase === '' || hiddenBase === '.' || hiddenBase === '..') {
        throw new LayerRefusedError(h.name, `a whiteout of ${JSON.stringify(hiddenBase)} would remove the directory itself or its parent`);
      }
      const hidden = parent === '' ? hiddenBase : `${parent}/${hiddenBase}`;
      this.ensureDir(parent, h.name);
      this.clear(hidden);
      this.helper.mknod(hidden, S_IFCHR, 0, 0, { mode: 0, uid: 0, gid: 0, mtime: meta.mtime });
      this.kinds.set(hidden, 'node');
      return;
    }

    this.ensureDir(parent, h.name);
    if (h.type === 'directory') {
      if (this.kinds.get(rel) !== 'dir') {
        this.clear(rel);
        this.helper.mkdir(rel, 0o700);
        this.kinds.set(rel, 'dir');
      }
      this.dirMeta.set(rel, meta);
    } else {
      switch (h.type) {
        case 'file':
        case 'contiguous-file': {
          this.clear(rel);
          this.kinds.set(rel, 'file');
          await this.helper.file(rel, meta, h.size ?? 0, body);
          break;
        }
        case 'symlink':
          // Linux cannot make a symlink to "": refused here with a reason, not failed in the helper.
          if (!h.linkname) throw new LayerRefusedError(h.name, 'a symlink with an empty target');
          if (Buffer.byteLength(h.linkname) > PATH_BYTES_MAX) throw new LayerRefusedError(h.name, `a symlink target longer than ${PATH_BYTES_MAX} bytes`);
          this.clear(rel);
          this.kinds.set(rel, 'symlink');
          this.helper.symlink(rel, h.linkname, meta);
          break;
        case 'link': {
          this.clear(rel); // first: a link to what it replaces (or to something under it) is refused below
          const target = checkedRelative(h.linkname ?? '');
          if (target === '') throw new LayerRefusedError(h.name, 'a hard link to the layer root');
          const targetParent = path.posix.dirname(target);
          if (targetParent !== '.') this.ensureDir(targetParent, h.name, false);
          const kind = this.kinds.get(target);
          if (kind === undefined || kind === 'dir') {
            throw new LayerRefusedError(h.name, `its hard-link target ${JSON.stringify(h.linkname)} is not a file earlier in this layer`);
          }
          this.helper.link(rel, target);
          this.kinds.set(rel, kind);
          break;
        }
        case 'character-device':
        case 'block-device':
        case 'fifo': {
          const type = h.type === 'fifo' ? S_IFIFO : h.type === 'block-device' ? S_IFBLK : S_IFCHR;
          this.clear(rel);
          this.helper.mknod(rel, type | meta.mode, h.devmajor ?? 0, h.devminor ?? 0, meta);
          this.kinds.set(rel, 'node');
          break;
        }
        default:
          throw new LayerRefusedError(h.name, `unsupported tar entry type ${h.type}`);
      }
    }
    // After the entry's own chown (which clears security.capability).
    for (const [key, value] of Object.entries(h.pax ?? {})) {
      if (!key.startsWith(PAX_XATTR_PREFIX)) continue;
      const name = key.slice(PAX_XATTR_PREFIX.length);
      // overlayfs's own xattrs in a layer would redirect lookups; only Corral sets those.
      if (name.startsWith('trusted.overlay.')) continue;
      if (name === '' || Buffer.byteLength(name) > NAME_BYTES_MAX) throw new LayerRefusedError(h.name, `an xattr name of ${Buffer.byteLength(name)} bytes`);
      const bytes = Buffer.from(String(value), 'latin1');
      if (bytes.length > XATTR_VALUE_MAX) throw new LayerRefusedError(h.name, `the xattr ${name} is larger than ${XATTR_VALUE_MAX} bytes`);
      this.helper.xattr(rel, name, bytes);
    }
  }

  /** Directory metadata (deepest first does not matter: no entry is created any more), then the helper's verdict. */
  async finish(): Promise<void> {
    for (const [rel, m] of this.dirMeta) this.helper.dirMeta(rel, m);
    await this.helper.end();
  }

  /** Makes rel (and its parents) a directory if missing, 0755 like containerd; refuses a symlink or file in the way. */
  private ensureDir(rel: string, entryName: string, create = true): void {
    if (this.kinds.get(rel) === 'dir') return;
    let cur = '';
    for (const part of rel.split('/')) {
      cur = cur === '' ? part : `${cur}/${part}`;
      const kind = this.kinds.get(cur);
      if (kind === 'dir') continue;
      if (kind === 'symlink') throw new LayerRefusedError(entryName, `its path goes through the symlink ${JSON.stringify(cur)}`);
      if (kind !== undefined) throw new LayerRefusedError(entryName, `its parent ${JSON.stringify(cur)} is not a directory`);
      if (!create) throw new LayerRefusedError(entryName, `${JSON.stringify(cur)} does not exist in this layer`);
      this.helper.mkdir(cur, 0o755);
      this.kinds.set(cur, 'dir');
    }
  }

  /**
   * Removes whatever an earlier entry of this layer put at rel, so a later entry replaces
   * it, and forgets everything recorded under it: no deferred work outlives its path.
   */
  private clear(rel: string): void {
    if (!this.kinds.has(rel)) return;
    const under = (p: string) => p === rel || p.startsWith(`${rel}/`);
    for (const m of [this.kinds, this.dirMeta] as Map<string, unknown>[]) {
      for (const k of [...m.keys()]) if (under(k)) m.delete(k);
    }
    this.helper.remove(rel);
  }
}

interface Meta {
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
}

const XATTR_VALUE_MAX = 65536;
/** Operations are staged in a buffer of this size and written to the helper in one go. */
const STAGE_BYTES = 256 << 10;
/** File data chunks at least this big are written to the helper as they are, not copied. */
const DIRECT_WRITE_MIN = 64 << 10;
const HEADER_BYTES = 52;

/** The helper reported a failure that is not a refusal (a full disk, a missing /proc ...). */
export class UnpackHelperError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnpackHelperError';
  }
}

/**
 * One corral-unpack process (native/unpack.c) applying a layer's operations to its
 * directory: a framed stream on its stdin (file data included), one verdict on its stdout
 * at the end. Operations are not acknowledged one by one: the helper stops at the first
 * failure and says which, and settle() turns its early exit into that error.
 */
class UnpackHelper {
  private readonly child: ChildProcess;
  private readonly stdin: Writable;
  private readonly exited: Promise<void>;
  private exitedEarly = false;
  private readonly stdout: Buffer[] = [];
  private readonly stderr: Buffer[] = [];
  private code: number | null = null;
  private signal: NodeJS.Signals | null = null;
  private spawnError: Error | undefined;
  private stage = Buffer.allocUnsafe(STAGE_BYTES);
  private staged = 0;
  private needDrain = false;

  constructor(private readonly root: string) {
    this.child = spawn(nativeBinary('corral-unpack'), [root], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.stdin = this.child.stdin!;
    // A helper that died makes writes fail with EPIPE; its own report says why.
    this.stdin.on('error', () => {});
    this.child.stdout!.on('data', (b: Buffer) => this.stdout.push(b));
    this.child.stderr!.on('data', (b: Buffer) => this.stderr.push(b));
    this.exited = new Promise<void>((resolve) => {
      this.child.on('error', (e) => {
        this.spawnError = e;
        this.exitedEarly = true;
        resolve();
      });
      this.child.on('close', (code, signal) => {
        this.code = code;
        this.signal = signal;
        this.exitedEarly = true;
        resolve();
      });
    });
  }

  mkdir(rel: string, mode: number): void {
    this.op('d', rel, '', { mode, uid: 0, gid: 0, mtime: EPOCH }, 0, 0, 0);
  }
  symlink(rel: string, target: string, m: Meta): void {
    this.op('l', rel, target, m, 0, 0, 0);
  }
  link(rel: string, target: string): void {
    this.op('h', rel, target, NO_META, 0, 0, 0);
  }
  mknod(rel: string, mode: number, major: number, minor: number, m: Meta): void {
    this.op('n', rel, '', { ...m, mode }, major, minor, 0);
  }
  remove(rel: string): void {
    this.op('r', rel, '', NO_META, 0, 0, 0);
  }
  dirMeta(rel: string, m: Meta): void {
    this.op('m', rel, '', m, 0, 0, 0);
  }
  xattr(rel: string, name: string, value: Buffer): void {
    this.op('x', rel, name, NO_META, 0, 0, value.length);
    this.push(value);
  }

  /** A regular file: its header, then its body streamed through (never buffered whole). */
  async file(rel: string, m: Meta, size: number, body: Readable): Promise<void> {
    this.op('f', rel, '', m, 0, 0, size);
    let sent = 0;
    for await (const chunk of body) {
      const b = chunk as Buffer;
      if (sent + b.length > size) throw new LayerRefusedError(rel, 'more data than its header says');
      this.push(b);
      sent += b.length;
      if (this.staged === 0) await this.settle();
    }
    if (sent !== size) throw new LayerRefusedError(rel, `${size - sent} bytes of its data are missing`);
  }

  /** Waits while the helper's pipe is full; throws the helper's failure if it stopped. */
  async settle(): Promise<void> {
    if (this.needDrain && !this.exitedEarly) {
      await new Promise<void>((resolve) => {
        const done = () => {
          this.stdin.off('drain', done);
          this.stdin.off('close', done);
          resolve();
        };
        this.stdin.on('drain', done);
        this.stdin.on('close', done);
        void this.exited.then(done);
      });
    }
    this.needDrain = false;
    if (this.exitedEarly) throw this.failure();
  }

  /** Sends END and waits for the verdict: resolves only if every operation succeeded. */
  async end(): Promise<void> {
    this.op('e', '', '', NO_META, 0, 0, 0);
    this.flushStage();
    this.stdin.end();
    await this.exited;
    if (this.code !== 0 || this.spawnError) throw this.failure();
  }

  /** Stops the helper (after a failure on the Node side) and waits until it is gone. */
  async abort(): Promise<void> {
    if (!this.exitedEarly) this.child.kill('SIGKILL');
    await this.exited;
  }

  private failure(): Error {
    if (this.spawnError) return new UnpackHelperError(`cannot run ${nativeBinary('corral-unpack')} (build Corral: npm run build): ${this.spawnError.message}`);
    const out = Buffer.concat(this.stdout).toString('utf8').trim();
    try {
      const r = JSON.parse(out) as { error: string; op: string; path: string; escape?: boolean };
      if (r.escape) return new LayerRefusedError(r.path, `${r.op}: ${r.error}`);
      return new UnpackHelperError(`unpacking into ${this.root} failed: ${r.op} ${JSON.stringify(r.path)}: ${r.error}`);
    } catch {
      const how = this.signal ? `killed by ${this.signal}` : `exit status ${this.code}`;
      const detail = (out || Buffer.concat(this.stderr).toString('utf8')).trim();
      return new UnpackHelperError(`unpack helper for ${this.root} stopped (${how})${detail ? `: ${detail}` : ''}`);
    }
  }

  private op(code: string, rel: string, arg: string, m: Meta, major: number, minor: number, dataLen: number): void {
    const pathLen = Buffer.byteLength(rel);
    const argLen = Buffer.byteLength(arg);
    if (pathLen > PATH_BYTES_MAX) throw new LayerRefusedError(rel, `a path longer than ${PATH_BYTES_MAX} bytes`);
    if (argLen > PATH_BYTES_MAX) throw new LayerRefusedError(rel, `a link target longer than ${PATH_BYTES_MAX} bytes`);
    const need = HEADER_BYTES + pathLen + argLen;
    if (this.staged + need > STAGE_BYTES) this.flushStage();
    const b = this.stage;
    let at = this.staged;
    const ms = m.mtime.getTime();
    const sec = Math.floor(ms / 1000);
    b.fill(0, at, at + 4);
    b[at] = code.charCodeAt(0);
    b.writeUInt32LE(m.mode >>> 0, at + 4);
    b.writeUInt32LE(m.uid >>> 0, at + 8);
    b.writeUInt32LE(m.gid >>> 0, at + 12);
    b.writeBigInt64LE(BigInt(Number.isFinite(sec) ? sec : 0), at + 16);
    b.writeUInt32LE(Number.isFinite(sec) ? (ms - sec * 1000) * 1_000_000 : 0, at + 24);
    b.writeUInt32LE(major >>> 0, at + 28);
    b.writeUInt32LE(minor >>> 0, at + 32);
    b.writeUInt32LE(pathLen, at + 36);
    b.writeUInt32LE(argLen, at + 40);
    b.writeBigUInt64LE(BigInt(dataLen), at + 44);
    at += HEADER_BYTES;
    at += b.write(rel, at, 'utf8');
    at += b.write(arg, at, 'utf8');
    this.staged = at;
  }

  private push(data: Buffer): void {
    if (data.length >= DIRECT_WRITE_MIN) {
      this.flushStage();
      this.write(data);
      return;
    }
    if (this.staged + data.length > STAGE_BYTES) this.flushStage();
    data.copy(this.stage, this.staged);
    this.staged += data.length;
  }

  private flushStage(): void {
    if (this.staged === 0) return;
    this.write(this.stage.subarray(0, this.staged));
    this.stage = Buffer.allocUnsafe(STAGE_BYTES); // the written one belongs to the stream now
    this.staged = 0;
  }

  private write(b: Buffer): void {
    if (this.exitedEarly) return;
    if (!this.stdin.write(b)) this.needDrain = true;
  }
}

const EPOCH = new Date(0);
const NO_META: Meta = { mode: 0, uid: 0, gid: 0, mtime: EPOCH };

/**
 * A tar entry name as a path relative to the layer root ('' for the root itself):
 * `./` prefixes and trailing slashes dropped; absolute names, `..` and names Linux
 * cannot hold (longer than PATH_MAX, a component longer than NAME_MAX) refused.
 */
export function checkedRelative(name: string): string {
  if (name.includes('\0')) throw new LayerRefusedError(name, 'a NUL byte in the name');
  if (name.startsWith('/')) throw new LayerRefusedError(name, 'an absolute path would land outside the layer');
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new LayerRefusedError(name, "a '..' component would land outside the layer");
  const rel = parts.join('/');
  // Linux refuses longer names anyway; refusing here gives the reason and creates nothing first.
  if (Buffer.byteLength(rel) > PATH_BYTES_MAX) throw new LayerRefusedError(name.slice(0, 200), `a name longer than ${PATH_BYTES_MAX} bytes`);
  if (parts.some((p) => Buffer.byteLength(p) > NAME_BYTES_MAX)) throw new LayerRefusedError(name.slice(0, 200), `a path component longer than ${NAME_BYTES_MAX} bytes`);
  return rel;
}

let paxPatched = false;
/**
 * tar-stream decodes PAX records as UTF-8, which mangles binary xattr values such as
 * security.capability. Its extractor looks the decoder up on its headers module at each
 * use, so decoding `SCHILY.xattr.*` values as latin1 (byte for byte) here keeps them.
 */
function preserveBinaryPaxXattrs(): void {
  if (paxPatched) return;
  paxPatched = true;
  const require = createRequire(import.meta.url);
  const headersPath = path.join(path.dirname(require.resolve('tar-stream')), 'headers.js');
  const headers = require(headersPath) as { decodePax?: (buf: Buffer) => Record<string, string> };
  if (typeof headers.decodePax !== 'function') {
    throw new Error(`tar-stream changed: ${headersPath} has no decodePax to extend; binary xattrs would be lost`);
  }
  headers.decodePax = (buf: Buffer) => {
    const out: Record<string, string> = {};
    let rest = buf;
    while (rest.length > 0) {
      const space = rest.indexOf(0x20);
      const len = space > 0 ? parseInt(rest.subarray(0, space).toString('ascii'), 10) : NaN;
      if (!(len > space + 1) || len > rest.length) break;
      const record = rest.subarray(space + 1, len - 1); // drop the trailing newline
      const eq = record.indexOf(0x3d);
      if (eq < 0) break;
      const key = record.subarray(0, eq).toString('utf8');
      out[key] = record.subarray(eq + 1).toString(key.startsWith(PAX_XATTR_PREFIX) ? 'latin1' : 'utf8');
      rest = rest.subarray(len);
    }
    return out;
  };
}
