/**
 * A trickling registry through a real daemon: PullImage fails at the configured progress
 * deadline with DEADLINE_EXCEEDED and a message that says why, a second PullImage of the
 * same image (which joins the first) fails with it, and meanwhile RemoveImage of another
 * image frees that image's blobs and layers: a hanging pull holds only what it uses.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { TestDaemon } from '../helpers/daemon.js';
import { startHostileServer, type HostileServer } from '../helpers/registry.js';
import { buildImage, buildLayer, tinyImage, type TestImage } from '../helpers/test-images.js';
import { call, createImageClient } from '../../src/cri/client.js';
import type { ImageRpcName } from '../../src/cri/proto.js';
import { waitFor } from '../helpers/wait.js';

const PROGRESS_DEADLINE_S = 5;

let registry: HostileServer | undefined;
let d: TestDaemon | undefined;
let client: ReturnType<typeof createImageClient> | undefined;
let slow: TestImage;
let other: TestImage;
const irpc = (method: ImageRpcName, req: object = {}) => call<any>(client!, method, req, { deadlineMs: 30_000 });

before(async () => {
  // 64 KiB of noise: at 16 bytes every 200 ms the layer would take over 13 minutes.
  slow = buildImage({ layers: [await buildLayer([{ path: 'noise.bin', content: randomBytes(64 * 1024) }])] });
  other = await tinyImage('collect me\n');
  registry = await startHostileServer();
  registry.serveImage('team/slow', '1', slow).serveImage('team/other', '1', other);
  registry.on(new RegExp(`/blobs/${slow.layers[0]!.digest}$`), { trickle: slow.layers[0]!.bytes, bytesPerTick: 16, intervalMs: 200 });
  d = new TestDaemon({ extraToml: `[image_pull]\nprogress_deadline_seconds = ${PROGRESS_DEADLINE_S}\nprogress_min_bytes = 4096\ntimeout_seconds = 600\n` });
  await d.start();
  client = createImageClient(d.socket);
});

after(async () => {
  client?.close();
  await d?.cleanup();
  await registry?.stop();
});

const blobFile = (digest: string) => path.join(d!.rootDir, 'images', 'blobs', 'sha256', digest.slice(7));
const exists = (p: string) => fs.stat(p).then(() => true, () => false);
const snapshots = () => fs.readdir(path.join(d!.rootDir, 'images', 'snapshots')).then((n) => n.filter((x) => !x.startsWith('.')), () => [] as string[]);

test('a trickling registry: both pulls of the image fail at the progress deadline, and another image is collected meanwhile', async () => {
  const otherRef = `${registry!.host}/team/other:1`;
  await irpc('PullImage', { image: { image: otherRef } });
  assert.ok(await exists(blobFile(other.layers[0]!.digest)));
  assert.equal((await snapshots()).length, 1);

  const slowRef = `${registry!.host}/team/slow:1`;
  const t0 = Date.now();
  let settled = false;
  const pulls = Promise.allSettled([irpc('PullImage', { image: { image: slowRef } }), irpc('PullImage', { image: { image: slowRef } })]).finally(() => {
    settled = true;
  });
  // Wait until the layer trickles.
  await waitFor(() => registry!.requests.some((r) => r.path.endsWith(slow.layers[0]!.digest)), { timeoutMs: 5000, intervalMs: 50, what: 'the slow layer to be requested' });

  // RemoveImage of the other image collects its layer and blobs now, not after the pull.
  await irpc('RemoveImage', { image: { image: otherRef } });
  assert.equal(settled, false, 'the trickled pull is still hanging');
  assert.equal(await exists(blobFile(other.layers[0]!.digest)), false, 'the other image\'s layer blob is freed');
  assert.equal(await exists(blobFile(other.config.digest)), false, 'the other image\'s config blob is freed');
  assert.deepEqual(await snapshots(), [], 'the other image\'s unpacked layer is freed');
  // What the hanging pull already stored is kept.
  assert.ok(await exists(blobFile(slow.config.digest)), 'the pull\'s own config blob is held');

  const results = await pulls;
  const ms = Date.now() - t0;
  for (const r of results) {
    assert.equal(r.status, 'rejected', 'the pull failed');
    const e = (r as PromiseRejectedResult).reason as { code: number; details: string };
    assert.equal(e.code, status.DEADLINE_EXCEEDED, e.details);
    assert.match(e.details, new RegExp(`pull ${slowRef.replace(/[.]/g, '\\.')}: pull aborted: no progress \\(http://127\\.0\\.0\\.1:\\d+: no progress for ${PROGRESS_DEADLINE_S} s: received only \\d+ bytes \\(at least 4096 needed\\)`));
  }
  assert.ok(ms < (PROGRESS_DEADLINE_S + 5) * 1000, `failed after ${ms} ms`);
  assert.equal(await exists(blobFile(slow.layers[0]!.digest)), false, 'nothing of the layer is stored');
  assert.deepEqual(await fs.readdir(path.join(d!.rootDir, 'images', 'ingest')), [], 'no partial download is left');

  // The registry recovers: the next pull of the image works (and now releases its hold).
  registry!.on(new RegExp(`/blobs/${slow.layers[0]!.digest}$`), { status: 200, body: slow.layers[0]!.bytes });
  const { imageRef } = await irpc('PullImage', { image: { image: slowRef } });
  assert.equal(imageRef, slow.config.digest);
  await irpc('RemoveImage', { image: { image: slowRef } });
  assert.equal(await exists(blobFile(slow.layers[0]!.digest)), false, 'a finished pull holds nothing');
  assert.deepEqual(await snapshots(), []);
});
