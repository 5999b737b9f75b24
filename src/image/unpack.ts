/**
 * Unpacking one image layer into an empty directory that overlayfs later uses as a
 * lower layer. tar-stream parses the archive; what no tar library does is written here:
 *
 * - OCI whiteouts become overlayfs ones: `.wh.NAME` → a 0/0 character device NAME,
 *   `.wh..wh..opq` → the `trusted.overlay.opaque=y` xattr on its directory;
 * - escape checks: an entry (or hard-link target) with a `..` component, an absolute
 *   name, or a parent that is a symlink is refused, and the whole layer with it (the
 *   caller unpacks into a temporary directory it removes on failure, so nothing is left);
 * - device nodes, fifos and xattrs (Node has no mknod or setxattr) are made in one batch
 *   by the corral-fsnodes helper.
 *
 * Modes (with setuid/setgid/sticky), numeric owners, mtimes, symlinks and hard links
 * are kept. The uncompressed stream is hashed on the way, giving the layer's diff ID.
 */
import { spawn } from 'node:child_process';
import { createReadStream, createWriteStream, promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tarStream from 'tar-stream';
import { execFile } from '../util/exec.js';
import { nativeBinary } from '../util/paths.js';
import { sha256Counter } from '../util/hash-stream.js';

export interface AppliedLayer {
  /** "sha256:<hex>" of the uncompressed tar. */
  diffId: string;
  /** Bytes of the uncompressed tar. */
  size: number;
}

export class LayerRefusedError extends Error {
  constructor(entry: string, reason: string) {
    super(`refusing layer entry ${JSON.stringify(entry)}: ${reason}`);
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
  const writer = new LayerWriter(root);
  try {
    for await (const entry of extract) {
      await writer.apply(entry.header, entry as unknown as Readable);
    }
    await fed;
    await decompressed;
    await writer.finish();
  } catch (e) {
    tarBytes.destroy();
    const fedError = await fed.then(() => undefined, (err: Error) => err);
    throw fedError && !(e instanceof LayerRefusedError) ? fedError : e;
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

type FsnodeOp = { op: 'mknod'; path: string; mode: number; major: number; minor: number } | { op: 'xattr'; path: string; name: string; value: Buffer };

type EntryKind = 'dir' | 'file' | 'symlink' | 'node';

/** Files up to this size are buffered and written off the tar stream's critical path. */
const DEFERRED_FILE_MAX = 1 << 20;
/** Bound on buffered bytes waiting to be written. */
const DEFERRED_BYTES_MAX = 64 << 20;

/**
 * Writes the entries of one layer under root. The layer starts as an empty directory,
 * so an in-memory map of what this layer created is the whole truth about it: the escape
 * checks consult it (no lstat per entry), and small files are written, owned, moded and
 * timed in the background while the tar stream moves on, so the filesystem work of many
 * entries overlaps on libuv's thread pool. finish() waits for all of it.
 */
class LayerWriter {
  private readonly kinds = new Map<string, EntryKind>([['', 'dir']]);
  /** Background work per path (a file being written); a hard link or replacement waits for it. */
  private readonly pending = new Map<string, Promise<void>>();
  private pendingBytes = 0;
  private readonly nodes = new Map<string, FsnodeOp & { op: 'mknod' }>();
  private readonly xattrs: (FsnodeOp & { op: 'xattr' })[] = [];
  /** Metadata applied once every entry exists: node owners, then directory metadata. */
  private readonly nodeOwners = new Map<string, { uid: number; gid: number; mtime: Date }>();
  private readonly dirMeta = new Map<string, { uid: number; gid: number; mode: number; mtime: Date }>();

  constructor(private readonly root: string) {}

  async apply(h: tarStream.Header, body: Readable): Promise<void> {
    try {
      await this.applyEntry(h, body);
    } finally {
      body.resume(); // a skipped or failed entry must still be drained for the next one to come
    }
  }

  private async applyEntry(h: tarStream.Header, body: Readable): Promise<void> {
    const rel = checkedRelative(h.name);
    if (rel === '') return; // the layer root itself: the snapshot dir keeps its own attributes
    const parent = path.posix.dirname(rel) === '.' ? '' : path.posix.dirname(rel);
    const base = path.posix.basename(rel);

    if (base === OPAQUE_MARKER) {
      await this.ensureDir(parent, h.name);
      this.xattrs.push({ op: 'xattr', path: this.abs(parent), name: OVERLAY_OPAQUE_XATTR, value: Buffer.from('y') });
      return;
    }
    if (base.startsWith(WHITEOUT_PREFIX)) {
      if (base.startsWith(`${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}`)) return; // AUFS metadata (.wh..wh.plnk ...): no overlay meaning
      const hidden = path.posix.join(parent, base.slice(WHITEOUT_PREFIX.length));
      await this.ensureDir(parent, h.name);
      await this.clear(hidden);
      this.nodes.set(hidden, { op: 'mknod', path: this.abs(hidden), mode: S_IFCHR, major: 0, minor: 0 });
      this.kinds.set(hidden, 'node');
      return;
    }

    await this.ensureDir(parent, h.name);
    const abs = this.abs(rel);
    const mode = (h.mode ?? 0o644) & 0o7777;
    const uid = h.uid ?? 0;
    const gid = h.gid ?? 0;
    const mtime = h.mtime ?? new Date(0);
    if (h.type === 'directory') {
      if (this.kinds.get(rel) !== 'dir') {
        await this.clear(rel);
        await fs.mkdir(abs, { mode: 0o700 });
        this.kinds.set(rel, 'dir');
      }
      this.dirMeta.set(rel, { uid, gid, mode, mtime });
    } else {
      await this.clear(rel);
      switch (h.type) {
        case 'file':
        case 'contiguous-file': {
          this.kinds.set(rel, 'file');
          const size = h.size ?? 0;
          if (size <= DEFERRED_FILE_MAX) {
            const data = await readAll(body, size);
            this.defer(rel, data.length, async () => {
              const fh = await fs.open(abs, 'wx', 0o600);
              try {
                if (data.length > 0) await fh.writeFile(data);
                await fh.chown(uid, gid);
                await fh.chmod(mode); // after chown, which drops setuid/setgid bits
              } finally {
                await fh.close();
              }
              await fs.utimes(abs, mtime, mtime);
            });
          } else {
            await pipeline(body, createWriteStream(abs, { flags: 'wx', mode: 0o600 }));
            await fs.chown(abs, uid, gid);
            await fs.chmod(abs, mode);
            await fs.utimes(abs, mtime, mtime);
          }
          break;
        }
        case 'symlink':
          this.kinds.set(rel, 'symlink');
          this.defer(rel, 0, async () => {
            await fs.symlink(h.linkname ?? '', abs);
            await fs.lchown(abs, uid, gid);
            await fs.lutimes(abs, mtime, mtime);
          });
          break;
        case 'link': {
          const target = checkedRelative(h.linkname ?? '');
          if (target === '') throw new LayerRefusedError(h.name, 'a hard link to the layer root');
          const targetParent = path.posix.dirname(target);
          if (targetParent !== '.') await this.ensureDir(targetParent, h.name, false);
          const kind = this.kinds.get(target);
          if (kind === undefined || kind === 'dir') {
            throw new LayerRefusedError(h.name, `its hard-link target ${JSON.stringify(h.linkname)} is not a file earlier in this layer`);
          }
          if (kind === 'node') {
            // Nodes are made in the final batch: make this one now, with its owner, to link to it.
            await runFsnodes([...this.nodes.values()].filter((n) => n.path === this.abs(target)));
            this.nodes.delete(target);
            const owner = this.nodeOwners.get(target);
            if (owner) {
              await fs.lchown(this.abs(target), owner.uid, owner.gid);
              await fs.lutimes(this.abs(target), owner.mtime, owner.mtime);
            }
          }
          await this.pending.get(target);
          await fs.link(this.abs(target), abs);
          this.kinds.set(rel, kind);
          break;
        }
        case 'character-device':
        case 'block-device':
        case 'fifo': {
          const type = h.type === 'fifo' ? S_IFIFO : h.type === 'block-device' ? S_IFBLK : S_IFCHR;
          this.nodes.set(rel, { op: 'mknod', path: abs, mode: type | mode, major: h.devmajor ?? 0, minor: h.devminor ?? 0 });
          this.nodeOwners.set(rel, { uid, gid, mtime });
          this.kinds.set(rel, 'node');
          break;
        }
        default:
          throw new LayerRefusedError(h.name, `unsupported tar entry type ${h.type}`);
      }
    }
    for (const [key, value] of Object.entries(h.pax ?? {})) {
      if (!key.startsWith(PAX_XATTR_PREFIX)) continue;
      const name = key.slice(PAX_XATTR_PREFIX.length);
      // overlayfs's own xattrs in a layer would redirect lookups; only Corral sets those.
      if (name.startsWith('trusted.overlay.')) continue;
      this.xattrs.push({ op: 'xattr', path: abs, name, value: Buffer.from(String(value), 'latin1') });
    }
  }

  /** Runs fn in the background for rel; bounded, so buffered data cannot pile up. */
  private defer(rel: string, bytes: number, fn: () => Promise<void>): void {
    const p: Promise<void> = fn()
      .catch((e: Error) => {
        this.failure ??= e; // reported by the next settleAll
      })
      .finally(() => {
        this.pendingBytes -= bytes;
        if (this.pending.get(rel) === p) this.pending.delete(rel);
      });
    this.pendingBytes += bytes;
    this.pending.set(rel, p);
    if (this.pending.size >= 64 || this.pendingBytes >= DEFERRED_BYTES_MAX) this.backpressure = this.settleAll();
  }
  private backpressure: Promise<void> | undefined;
  private failure: Error | undefined;

  /** Waits for every background write; throws the first one that failed. */
  private async settleAll(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending.values()]);
    if (this.failure) throw this.failure;
  }

  /** Device nodes and xattrs in one helper run, then their owners, then directory metadata. */
  async finish(): Promise<void> {
    await this.settleAll();
    await runFsnodes([...this.nodes.values()]);
    await Promise.all(
      [...this.nodeOwners].filter(([rel]) => this.nodes.has(rel)).map(async ([rel, o]) => {
        await fs.lchown(this.abs(rel), o.uid, o.gid);
        await fs.lutimes(this.abs(rel), o.mtime, o.mtime);
      }),
    );
    // xattrs after owners: chown clears security.capability.
    await runFsnodes(this.xattrs);
    // Directories last: creating their entries changed their mtimes.
    await Promise.all(
      [...this.dirMeta].map(async ([rel, m]) => {
        const abs = this.abs(rel);
        await fs.chown(abs, m.uid, m.gid);
        await fs.chmod(abs, m.mode);
        await fs.utimes(abs, m.mtime, m.mtime);
      }),
    );
  }

  private abs(rel: string): string {
    return rel === '' ? this.root : path.join(this.root, rel);
  }

  /** Makes rel (and its parents) a directory if missing, 0755 like containerd; refuses a symlink or file in the way. */
  private async ensureDir(rel: string, entryName: string, create = true): Promise<void> {
    if (this.backpressure) {
      const b = this.backpressure;
      this.backpressure = undefined;
      await b;
    }
    if (this.kinds.get(rel) === 'dir') return;
    let cur = '';
    for (const part of rel.split('/')) {
      cur = cur === '' ? part : `${cur}/${part}`;
      const kind = this.kinds.get(cur);
      if (kind === 'dir') continue;
      if (kind === 'symlink') throw new LayerRefusedError(entryName, `its path goes through the symlink ${JSON.stringify(cur)}`);
      if (kind !== undefined) throw new LayerRefusedError(entryName, `its parent ${JSON.stringify(cur)} is not a directory`);
      if (!create) throw new LayerRefusedError(entryName, `${JSON.stringify(cur)} does not exist in this layer`);
      await fs.mkdir(this.abs(cur), { mode: 0o755 });
      this.kinds.set(cur, 'dir');
    }
  }

  /** Removes whatever an earlier entry of this layer put at rel, so a later entry replaces it. */
  private async clear(rel: string): Promise<void> {
    const kind = this.kinds.get(rel);
    if (kind === undefined) return;
    await this.settleAll(); // nothing may still be writing under rel
    const under = (p: string) => p === rel || p.startsWith(`${rel}/`);
    for (const m of [this.kinds, this.nodes, this.nodeOwners, this.dirMeta] as Map<string, unknown>[]) {
      for (const k of [...m.keys()]) if (under(k)) m.delete(k);
    }
    if (kind !== 'node' || (await lstatOrNull(this.abs(rel)))) await fs.rm(this.abs(rel), { recursive: true, force: true });
  }
}

/** Reads a tar entry's body (of known size) into one buffer. */
async function readAll(body: Readable, size: number): Promise<Buffer> {
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for await (const chunk of body) {
    (chunk as Buffer).copy(out, at);
    at += (chunk as Buffer).length;
  }
  return at === size ? out : out.subarray(0, at);
}

/**
 * A tar entry name as a path relative to the layer root ('' for the root itself):
 * `./` prefixes and trailing slashes dropped; absolute names and `..` refused.
 */
export function checkedRelative(name: string): string {
  if (name.includes('\0')) throw new LayerRefusedError(name, 'a NUL byte in the name');
  if (name.startsWith('/')) throw new LayerRefusedError(name, 'an absolute path would land outside the layer');
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new LayerRefusedError(name, "a '..' component would land outside the layer");
  return parts.join('/');
}

async function lstatOrNull(p: string) {
  try {
    return await fs.lstat(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

async function runFsnodes(ops: FsnodeOp[]): Promise<void> {
  if (ops.length === 0) return;
  const fields: Buffer[] = [];
  const field = (s: string | Buffer) => fields.push(Buffer.isBuffer(s) ? s : Buffer.from(s), Buffer.from([0]));
  for (const o of ops) {
    field(o.op);
    field(o.path);
    if (o.op === 'mknod') {
      field(o.mode.toString(8));
      field(String(o.major));
      field(String(o.minor));
    } else {
      field(o.name);
      field(o.value.toString('hex'));
    }
  }
  const r = await execFile(nativeBinary('corral-fsnodes'), [], { input: Buffer.concat(fields), timeoutMs: 60_000 });
  if (r.code !== 0) {
    let detail = (r.stdout || r.stderr).trim();
    try {
      const j = JSON.parse(r.stdout) as { error: string; op: string; path: string };
      detail = `${j.op} ${j.path}: ${j.error}`;
    } catch {
      /* not JSON: keep the raw text */
    }
    throw new Error(`making device nodes and xattrs failed: ${detail}`);
  }
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
