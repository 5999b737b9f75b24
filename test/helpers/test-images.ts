/**
 * Test images built in memory from /bin/busybox (busybox-static): layers as tar archives
 * (uncompressed, gzip or zstd), image configs with correct diff IDs, OCI or Docker
 * schema 2 manifests, and multi-platform indexes. Everything is deterministic (fixed
 * mtimes, owners and order), so the same call gives the same digests.
 *
 *   const img = await busyboxImage();                       // OCI, gzip, this host's arch
 *   const z = await busyboxImage({ compression: 'zstd' });
 *   const d = await busyboxImage({ format: 'docker' });      // Docker schema 2
 *   const idx = await multiArchIndex();                      // amd64 + arm64/v8 entries
 *   const wh = await buildImage({ layers: [await buildLayer(busyboxEntries()), await buildLayer(whiteoutEntries())] });
 *
 * Every blob is a TestBlob ({ mediaType, digest, size, bytes }); `descriptor(blob)` gives
 * the manifest descriptor. Push them with test/helpers/registry.ts pushImage().
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import tarStream, { type Header as TarHeader } from 'tar-stream';

export const MT = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

/** A blob as a registry or content store holds it. */
export interface TestBlob {
  mediaType: string;
  /** "sha256:<hex>" of bytes. */
  digest: string;
  size: number;
  bytes: Buffer;
}

export interface TestLayer extends TestBlob {
  /** sha256 of the uncompressed tar (what the config's rootfs.diff_ids lists). */
  diffId: string;
  /** The uncompressed tar. */
  tar: Buffer;
  compression: Compression;
}

/** A JSON blob with its parsed form. */
export interface TestJsonBlob<T = any> extends TestBlob {
  json: T;
}

export interface TestImage {
  format: ImageFormat;
  platform: TestPlatform;
  manifest: TestJsonBlob;
  config: TestJsonBlob;
  /** Bottom first. */
  layers: TestLayer[];
  /** Every blob to push: config and layers (not the manifest). */
  blobs: TestBlob[];
}

export interface TestIndex {
  format: ImageFormat;
  index: TestJsonBlob;
  /** The images the index lists, in order. */
  images: TestImage[];
}

export type Compression = 'none' | 'gzip' | 'zstd';
export type ImageFormat = 'oci' | 'docker';

export interface TestPlatform {
  os: string;
  architecture: string;
  variant?: string;
}

/** One tar entry. Paths are relative ("bin/sh"); directories may end in "/". */
export interface TarEntry {
  path: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  /** Device numbers for character and block devices. */
  devmajor?: number;
  devminor?: number;
  /** Keep the path exactly as given (hostile archives: absolute names); else a leading "/" is dropped. */
  raw?: boolean;
  /** File content. */
  content?: Buffer | string;
  /** Symlink target, or the path of the file a hard link ("link") points at. */
  linkname?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  uname?: string;
  gname?: string;
  mtime?: Date;
}

/** The image config fields tests usually set (the OCI `config` object). */
export interface TestImageConfig {
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  User?: string;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  ExposedPorts?: Record<string, object>;
  Volumes?: Record<string, object>;
  StopSignal?: string;
}

const EPOCH = new Date('2024-01-01T00:00:00Z');

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** A blob from bytes. */
export function blob(mediaType: string, bytes: Buffer): TestBlob {
  return { mediaType, digest: sha256(bytes), size: bytes.length, bytes };
}

/** A blob from a JSON value (compact serialisation). */
export function jsonBlob<T>(mediaType: string, json: T): TestJsonBlob<T> {
  return { ...blob(mediaType, Buffer.from(JSON.stringify(json))), json };
}

/** The descriptor of a blob, as manifests list it. */
export function descriptor(b: TestBlob, extra: Record<string, unknown> = {}): { mediaType: string; digest: string; size: number } & Record<string, unknown> {
  return { mediaType: b.mediaType, digest: b.digest, size: b.size, ...extra };
}

