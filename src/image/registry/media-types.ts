/** The manifest, config and layer media types Corral pulls, and how to tell them apart. */

export const MT_OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const MT_OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MT_OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const MT_OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar';
export const MT_OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const MT_OCI_LAYER_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
export const MT_OCI_LAYER_ND = 'application/vnd.oci.image.layer.nondistributable.v1.tar';
export const MT_OCI_LAYER_ND_GZIP = 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip';
export const MT_OCI_LAYER_ND_ZSTD = 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd';

export const MT_DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const MT_DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const MT_DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
export const MT_DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar';
export const MT_DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
export const MT_DOCKER_LAYER_FOREIGN = 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip';
export const MT_DOCKER_SCHEMA1 = 'application/vnd.docker.distribution.manifest.v1+json';
export const MT_DOCKER_SCHEMA1_SIGNED = 'application/vnd.docker.distribution.manifest.v1+prettyjws';

/** What the manifests endpoint is asked for, most preferred first. */
export const MANIFEST_ACCEPT = [MT_OCI_INDEX, MT_OCI_MANIFEST, MT_DOCKER_LIST, MT_DOCKER_MANIFEST].join(', ');

export const INDEX_TYPES: ReadonlySet<string> = new Set([MT_OCI_INDEX, MT_DOCKER_LIST]);
export const MANIFEST_TYPES: ReadonlySet<string> = new Set([MT_OCI_MANIFEST, MT_DOCKER_MANIFEST]);
export const CONFIG_TYPES: ReadonlySet<string> = new Set([MT_OCI_CONFIG, MT_DOCKER_CONFIG]);
export const LAYER_TYPES: ReadonlySet<string> = new Set([
  MT_OCI_LAYER, MT_OCI_LAYER_GZIP, MT_OCI_LAYER_ZSTD, MT_OCI_LAYER_ND, MT_OCI_LAYER_ND_GZIP, MT_OCI_LAYER_ND_ZSTD,
  MT_DOCKER_LAYER, MT_DOCKER_LAYER_GZIP, MT_DOCKER_LAYER_FOREIGN,
]);

/** A content descriptor as manifests and indexes carry them. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: { os: string; architecture: string; variant?: string; 'os.version'?: string; 'os.features'?: string[] };
}

/**
 * The media type of a fetched manifest: the Content-Type when it is a specific one,
 * else the document's own `mediaType`, else guessed from its shape. Schema 1 is
 * recognised so it can be refused by name.
 */
export function detectManifestType(contentType: string | undefined, doc: unknown): string {
  const ct = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (ct && ct !== 'application/json' && ct !== 'text/plain' && ct !== 'application/octet-stream') return ct;
  const d = (doc ?? {}) as Record<string, unknown>;
  if (typeof d.mediaType === 'string' && d.mediaType) return d.mediaType;
  if (d.schemaVersion === 1 || Array.isArray(d.fsLayers)) return MT_DOCKER_SCHEMA1;
  if (Array.isArray(d.manifests)) return MT_OCI_INDEX;
  if (d.config && Array.isArray(d.layers)) return MT_OCI_MANIFEST;
  return ct || 'unknown';
}
