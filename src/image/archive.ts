/**
 * Importing image archives for air-gapped nodes: an OCI image layout in a tar (index.json,
 * blobs/sha256/...) or a `docker save` archive (manifest.json, <id>.json configs and
 * uncompressed layer tars). Every blob is verified or hashed on the way into the
 * content store; the images are then registered like pulled ones.
 */
import { createReadStream, createWriteStream, promises as fs } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tarStream from 'tar-stream';
import type { ImageRecord, ImageStore, ResolvedContent } from './image-store.js';
import { hostPlatform, selectPlatformManifest, type Platform } from './registry/platform.js';
import { sha256Counter } from '../util/hash-stream.js';

const MT_OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const MT_DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const MT_DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const MT_DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
const MT_DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar';
/** containerd's annotation for the full image name in an OCI layout index. */
const ANNOTATION_CONTAINERD_NAME = 'io.containerd.image.name';
const ANNOTATION_OCI_REF = 'org.opencontainers.image.ref.name';

/** Every entry of the archive is stored: blobs by digest, other files hashed, small JSON kept in memory. */
interface ArchiveContents {
  /** Path in the archive → digest of the stored copy. */
  files: Map<string, { digest: string; size: number }>;
  /** Small JSON documents (index.json, manifest.json), parsed. */
  json: Map<string, unknown>;
}

export async function importArchive(file: string, images: ImageStore, platform: Platform = hostPlatform()): Promise<ImageRecord[]> {
  const contents = await storeEntries(file, images);
  if (contents.json.has('index.json')) return importOciLayout(contents, images, platform);
  if (contents.json.has('manifest.json')) return importDockerSave(contents, images);
  throw new Error(`${file}: neither an OCI image layout (no index.json) nor a docker save archive (no manifest.json)`);
}

async function storeEntries(file: string, images: ImageStore): Promise<ArchiveContents> {
  const out: ArchiveContents = { files: new Map(), json: new Map() };
  const tmpDir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-import-'));
  try {
    const extract = tarStream.extract();
    extract.on('entry', (header, stream, next) => {
      const name = path.posix.normalize(header.name).replace(/^(\.\/)+/, '').replace(/^\/+/, '');
      if (header.type !== 'file' || name.startsWith('..')) {
        stream.resume();
        stream.on('end', next);
        return;
      }
      storeEntry(name, stream as unknown as NodeJS.ReadableStream, images, tmpDir, out).then(() => next(), (e) => next(e));
    });
    const source = createReadStream(file);
    const head = await readHead(file);
    const gz = head[0] === 0x1f && head[1] === 0x8b;
    await (gz ? pipeline(source, createGunzip(), extract) : pipeline(source, extract));
    return out;
  } finally {
    await fs.rm(tmpDir, { recursive: true, force: true });
  }
}

async function readHead(file: string): Promise<Buffer> {
  const fh = await fs.open(file, 'r');
  try {
    const buf = Buffer.alloc(2);
    await fh.read(buf, 0, 2, 0);
    return buf;
  } finally {
    await fh.close();
  }
}

async function storeEntry(name: string, stream: NodeJS.ReadableStream, images: ImageStore, tmpDir: string, out: ArchiveContents): Promise<void> {
  if (name === 'index.json' || name === 'manifest.json' || name === 'oci-layout' || name === 'repositories') {
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    if (name.endsWith('.json')) out.json.set(name, JSON.parse(Buffer.concat(chunks).toString('utf8')));
    return;
  }
  const blob = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(name);
  // Hash while spooling to a temp file; the content store then verifies the digest again on ingest.
  const tmp = path.join(tmpDir, randomBytes(8).toString('hex'));
  const hasher = sha256Counter();
  await pipeline(stream, hasher.stream, createWriteStream(tmp));
  const digest = hasher.digest();
  const size = hasher.size();
  if (blob && blob[1] !== digest.slice(7)) throw new Error(`archive entry ${name} does not match its digest (content is ${digest})`);
  await images.content.ingest(digest, size, async () => createReadStream(tmp));
  await fs.rm(tmp, { force: true });
  out.files.set(name, { digest, size });
}

async function importOciLayout(contents: ArchiveContents, images: ImageStore, platform: Platform): Promise<ImageRecord[]> {
  const index = contents.json.get('index.json') as { manifests?: any[] };
  const imported: ImageRecord[] = [];
  for (const desc of index.manifests ?? []) {
    const name: string | undefined = desc.annotations?.[ANNOTATION_CONTAINERD_NAME] ?? desc.annotations?.[ANNOTATION_OCI_REF];
    if (!name) continue;
    const manifestDigest = await manifestForPlatform(images, desc, platform);
    const manifest = await images.content.readJson<any>(manifestDigest);
    const resolved: ResolvedContent = {
      manifestDigest,
      referenceDigest: desc.digest,
      configDigest: manifest.config.digest,
      layers: manifest.layers.map((l: any) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType })),
    };
    await requireBlobs(images, [resolved.configDigest, ...resolved.layers.map((l) => l.digest)]);
    imported.push(await images.register(name.includes('/') || name.includes(':') ? name : `${name}:latest`, resolved));
  }
  if (imported.length === 0) throw new Error('the OCI layout names no image (no io.containerd.image.name or org.opencontainers.image.ref.name annotation)');
  return imported;
}

async function manifestForPlatform(images: ImageStore, desc: any, platform: Platform): Promise<string> {
  if (desc.mediaType !== MT_OCI_INDEX && desc.mediaType !== MT_DOCKER_LIST) return desc.digest;
  const index = await images.content.readJson<any>(desc.digest);
  const match = selectPlatformManifest(index.manifests ?? [], platform) as { digest: string } | undefined;
  if (!match) throw new Error(`index ${desc.digest} has no manifest for ${platform.os}/${platform.architecture}`);
  return match.digest;
}

async function requireBlobs(images: ImageStore, digests: string[]): Promise<void> {
  for (const d of digests) {
    if (!(await images.content.has(d))) throw new Error(`the archive lacks blob ${d}`);
  }
}

async function importDockerSave(contents: ArchiveContents, images: ImageStore): Promise<ImageRecord[]> {
  const entries = contents.json.get('manifest.json') as { Config: string; RepoTags?: string[]; Layers: string[] }[];
  const imported: ImageRecord[] = [];
  for (const e of entries) {
    const config = contents.files.get(path.posix.normalize(e.Config));
    if (!config) throw new Error(`docker archive: config ${e.Config} missing`);
    const layers = e.Layers.map((l) => {
      const f = contents.files.get(path.posix.normalize(l));
      if (!f) throw new Error(`docker archive: layer ${l} missing`);
      return { digest: f.digest, size: f.size, mediaType: MT_DOCKER_LAYER };
    });
    // docker save carries no registry manifest: write the equivalent schema 2 manifest.
    const manifest = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: MT_DOCKER_MANIFEST, config: { mediaType: MT_DOCKER_CONFIG, digest: config.digest, size: config.size }, layers }),
    );
    const manifestDigest = `sha256:${createHash('sha256').update(manifest).digest('hex')}`;
    await images.content.ingest(manifestDigest, manifest.length, async () => {
      const { Readable } = await import('node:stream');
      return Readable.from([manifest]);
    });
    const resolved: ResolvedContent = { manifestDigest, referenceDigest: manifestDigest, configDigest: config.digest, layers };
    for (const tag of e.RepoTags ?? []) imported.push(await images.register(tag, resolved));
  }
  if (imported.length === 0) throw new Error('the docker archive names no image (no RepoTags)');
  return imported;
}
