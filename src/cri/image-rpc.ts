/** ImageService handlers: PullImage, ListImages, ImageStatus, RemoveImage, ImageFsInfo. */
import path from 'node:path';
import type { CorralConfig } from '../config/config.js';
import { dirUsage } from '../image/fs-usage.js';
import type { ImageRecord } from '../image/image-store.js';
import type { ImageService } from '../image/image-service.js';
import { imageUser } from '../image/image-user.js';
import { invalidArgument } from '../errors.js';
import { nowNs } from '../util/time.js';
import type { ImageHandlers } from './rpc-types.js';
import type { ImageSpec } from '../cri-api/types.js';

export function imageHandlers(cfg: CorralConfig, images: ImageService) {
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
      return { images: list.map(toCri) };
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
      const timestamp = nowNs();
      const usage = async (mountpoint: string) => {
        const u = await dirUsage(mountpoint);
        return { timestamp, fsId: { mountpoint }, usedBytes: { value: u.bytes }, inodesUsed: { value: u.inodes } };
      };
      const [imageFs, containerFs] = await Promise.all([usage(images.store.root), usage(path.join(cfg.rootDir, 'containers'))]);
      return { imageFilesystems: [imageFs], containerFilesystems: [containerFs] };
    },
  } satisfies ImageHandlers;
}

function requireImage(spec: ImageSpec | null): string {
  const ref = spec?.image;
  if (typeof ref !== 'string' || ref === '') throw invalidArgument('an image reference is required (ImageSpec.image)');
  return ref;
}
