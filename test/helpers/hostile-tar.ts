/**
 * Hostile layer material for the unpack tests: tars whose entries are written exactly as
 * given (absolute names, `..`, any order, raw PAX records with binary values and names
 * longer than PATH_MAX), a canary tree outside the layer with a fingerprint of everything
 * about it (content, mode, owner, times, link count, xattrs), and an encoder for
 * corral-unpack's operation stream, to test the helper without Node's checks in front.
 */
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';

export interface HostileEntry {
  /** Written as is: may be absolute, hold `..`, or be longer than a tar header holds (then it goes in a PAX `path` record). */
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  linkname?: string;
  content?: Buffer | string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: Date;
  devmajor?: number;
  devminor?: number;
  /** Raw PAX records (e.g. `SCHILY.xattr.trusted.x`), values byte for byte. */
  pax?: Record<string, string | Buffer>;
}

const USTAR_NAME_MAX = 100;

/** One PAX record, `"%d %s=%s\n"` with the length counting itself. */
function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

const TYPEFLAG: Record<NonNullable<HostileEntry['type']> | 'pax', string> = {
  file: '0',
  link: '1',
  symlink: '2',
  'character-device': '3',
  'block-device': '4',
  directory: '5',
  fifo: '6',
  pax: 'x',
};

/** One 512-byte ustar header, fields written as given (no normalising, no checks). */
function ustarHeader(h: { name: string; type: keyof typeof TYPEFLAG; size: number; mode: number; uid: number; gid: number; mtime: Date; linkname?: string; devmajor?: number; devminor?: number }): Buffer {
  const b = Buffer.alloc(512);
  const str = (s: string, at: number, len: number) => Buffer.from(s).copy(b, at, 0, len);
  const oct = (v: number, at: number, len: number) => str(`${Math.max(0, Math.floor(v)).toString(8).padStart(len - 1, '0')}\0`, at, len);
  str(h.name, 0, 100);
  oct(h.mode, 100, 8);
  oct(h.uid, 108, 8);
  oct(h.gid, 116, 8);
  oct(h.size, 124, 12);
  oct(h.mtime.getTime() / 1000, 136, 12);
  b[156] = TYPEFLAG[h.type].charCodeAt(0);
  str(h.linkname ?? '', 157, 100);
  str('ustar\0' + '00', 257, 8);
  str('root', 265, 32);
  str('root', 297, 32);
  oct(h.devmajor ?? 0, 329, 8);
  oct(h.devminor ?? 0, 337, 8);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  str(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8);
  return b;
}

const pad512 = (n: number) => Buffer.alloc((512 - (n % 512)) % 512);

/** A tar of exactly these entries, in this order; names too long for ustar go in raw PAX `path`/`linkpath` records. */
export async function hostileTar(entries: HostileEntry[]): Promise<Buffer> {
  const out: Buffer[] = [];
  for (const e of entries) {
    const type = e.type ?? 'file';
    const records: Buffer[] = Object.entries(e.pax ?? {}).map(([k, v]) => paxRecord(k, Buffer.isBuffer(v) ? v : Buffer.from(v)));
    let name = e.name;
    let linkname = e.linkname;
    if (Buffer.byteLength(name) >= USTAR_NAME_MAX) {
      records.push(paxRecord('path', Buffer.from(name)));
      name = 'long-name-in-pax';
    }
    if (linkname !== undefined && Buffer.byteLength(linkname) >= USTAR_NAME_MAX) {
      records.push(paxRecord('linkpath', Buffer.from(linkname)));
      linkname = 'long-linkname-in-pax';
    }
    if (records.length > 0) {
      const body = Buffer.concat(records);
      out.push(ustarHeader({ name: 'PaxHeader', type: 'pax', size: body.length, mode: 0o644, uid: 0, gid: 0, mtime: new Date(0) }), body, pad512(body.length));
    }
    const content = type === 'file' ? (typeof e.content === 'string' ? Buffer.from(e.content) : e.content ?? Buffer.alloc(0)) : Buffer.alloc(0);
    out.push(
      ustarHeader({
        name,
        type,
        size: content.length,
        mode: e.mode ?? (type === 'directory' ? 0o755 : type === 'symlink' ? 0o777 : 0o644),
        uid: e.uid ?? 0,
        gid: e.gid ?? 0,
        mtime: e.mtime ?? new Date(0),
        linkname,
        devmajor: e.devmajor,
        devminor: e.devminor,
      }),
      content,
      pad512(content.length),
    );
  }
  out.push(Buffer.alloc(1024));
  return Buffer.concat(out);
}

