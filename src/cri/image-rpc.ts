/** ImageService handlers: PullImage, ListImages, ImageStatus, RemoveImage, ImageFsInfo. */
import path from 'node:path';
import type { CorralConfig } from '../config/config.js';
import { SampledDirUsage } from '../image/fs-usage.js';
import type { ImageRecord } from '../image/image-store.js';
import type { ImageService } from '../image/image-service.js';
import { imageUser } from '../image/image-user.js';
import { invalidArgument } from '../errors.js';
import { msToNs, nowNs } from '../util/time.js';
import type { ImageHandlers } from './rpc-types.js';
import { frozenMessage } from './proto.js';
import type { ImageSpec } from '../cri-api/types.js';

export function imageHandlers(cfg: CorralConfig, images: ImageService) {
  // Sampled from now on, at most every 10 s and only while someone asks (kubelet polls).
  const containerUsage = new SampledDirUsage(path.join(cfg.rootDir, 'containers'));
  void containerUsage.refresh().catch(() => {});
  const toCri = (i: ImageRecord) => {
    const user = imageUser(i.user);
    return {
      id: i.id,
      repoTags: i.repoTags,
      repoDigests: i.repoDigests,
      size: String(i.size),
      uid: user.uid !== undefined ? { value: user.uid } : null,
      username: user.username,
      spec: { image: i.id, annotations: {} },
      pinned: images.isPinned(i),
    };
  };

  /**
   * ListImages' item of an image, made once and reused while the image's tags, digests and
   * pin stay as they were, so that it is encoded once too (frozenMessage). The store changes
   * a record's tags in place, so they are part of the check.
   */
  const listItems = new WeakMap<ImageRecord, { key: string; item: Readonly<ReturnType<typeof toCri>> }>();
  const listItem = (i: ImageRecord) => {
    const pinned = images.isPinned(i);
    const key = `${pinned}\0${i.repoTags.join('\0')}\0\0${i.repoDigests.join('\0')}`;
    let memo = listItems.get(i);
    if (memo?.key !== key) listItems.set(i, (memo = { key, item: frozenMessage(toCri(i)) }));
    return memo.item;
  };

  return {
    async PullImage(req) {
      const ref = requireImage(req.image);
      const auth = req.auth
        ? {
            username: req.auth.username || undefined,
            password: req.auth.password || undefined,
            auth: req.auth.auth || undefined,
            serverAddress: req.auth.serverAddress || undefined,
            identityToken: req.auth.identityToken || undefined,
            registryToken: req.auth.registryToken || undefined,
          }
        : undefined;
      const image = await images.pull(ref, auth);
      return { imageRef: image.id };
    },

    async ListImages(req) {
      const wanted: string = req.filter?.image?.image ?? '';
      let list = await images.list();
      if (wanted) {
        const match = await images.find(wanted);
        list = match ? [match] : [];
      }
      return { images: list.map(listItem) };
    },

    async ImageStatus(req) {
      const ref = requireImage(req.image);
      const image = await images.find(ref);
      // An unknown image is not an error: the CRI answers with an empty image.
      if (!image) return { image: null, info: {} };
      const info: Record<string, string> = {};
      if (req.verbose) {
        const config = await images.store.content.readJson<unknown>(image.configDigest);
        info.info = JSON.stringify({ id: image.id, manifestDigest: image.manifestDigest, chainIds: image.chainIds, imageSpec: config });
      }
      return { image: toCri(image), info };
    },

    async RemoveImage(req) {
      await images.remove(requireImage(req.image));
      return {};
    },

    async ImageFsInfo() {
      // The image store's usage is kept as layers and blobs come and go (current as of
      // now); containers' writable layers change with every write, so they are sampled.
      const timestamp = nowNs();
      const [imageUsage, containerSample] = await Promise.all([images.store.usage.current(), containerUsage.current()]);
      const report = (mountpoint: string, at: string, u: { bytes: number; inodes: number }) => ({
        timestamp: at,
        fsId: { mountpoint },
        usedBytes: { value: u.bytes },
        inodesUsed: { value: u.inodes },
      });
      return {
        imageFilesystems: [report(images.store.root, timestamp, imageUsage)],
        containerFilesystems: [report(containerUsage.dir, msToNs(containerSample.atMs), containerSample.usage)],
      };
    },
  } satisfies ImageHandlers;
}

function requireImage(spec: ImageSpec | null): string {
  const ref = spec?.image;
  if (typeof ref !== 'string' || ref === '') throw invalidArgument('an image reference is required (ImageSpec.image)');
  return ref;
}
