/**
 * Unpacking one image layer into an empty directory that overlayfs later uses as a
 * lower layer. All of it happens in one corral-unpack helper per layer
 * (native/unpack.c, `--layer` mode): it decompresses the blob (zlib), hashes the
 * uncompressed stream (the diff ID), parses the tar, decides what each entry means and
 * writes it. Node does no per-file or per-byte work: a layer of thousands of small files
 * costs one spawn and one line of JSON, not a thread-pool round trip per syscall.
 *
 * What no tar library does is done there:
 * - OCI whiteouts become overlayfs ones: `.wh.NAME` → a 0/0 character device NAME,
 *   `.wh..wh..opq` → the `trusted.overlay.opaque=y` xattr on its directory;
 * - escape checks: an entry (or hard-link target) with a `..` component, an absolute
 *   name, or a parent that is a symlink is refused, and the whole layer with it (the
 *   caller unpacks into a temporary directory it removes on failure, so nothing is left);
 * - every path is resolved beneath the layer root with openat2(RESOLVE_BENEATH |
 *   RESOLVE_NO_SYMLINKS | ...) and a final symlink is never followed, so no order of
 *   entries (a directory replaced by a symlink after its xattrs or metadata were
 *   recorded ...) can reach a file outside the layer, whatever the checks miss.
 *
 * Modes (with setuid/setgid/sticky), numeric owners, mtimes, symlinks, hard links and
 * xattrs (binary values byte for byte) are kept. The helper runs Debian's zstd tool for
 * zstd layers (their bytes go from zstd to the helper, never through Node).
 *
 * The helper is started by corral-spawner (util/exec.ts startProgram), like every other
 * program: a fork of the daemon per layer cost its main thread ~10 ms.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { DownloadTap } from './content-store.js';
import { CorralError } from '../errors.js';
import { nativeBinary } from '../util/paths.js';
import { startProgram } from '../util/exec.js';
import type { RunningProgram } from '../util/spawner.js';

export interface AppliedLayer {
  /** "sha256:<hex>" of the uncompressed tar. */
  diffId: string;
  /** Bytes of the uncompressed tar. */
  size: number;
  /** Unpacked from a download as it arrived: sha256 and length of every byte the helper read. */
  input?: { digest: string; size: number };
}

/** A layer whose content Corral will not unpack (an escape, a name Linux cannot hold ...): bad input, 'invalid-argument'. */
export class LayerRefusedError extends CorralError {
  constructor(entry: string, reason: string) {
    super('invalid-argument', `refusing layer entry ${JSON.stringify(entry)}: ${reason}`);
    this.name = 'LayerRefusedError';
  }
}

/** A layer blob that is not a valid gzip or tar stream (corrupt, truncated): bad input, 'invalid-argument'. */
export class LayerCorruptError extends CorralError {
  constructor(reason: string) {
    super('invalid-argument', `the layer is not a valid archive: ${reason}`);
    this.name = 'LayerCorruptError';
  }
}

/** The helper reported a failure that is not a refusal (a full disk, a missing /proc ...). */
export class UnpackHelperError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnpackHelperError';
  }
}

const OUTPUT_KEPT_MAX = 64 * 1024;

/** What the helper prints on stdout: one of these. */
interface HelperVerdict {
  done?: number;
  diffId?: string;
  size?: number;
  inputDigest?: string;
  inputSize?: number;
  refused?: string;
  reason?: string;
  corrupt?: string;
  error?: string;
  op?: string;
  path?: string;
  escape?: boolean;
}

/** Unpacks the layer blob `layerFile` (gzip, zstd or plain tar, told apart by its first bytes) into the empty directory `targetDir`. */
export async function applyLayer(layerFile: string, mediaType: string, targetDir: string): Promise<AppliedLayer> {
  if (!/\btar\b|\.tar/.test(mediaType) || /encrypted/.test(mediaType)) {
    throw new Error(`unsupported layer media type ${mediaType}`);
  }
  const root = path.resolve(targetDir);
  return runHelper(['--layer', layerFile, root], root).done;
}

/** An unpack following a download as its bytes arrive (see applyLayerFromDownload). */
export interface StreamedUnpack {
  /** Give to ContentStore: it tells the helper how much of the blob's file is written. */
  tap: DownloadTap;
  /** The helper's verdict; rejects if the download was aborted, or on anything applyLayer would reject. */
  result: Promise<AppliedLayer>;
}

/**
 * Unpacks a layer from its download, as the bytes arrive, into `targetDir` (created here,
 * 0755, with its parent): the helper (`corral-unpack --layer-follow`) reads `blobFile`,
 * the download's temp file, up to the length the tap last announced on its stdin, and
 * waits for more, so the download never waits for the unpack and no Buffer of it is kept
 * for the helper. The bytes are not verified yet: the caller commits the directory only
 * once the blob's digest and the diff ID both match, and removes it otherwise. A zstd
 * layer fails here: the caller unpacks it from the stored file instead.
 */