/** This host's platform in OCI names. */
export function hostTestPlatform(): TestPlatform {
  const architecture = ({ x64: 'amd64', arm64: 'arm64', arm: 'arm' } as Record<string, string>)[process.arch] ?? process.arch;
  return architecture === 'arm64' ? { os: 'linux', architecture, variant: 'v8' } : { os: 'linux', architecture };
}

/** Packs entries into a tar archive (in the order given). */
export async function makeTar(entries: TarEntry[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    pack.on('data', (c: unknown) => {
      chunks.push(c as Buffer);
    });
    pack.on('end', () => resolve(Buffer.concat(chunks)));
    pack.on('error', reject);
  });
  for (const e of entries) {
    const type = e.type ?? (e.path.endsWith('/') ? 'directory' : 'file');
    const header: Partial<TarHeader> & { name: string } = {
      name: e.raw ? e.path : e.path.replace(/^\/+/, ''),
      type,
      mode: e.mode ?? (type === 'directory' ? 0o755 : type === 'symlink' ? 0o777 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      uname: e.uname ?? 'root',
      gname: e.gname ?? 'root',
      mtime: e.mtime ?? EPOCH,
    };
    if (type === 'symlink' || type === 'link') header.linkname = e.linkname ?? '';
    if (type === 'character-device' || type === 'block-device') Object.assign(header, { devmajor: e.devmajor ?? 0, devminor: e.devminor ?? 0 });
    const content = type === 'file' ? (typeof e.content === 'string' ? Buffer.from(e.content) : e.content ?? Buffer.alloc(0)) : undefined;
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (content !== undefined) pack.entry(header, content, cb);
      else pack.entry(header, cb);
    });
  }
  pack.finalize();
  return done;
}

/** Compresses with the `zstd` command (Debian's zstd package). */
export function zstdCompress(data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const p = spawn('zstd', ['-q', '-c', '-3', '--no-check'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (c: Buffer) => out.push(c));
    p.stderr.on('data', (c: Buffer) => err.push(c));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`zstd exited ${code}: ${Buffer.concat(err).toString()}`))));
    p.stdin.end(data);
  });
}

/** Applets linked to busybox in busyboxEntries(). */
export const BUSYBOX_APPLETS = ['sh', 'ls', 'cat', 'echo', 'sleep', 'true', 'false', 'id', 'env', 'mkdir', 'rm', 'touch', 'ps', 'hostname', 'wget', 'nc', 'ip', 'stat', 'test', 'grep', 'mount', 'umount', 'readlink'];

/**
 * A minimal root filesystem: /bin/busybox with its applets as symlinks (/bin/sh → busybox…),
 * /etc/passwd and /etc/group (root, nobody and "app" 1000:1000), /tmp (1777), /root, /home/app.
 */
