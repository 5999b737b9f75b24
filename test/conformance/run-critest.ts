/**
 * Runs the real critest (kubernetes-sigs/cri-tools, built from its v1.26.1 tag; not in
 * Debian, so not part of CI) against a throwaway Corral daemon, with the images critest
 * pulls built locally and served by Debian's docker-registry on 127.0.0.1 through
 * Corral's mirror configuration for gcr.io and registry.k8s.io.
 *
 *   node dist/test/conformance/run-critest.js [--critest PATH] [--focus REGEX] [--skip REGEX]
 *     [--runtime-handler runsc]
 *
 * --runtime-handler runsc configures gVisor (`[runtimes.runsc] path = "runsc", type = "vm"`,
 * beside runc) and has critest run every pod with it.
 *
 * Defaults: critest from PATH, focus "Image Manager|PodSandbox", skip the spec pinned to
 * an upstream digest. Exit status is critest's. Everything started is cleaned up.
 */
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { TestDaemon } from '../helpers/daemon.js';
import { pushImage, startRegistry } from '../helpers/registry.js';
import { critestBusyboxImage, critestMirrorToml, nginxStandIn, nonewprivsImage, pushCritestImages } from '../helpers/critest-images.js';
import { buildLayer, busyboxImage } from '../helpers/test-images.js';

const { values } = parseArgs({
  options: {
    critest: { type: 'string', default: 'critest' },
    focus: { type: 'string', default: 'Image Manager|PodSandbox' },
    skip: { type: 'string', default: 'public image with digest' },
    'runtime-handler': { type: 'string', default: '' },
  },
});
const handler = values['runtime-handler']!;
if (handler && handler !== 'runsc') throw new Error(`--runtime-handler: only runsc is known here, got "${handler}"`);
const handlerToml = handler ? ['[runtimes.runc]', 'path = "runc"', `[runtimes.${handler}]`, `path = "${handler}"`, 'type = "vm"'].join('\n') : '';

const reg = await startRegistry();
const d = new TestDaemon({ extraToml: [critestMirrorToml(reg), handlerToml].join('\n') });
let code = 1;
try {
  await pushCritestImages(reg);
  // critest's default container image (DefaultTestContainerImage).
  await pushImage(reg, 'e2e-test-images/busybox', '1.29-2', await critestBusyboxImage());
  // The NoNewPrivs specs' image: a setuid-root program printing its effective uid.
  await pushImage(reg, 'e2e-test-images/nonewprivs', '1.3', await nonewprivsImage());
  // Stands in for registry.k8s.io/e2e-test-images/nginx: busybox's httpd serving on port 80.
  const page = await buildLayer([{ path: 'usr/share/nginx/html/index.html', content: '<html><body>corral test nginx</body></html>\n' }]);
  // Apache's log names its command line ("httpd -D FOREGROUND"); critest looks for it.
  const httpd = (root: string) => ({ Entrypoint: ['sh', '-c', `echo "Command line: 'httpd -D FOREGROUND'"; exec httpd -f -p 80 -h ${root}`], Cmd: [] });
  const run = await buildLayer([{ path: 'var/', type: 'directory' }, { path: 'var/run/', type: 'directory' }, { path: 'usr/local/apache2/htdocs/index.html', content: '<html><body>It works!</body></html>\n' }]);
  const nginx = nginxStandIn('/usr/share/nginx/html');
  await pushImage(reg, 'e2e-test-images/nginx', '1.14-2', await busyboxImage({ allApplets: true, extraLayers: [page, await buildLayer(nginx.layer)], config: nginx.config }));
  // The Streaming spec "portforward in host network": gcr.io/k8s-staging-cri-tools/hostnet-nginx-<arch>, a web server on host port 12003.
  await pushImage(reg, `k8s-staging-cri-tools/hostnet-nginx-${process.arch === 'arm64' ? 'arm64' : 'amd64'}`, 'latest', await busyboxImage({ allApplets: true, extraLayers: [page, run], config: { Entrypoint: ['httpd', '-f', '-p', '12003', '-h', '/usr/share/nginx/html'], Cmd: [] } }));
  // And for registry.k8s.io/e2e-test-images/httpd.
  await pushImage(reg, 'e2e-test-images/httpd', '2.4.39-4', await busyboxImage({ allApplets: true, extraLayers: [run], config: httpd('/usr/local/apache2/htdocs') }));
  await d.start();
  const endpoint = `unix://${d.socket}`;
  const args = [`--runtime-endpoint=${endpoint}`, `--image-endpoint=${endpoint}`, `--ginkgo.focus=${values.focus}`, `--ginkgo.skip=${values.skip}`, '--ginkgo.no-color'];
  if (handler) args.push(`--runtime-handler=${handler}`);
  console.log(`critest ${args.join(' ')}`);
  code = await new Promise<number>((resolve, reject) => {
    const child = spawn(values.critest!, args, { stdio: 'inherit' });
    child.on('error', (e) => reject(new Error(`cannot run ${values.critest}: ${e.message} (build critest from cri-tools v1.26.1 and put it on PATH)`)));
    child.on('close', (c) => resolve(c ?? 1));
  });
} catch (e) {
  console.error((e as Error).message);
} finally {
  await d.cleanup();
  await reg.stop();
}
process.exit(code);
