/**
 * The images critest v1.26.1's Image Manager specs pull (gcr.io/k8s-staging-cri-tools/
 * test-image-*), built here from busybox-static and pushed to a local registry under
 * the same repository paths, so a runtime mirroring gcr.io to that registry serves them.
 * Which images must differ, and the users they carry, follow cri-tools'
 * pkg/validate/consts.go and image.go. The digest-pinned spec (test-image-digest@…) is
 * not reproducible: its digest names upstream bytes.
 */
import { pushImage, type TestRegistry } from './registry.js';
import { buildImage, buildLayer, busyboxEntries, type TestImage } from './test-images.js';

export const CRITEST_REGISTRY = 'gcr.io';
export const CRITEST_REPO_PREFIX = 'k8s-staging-cri-tools';

/** Repository (under the prefix) and tag → what the image is. */
export interface CritestImage {
  repo: string;
  tag: string;
  image: TestImage;
}

export async function critestImages(): Promise<CritestImage[]> {
  const base = await buildLayer(busyboxEntries());
  // A one-file top layer makes an image distinct from every other one.
  const variant = async (marker: string, user?: string) =>
    buildImage({ layers: [base, await buildLayer([{ path: 'critest-image', content: `${marker}\n` }])], config: user === undefined ? {} : { User: user } });
  const shared = await variant('tags');
  const plain = await variant('plain');
  const out: CritestImage[] = [
    { repo: 'test-image-latest', tag: 'latest', image: plain },
    { repo: 'test-image-tag', tag: 'test', image: plain },
    { repo: 'test-image-tag', tag: 'all', image: plain },
    { repo: 'test-image-user-uid', tag: 'latest', image: await variant('uid', '1002') },
    { repo: 'test-image-user-username', tag: 'latest', image: await variant('username', 'www-data') },
    { repo: 'test-image-user-uid-group', tag: 'latest', image: await variant('uid-group', '1003:1003') },
    { repo: 'test-image-user-username-group', tag: 'latest', image: await variant('username-group', 'www-data:www-data') },
    { repo: 'test-image-tags', tag: '1', image: shared },
    { repo: 'test-image-tags', tag: '2', image: shared },
    { repo: 'test-image-tags', tag: '3', image: shared },
  ];
  for (const n of [1, 2, 3]) out.push({ repo: `test-image-${n}`, tag: 'latest', image: await variant(`different-${n}`) });
  // User 1000 is a member of group 50000 in the image's /etc/group (Security Context specs).
  const predefined = await buildLayer([
    { path: 'etc/', type: 'directory' },
    { path: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\ndefault-user:x:1000:1000::/home/default-user:/bin/sh\n' },
    { path: 'etc/group', content: 'root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n' },
  ]);
  out.push({ repo: 'test-image-predefined-group', tag: 'latest', image: buildImage({ layers: [base, predefined], config: { User: '1000' } }) });
  return out;
}

/** Pushes every critest image to reg as `<prefix>/<repo>:<tag>`. */
export async function pushCritestImages(reg: TestRegistry): Promise<CritestImage[]> {
  const images = await critestImages();
  for (const i of images) await pushImage(reg, `${CRITEST_REPO_PREFIX}/${i.repo}`, i.tag, i.image);
  return images;
}

/** Corral config lines that send gcr.io and registry.k8s.io pulls to reg. */
export function critestMirrorToml(reg: TestRegistry): string {
  return [CRITEST_REGISTRY, 'registry.k8s.io'].map((r) => `[registries."${r}"]\nmirrors = ["http://${reg.host}"]\n`).join('');
}