/**
 * A canary tree at dir: files, a directory and a fifo with unusual owners, modes and
 * times and an xattr, so any change an escaping unpack makes shows in fingerprint().
 */
export async function makeCanaryTree(dir: string): Promise<void> {
  const t = new Date('2001-02-03T04:05:06Z');
  await fs.mkdir(path.join(dir, 'd'), { recursive: true });
  await fs.mkdir(path.join(dir, 'c'));
  for (const [rel, content] of [['f', 'canary file\n'], ['e', 'canary e\n'], ['d/inner', 'canary inner\n'], ['c/d', 'canary c/d\n']] as const) {
    await fs.writeFile(path.join(dir, rel), content);
    await fs.chown(path.join(dir, rel), 1234, 4321);
    await fs.chmod(path.join(dir, rel), 0o640);
    await fs.utimes(path.join(dir, rel), t, t);
  }
  execFileSync('mkfifo', ['-m', '0600', path.join(dir, 'fifo')]);
  execFileSync('python3', ['-c', 'import os,sys; os.setxattr(sys.argv[1], "trusted.canary", b"\\x00canary")', path.join(dir, 'f')]);
  for (const rel of ['d', 'c', '']) {
    await fs.chmod(path.join(dir, rel), 0o750);
    await fs.utimes(path.join(dir, rel), t, t);
  }
}

const FINGERPRINT_PY = `
import hashlib, json, os, sys
root = sys.argv[1]
out = {}
def visit(p):
    st = os.lstat(p)
    rel = os.path.relpath(p, root)
    xattrs = {n: os.getxattr(p, n, follow_symlinks=False).hex() for n in sorted(os.listxattr(p, follow_symlinks=False))} if not os.path.islink(p) else {}
    rec = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "nlink": st.st_nlink, "size": st.st_size, "rdev": st.st_rdev,
           "mtime": st.st_mtime_ns, "ctime": st.st_ctime_ns, "ino": st.st_ino, "xattrs": xattrs}
    if os.path.islink(p):
        rec["target"] = os.readlink(p)
    elif os.path.isfile(p) and not os.path.islink(p):
        rec["sha256"] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    out[rel] = rec
    if os.path.isdir(p) and not os.path.islink(p):
        for n in sorted(os.listdir(p)):
            visit(os.path.join(p, n))
visit(root)
print(json.dumps(out, sort_keys=True))
`;

/** Everything about the tree at dir, symlinks not followed: any change (even of a ctime) changes it. */
export function fingerprint(dir: string): Record<string, unknown> {
  return JSON.parse(execFileSync('python3', ['-c', FINGERPRINT_PY, dir]).toString()) as Record<string, unknown>;
}

/** One operation of corral-unpack's input (see native/unpack.c for the frame layout). */
export interface UnpackOp {
  op: 'd' | 'f' | 'l' | 'h' | 'n' | 'x' | 'r' | 'm' | 'e';
  path: string;
  arg?: string;
  data?: Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  mtimeSec?: number;
  major?: number;
  minor?: number;
}

/** The byte stream corral-unpack reads, written independently of src/image/unpack.ts. */
export function encodeUnpackOps(ops: UnpackOp[]): Buffer {
  const parts: Buffer[] = [];
  for (const o of ops) {
    const p = Buffer.from(o.path);
    const a = Buffer.from(o.arg ?? '');
    const d = o.data ?? Buffer.alloc(0);
    const h = Buffer.alloc(52);
    h[0] = o.op.charCodeAt(0);
    h.writeUInt32LE(o.mode ?? 0, 4);
    h.writeUInt32LE(o.uid ?? 0, 8);
    h.writeUInt32LE(o.gid ?? 0, 12);
    h.writeBigInt64LE(BigInt(o.mtimeSec ?? 0), 16);
    h.writeUInt32LE(o.major ?? 0, 28);
    h.writeUInt32LE(o.minor ?? 0, 32);
    h.writeUInt32LE(p.length, 36);
    h.writeUInt32LE(a.length, 40);
    h.writeBigUInt64LE(BigInt(d.length), 44);
    parts.push(h, p, a, d);
  }
  return Buffer.concat(parts);
}