export function busyboxEntries(applets: readonly string[] = BUSYBOX_APPLETS, links: 'symlink' | 'hardlink' = 'symlink'): TarEntry[] {
  const busybox = readFileSync('/bin/busybox');
  return [
    { path: 'bin/', type: 'directory' },
    { path: 'bin/busybox', content: busybox, mode: 0o755 },
    ...applets.map((a): TarEntry => (links === 'symlink' ? { path: `bin/${a}`, type: 'symlink', linkname: 'busybox' } : { path: `bin/${a}`, type: 'link', linkname: 'bin/busybox' })),
    { path: 'etc/', type: 'directory' },
    { path: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' },
    { path: 'etc/group', content: 'root:x:0:\napp:x:1000:\nnogroup:x:65534:\n' },
    { path: 'home/', type: 'directory' },
    { path: 'home/app/', type: 'directory', uid: 1000, gid: 1000, uname: 'app', gname: 'app' },
    { path: 'root/', type: 'directory', mode: 0o700 },
    { path: 'tmp/', type: 'directory', mode: 0o1777 },
  ];
}

/**
 * A layer to put over busyboxEntries() exercising whiteouts and hard links:
 *  - `etc/.wh.group` deletes /etc/group;
 *  - `home/.wh..wh..opq` makes /home opaque (hides home/app), then adds home/new/file;
 *  - `data/a` with a hard link `data/b` → data/a;
 *  - `etc/added` is a new plain file.
 */
export function whiteoutEntries(): TarEntry[] {
  return [
    { path: 'etc/', type: 'directory' },
    { path: 'etc/.wh.group', content: '' },
    { path: 'etc/added', content: 'added by layer 2\n' },
    { path: 'home/', type: 'directory' },
    { path: 'home/.wh..wh..opq', content: '' },
    { path: 'home/new/', type: 'directory' },
    { path: 'home/new/file', content: 'new\n' },
    { path: 'data/', type: 'directory' },
    { path: 'data/a', content: 'hard linked content\n' },
    { path: 'data/b', type: 'link', linkname: 'data/a' },
  ];
}

/** Builds a layer from tar entries with the given compression and a media type to match the format. */
export async function buildLayer(entries: TarEntry[], compression: Compression = 'gzip', format: ImageFormat = 'oci'): Promise<TestLayer> {
  const tar = await makeTar(entries);
  return layerFromTar(tar, compression, format);
}

/** A layer from an uncompressed tar. Docker format has no zstd media type; 'zstd' with 'docker' throws. */
export async function layerFromTar(tar: Buffer, compression: Compression = 'gzip', format: ImageFormat = 'oci'): Promise<TestLayer> {
  let bytes: Buffer;
  let mediaType: string;
  if (compression === 'gzip') {
    bytes = gzipSync(tar, { level: 6 });
    mediaType = format === 'oci' ? MT.ociLayerGzip : MT.dockerLayerGzip;
  } else if (compression === 'zstd') {
    if (format === 'docker') throw new Error('Docker schema 2 has no zstd layer media type');
    bytes = await zstdCompress(tar);
    mediaType = MT.ociLayerZstd;
  } else {
    bytes = tar;
    mediaType = format === 'oci' ? MT.ociLayer : MT.dockerLayer;
  }
  return { ...blob(mediaType, bytes), diffId: sha256(tar), tar, compression };
}

export interface BuildImageOptions {
  layers: TestLayer[];
  format?: ImageFormat;
  /** Default: this host's platform. */
  platform?: TestPlatform;
  config?: TestImageConfig;
  /** Extra top-level config fields (e.g. created, author). */
  configExtra?: Record<string, unknown>;
  /** Manifest annotations (OCI only). */
  annotations?: Record<string, string>;
}

/** An image config + manifest over the given layers. */
export function buildImage(opts: BuildImageOptions): TestImage {
  const format = opts.format ?? 'oci';
  const platform = opts.platform ?? hostTestPlatform();
  for (const l of opts.layers) {
    const ok = format === 'oci' ? l.mediaType.startsWith('application/vnd.oci.') : l.mediaType.startsWith('application/vnd.docker.');
    if (!ok) throw new Error(`layer ${l.digest} has media type ${l.mediaType}, which does not fit a ${format} image`);
  }
  const configJson = {
    created: EPOCH.toISOString(),
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: ['sh'],
      ...(opts.config ?? {}),
    },
    rootfs: { type: 'layers', diff_ids: opts.layers.map((l) => l.diffId) },
    history: opts.layers.map((l, i) => ({ created: EPOCH.toISOString(), created_by: `corral test layer ${i} (${l.compression})` })),
    ...(opts.configExtra ?? {}),
  };
  const config = jsonBlob(format === 'oci' ? MT.ociConfig : MT.dockerConfig, configJson);
  const manifestJson: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: format === 'oci' ? MT.ociManifest : MT.dockerManifest,
    config: descriptor(config),
    layers: opts.layers.map((l) => descriptor(l)),
  };
  if (opts.annotations && format === 'oci') manifestJson.annotations = opts.annotations;
  const manifest = jsonBlob(manifestJson.mediaType as string, manifestJson);
  return { format, platform, manifest, config, layers: opts.layers, blobs: [config, ...opts.layers] };
}

