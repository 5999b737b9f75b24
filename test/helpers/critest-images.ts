/**
 * The images critest v1.26.1's Image Manager specs pull (gcr.io/k8s-staging-cri-tools/
 * test-image-*), built here from busybox-static and pushed to a local registry under
 * the same repository paths, so a runtime mirroring gcr.io to that registry serves them.
 * Which images must differ, and the users they carry, follow cri-tools'
 * pkg/validate/consts.go and image.go. The digest-pinned spec (test-image-digest@…) is
 * not reproducible: its digest names upstream bytes.
 *
 * Below them, stand-ins for the e2e-test-images the other specs run (busybox, nonewprivs,
 * nginx), each with what those specs rely on; test/conformance/run-critest.ts pushes them.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pushImage, type TestRegistry } from './registry.js';
import { buildImage, buildLayer, busyboxEntries, busyboxImage, type TarEntry, type TestImage, type TestImageConfig } from './test-images.js';

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

/**
 * Debian's dynamically linked busybox, unpacked by scripts/install-deps.sh (its package
 * conflicts with busybox-static). Its sh looks commands up in PATH like the upstream image's,
 * where busybox-static's always runs its own applets.
 */
export const CRITEST_BUSYBOX = '/usr/local/lib/corral-test/busybox';

/** Host programs the upstream busybox has as applets and Debian's busybox lacks. */
const HOST_TOOLS = [
  { path: '/usr/bin/pgrep', why: 'critest checks a timed-out exec is gone with `pgrep sleep`' },
  { path: '/usr/bin/ipcs', why: 'the HostIpc specs list shared memory with `ipcs -m`' },
];

/** The shared libraries a host binary loads (ldd), the loader included. */
function sharedLibraries(binary: string): string[] {
  const out = execFileSync('ldd', [binary]).toString();
  return [...out.matchAll(/(?:=> )?(\/\S+) \(0x/g)].map((m) => m[1]!);
}

/** Tar entries for files at their host paths (symlinks followed), with their parent directories. */
function hostFileEntries(files: readonly string[]): TarEntry[] {
  const dirs = new Set<string>();
  for (const f of files) for (let d = path.dirname(f); d !== '/'; d = path.dirname(d)) dirs.add(d);
  return [
    ...[...dirs].sort().map((d): TarEntry => ({ path: `${d.slice(1)}/`, type: 'directory' })),
    ...files.map((f): TarEntry => ({ path: f.slice(1), content: readFileSync(f), mode: 0o755 })),
  ];
}

/**
 * Stands in for registry.k8s.io/e2e-test-images/busybox:1.29-2, critest's default container
 * image: busybox with every applet hard-linked in /bin, a shell that runs what PATH finds
 * (so a masked /bin/ls fails with "Permission denied"), and pgrep and ipcs, here the host's
 * procps and util-linux ones with the libraries all three need.
 */
export async function critestBusyboxImage(config: TestImageConfig = {}): Promise<TestImage> {
  if (!existsSync(CRITEST_BUSYBOX)) throw new Error(`${CRITEST_BUSYBOX} is missing: run scripts/install-deps.sh (it unpacks Debian's busybox package there)`);
  const tools = HOST_TOOLS.map((t) => t.path);
  for (const t of HOST_TOOLS) if (!existsSync(t.path)) throw new Error(`${t.path} is missing (${t.why}): apt-get install procps util-linux`);
  const names = new Set(tools.map((t) => path.basename(t)));
  const applets = execFileSync(CRITEST_BUSYBOX, ['--list']).toString().split('\n').map((a) => a.trim()).filter((a) => a && a !== 'busybox' && !names.has(a) && /^[a-zA-Z0-9_.[-]+$/.test(a));
  const base = busyboxEntries(applets, 'hardlink').map((e) => (e.path === 'bin/busybox' ? { ...e, content: readFileSync(CRITEST_BUSYBOX) } : e));
  const libraries = [...new Set([CRITEST_BUSYBOX, ...tools].flatMap(sharedLibraries))];
  const toolEntries = tools.map((t): TarEntry => ({ path: `bin/${path.basename(t)}`, content: readFileSync(t), mode: 0o755 }));
  return buildImage({ layers: [await buildLayer([...base, ...toolEntries, ...hostFileEntries(libraries)])], config });
}

/** What the upstream nonewprivs image's program does: print the effective uid it runs with. */
const NNP_SOURCE = `#include <stdio.h>
#include <unistd.h>
int main(void) { printf("Effective uid: %d\\n", (int)geteuid()); return 0; }
`;

/**
 * Stands in for registry.k8s.io/e2e-test-images/nonewprivs:1.3 as its Dockerfile builds it:
 * busybox plus /usr/local/bin/nnp, setuid root, run as the image's CMD. Built here with gcc,
 * statically, so it needs nothing from the image. critest runs it as uid 1000: it prints
 * "Effective uid: 0" unless no_new_privs stops the setuid bit.
 */
export async function nonewprivsImage(): Promise<TestImage> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-nnp-'));
  try {
    writeFileSync(path.join(dir, 'nnp.c'), NNP_SOURCE);
    execFileSync('gcc', ['-static', '-O2', '-o', path.join(dir, 'nnp'), path.join(dir, 'nnp.c')], { stdio: ['ignore', 'ignore', 'pipe'] });
    const nnp = await buildLayer([
      { path: 'usr/', type: 'directory' },
      { path: 'usr/local/', type: 'directory' },
      { path: 'usr/local/bin/', type: 'directory' },
      { path: 'usr/local/bin/nnp', content: readFileSync(path.join(dir, 'nnp')), mode: 0o4755, uid: 0, gid: 0 },
    ]);
    return await busyboxImage({ allApplets: true, extraLayers: [nnp], config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['nnp'] } });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The web server layer of the nginx stand-in (registry.k8s.io/e2e-test-images/nginx:1.14-2):
 * busybox's httpd run as /usr/sbin/nginx (a link to busybox), so its process is named
 * "nginx" (critest's HostPID spec finds it with `pidof nginx`) and, like nginx's master, its
 * command line says "master process" (the ContainerPID spec reads /proc/1/cmdline). Busybox
 * picks the applet from argv[0]'s last path part, so argv[0] ends in "/httpd".
 */
export function nginxStandIn(root: string): { layer: TarEntry[]; config: TestImageConfig } {
  const argv0 = 'nginx: master process nginx -g daemon off;/httpd';
  return {
    layer: [
      { path: 'usr/', type: 'directory' },
      { path: 'usr/sbin/', type: 'directory' },
      { path: 'usr/sbin/nginx', type: 'symlink', linkname: '/bin/busybox' },
      { path: 'var/', type: 'directory' },
      { path: 'var/run/', type: 'directory' },
    ],
    // The shell writes its own PID, which exec hands to the server, as nginx writes the master's.
    config: { Entrypoint: ['sh', '-c', `echo $$ > /var/run/nginx.pid; exec -a '${argv0}' /usr/sbin/nginx -f -p 80 -h ${root}`], Cmd: [] },
  };
}
