/**
 * ImageService handlers served so far. Image pulling, listing and removal come with the
 * image store; until then those RPCs answer UNIMPLEMENTED. ImageFsInfo reports what
 * Corral really keeps: its built-in sandbox image and the containers' writable state.
 */
import path from 'node:path';
import type { CorralConfig } from '../config/config.js';
import { dirUsage } from '../image/fs-usage.js';

export function imageHandlers(cfg: CorralConfig) {
  return {
    async ImageFsInfo() {
      const timestamp = (BigInt(Date.now()) * 1_000_000n).toString();
      const usage = async (mountpoint: string) => {
        const u = await dirUsage(mountpoint);
        return { timestamp, fsId: { mountpoint }, usedBytes: { value: u.bytes }, inodesUsed: { value: u.inodes } };
      };
      const [images, containers] = await Promise.all([usage(path.join(cfg.rootDir, 'sandbox-image')), usage(path.join(cfg.rootDir, 'containers'))]);
      return { imageFilesystems: [images], containerFilesystems: [containers] };
    },
  };
}