export interface BusyboxImageOptions {
  compression?: Compression;
  format?: ImageFormat;
  platform?: TestPlatform;
  config?: TestImageConfig;
  /** More layers on top of the busybox one. */
  extraLayers?: TestLayer[];
  /** Every applet this busybox has (`busybox --list`), hard-linked to /bin/busybox, like the real busybox images. */
  allApplets?: boolean;
}

/** Every applet name the host's /bin/busybox offers, except those that would clash with the layer's own entries. */
export function allBusyboxApplets(): string[] {
  const out = execFileSync('/bin/busybox', ['--list']).toString();
  return out.split('\n').map((s) => s.trim()).filter((s) => s && s !== 'busybox' && /^[a-zA-Z0-9_.\[-]+$/.test(s));
}

/** The single-layer busybox image (plus any extra layers). */
export async function busyboxImage(opts: BusyboxImageOptions = {}): Promise<TestImage> {
  const format = opts.format ?? 'oci';
  const base = await buildLayer(opts.allApplets ? busyboxEntries(allBusyboxApplets(), 'hardlink') : busyboxEntries(), opts.compression ?? 'gzip', format);
  return buildImage({ layers: [base, ...(opts.extraLayers ?? [])], format, platform: opts.platform, config: opts.config });
}

/** busybox with whiteoutEntries() as its second layer. */
export async function whiteoutImage(opts: { compression?: Compression; format?: ImageFormat } = {}): Promise<TestImage> {
  const format = opts.format ?? 'oci';
  const top = await buildLayer(whiteoutEntries(), opts.compression ?? 'gzip', format);
  return busyboxImage({ ...opts, extraLayers: [top] });
}

/** An index (OCI) or manifest list (Docker) over images, each entry with its image's platform. */
export function buildIndex(images: TestImage[], format: ImageFormat = 'oci', annotations?: Record<string, string>): TestIndex {
  const mediaType = format === 'oci' ? MT.ociIndex : MT.dockerList;
  const json: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType,
    manifests: images.map((img) => descriptor(img.manifest, { platform: { ...img.platform } })),
  };
  if (annotations && format === 'oci') json.annotations = annotations;
  return { format, index: jsonBlob(mediaType, json), images };
}

/**
 * linux/amd64 and linux/arm64/v8 busybox images in one index. Both use the host's busybox
 * layer; their configs differ (architecture, and Env ARCH=<arch>), so which one was chosen
 * shows in the config digest and its Env.
 */
export async function multiArchIndex(opts: { format?: ImageFormat; compression?: Compression } = {}): Promise<TestIndex> {
  const format = opts.format ?? 'oci';
  const layer = await buildLayer(busyboxEntries(), opts.compression ?? 'gzip', format);
  const mk = (platform: TestPlatform) =>
    buildImage({ layers: [layer], format, platform, config: { Env: ['PATH=/bin', `ARCH=${platform.architecture}`], Cmd: ['sh'] } });
  return buildIndex([mk({ os: 'linux', architecture: 'amd64' }), mk({ os: 'linux', architecture: 'arm64', variant: 'v8' })], format);
}

/** A small image whose one layer holds a single file (fast to build; for tests that do not run it). */
export async function tinyImage(content = 'hello\n', opts: { format?: ImageFormat; compression?: Compression; platform?: TestPlatform } = {}): Promise<TestImage> {
  const format = opts.format ?? 'oci';
  const layer = await buildLayer([{ path: 'hello.txt', content }], opts.compression ?? 'gzip', format);
  return buildImage({ layers: [layer], format, platform: opts.platform });
}