export function applyLayerFromDownload(targetDir: string, blobFile: string): StreamedUnpack {
  const root = path.resolve(targetDir);
  let helper: RunningProgram | undefined;
  let broken = false; // the helper was killed, or could not be started: nothing more is sent
  let aborted: unknown;
  let settle!: (r: Promise<AppliedLayer>) => void;
  const result = new Promise<AppliedLayer>((resolve) => (settle = resolve));
  // What the file holds, and what the helper was told: one line per write at most (the
  // spawner queues them for it; a helper that stopped reading is killed past 1 MiB queued,
  // and the caller then unpacks the stored file).
  let complete = 0;
  let told = 0;
  let finalSize: number | undefined;
  let ended = false;
  const announce = () => {
    if (!helper || broken || ended) return;
    if (finalSize !== undefined) {
      ended = true;
      helper.end(`end ${finalSize}\n`);
    } else if (complete > told) {
      told = complete;
      helper.write(`${complete}\n`);
    }
  };
  // The helper starts at the first write (the directory is made then), so a tap taken by
  // a download that fails before its first byte costs nothing.
  let starting: Promise<void> | undefined;
  const start = () =>
    (starting ??= (async () => {
      try {
        await fs.mkdir(path.dirname(root), { recursive: true });
        await fs.mkdir(root, { mode: 0o700 });
        await fs.chmod(root, 0o755);
      } catch (e) {
        broken = true;
        settle(Promise.reject(e));
        return;
      }
      if (aborted !== undefined) {
        broken = true;
        settle(Promise.reject(aborted));
        return;
      }
      const run = runHelper(['--layer-follow', blobFile, root], root);
      helper = run.program;
      settle(run.done);
      announce();
    })());
  const tap: DownloadTap = {
    written(bytes) {
      complete = bytes;
      void start().then(announce);
    },
    end(size) {
      finalSize = size;
      void start().then(announce);
    },
    // The helper hashes what it reads (it reads every byte of a layer it unpacks): the
    // download need not hash the same bytes again. Undefined if it did not finish.
    digest: () => verdict.then((r) => r.input, () => undefined),
    abort(reason) {
      aborted ??= reason;
      broken = true;
      helper?.kill(); // its result settles once it is gone: the caller waits for that
      if (!starting) settle(Promise.reject(reason));
    },
  };
  const verdict = result.then((r) => {
    if (aborted !== undefined) throw aborted;
    return r;
  });
  verdict.catch(() => {}); // asked for only once the download ended, or never
  return { tap, result: verdict };
}

/** Starts corral-unpack and turns its verdict (once it ended) into the result or the matching error. */
function runHelper(args: string[], root: string): { program: RunningProgram | undefined; done: Promise<AppliedLayer> } {
  const bin = nativeBinary('corral-unpack');
  const cannotRun = (e: unknown) => new UnpackHelperError(`cannot run ${bin} (build Corral: npm run build): ${e instanceof Error ? e.message : String(e)}`);
  let program: RunningProgram;
  try {
    program = startProgram(bin, args);
  } catch (e) {
    return { program: undefined, done: Promise.reject(cannotRun(e)) };
  }
  const done = program.result.then(
    ({ code, signal, stdout, stderr }) => {
      // The helper prints one line (zstd one more on stderr): whatever else came is not kept.
      const out = stdout.slice(0, OUTPUT_KEPT_MAX).trim();
      const err = stderr.slice(0, OUTPUT_KEPT_MAX);
      let v: HelperVerdict | undefined;
      try {
        v = JSON.parse(out) as HelperVerdict;
      } catch {
        v = undefined;
      }
      if (code === 0 && v && typeof v.diffId === 'string' && typeof v.size === 'number') {
        const input = typeof v.inputDigest === 'string' && typeof v.inputSize === 'number' ? { digest: v.inputDigest, size: v.inputSize } : undefined;
        return { diffId: v.diffId, size: v.size, ...(input ? { input } : {}) };
      }
      if (v?.refused !== undefined) {
        throw new LayerRefusedError(v.refused, v.reason ?? 'refused');
      } else if (v?.corrupt !== undefined) {
        const said = err.trim().slice(0, 500); // zstd's own message, if it failed
        throw new LayerCorruptError(said ? `${v.corrupt}: ${said}` : v.corrupt);
      } else if (v?.escape) {
        throw new LayerRefusedError(v.path ?? '', `${v.op}: ${v.error}`);
      } else if (v?.error !== undefined) {
        throw new UnpackHelperError(`unpacking into ${root} failed: ${v.op} ${JSON.stringify(v.path)}: ${v.error}`);
      }
      const how = signal ? `killed by ${signal}` : `exit status ${code}`;
      const detail = (out || err).trim();
      throw new UnpackHelperError(`unpack helper for ${root} stopped (${how})${detail ? `: ${detail}` : ''}`);
    },
    (e: unknown) => {
      // An errno code: it could not be started. Otherwise the spawner died under it.
      throw (e as NodeJS.ErrnoException).code !== undefined ? cannotRun(e) : new UnpackHelperError(`unpack helper for ${root}: ${e instanceof Error ? e.message : String(e)}`);
    },
  );
  return { program, done };
}
