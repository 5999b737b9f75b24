/**
 * The setup most integration tests share: a registry serving busybox, a TestDaemon, and the
 * image already pulled into it, so a test can go straight to pods and containers.
 */
import { TestDaemon, type TestDaemonOptions } from './daemon.js';
import { pushImage, startRegistry, type TestRegistry } from './registry.js';
import { busyboxImage, type BusyboxImageOptions } from './test-images.js';
import { createImageClient, call } from '../../src/cri/client.js';

export interface BusyboxDaemon {
  reg: TestRegistry;
  d: TestDaemon;
  /** The pulled busybox reference, `<registry>/test/busybox:<tag>`. */
  image: string;
}

/**
 * Starts a registry and a daemon (with `daemon` options) and pulls busybox (tag `tag`, built
 * with `busybox`) into it.
 * On failure it stops what it started, so a failing `before` leaves nothing behind.
 */
export async function startDaemonWithBusybox(opts: { tag?: string; busybox?: BusyboxImageOptions; daemon?: TestDaemonOptions } = {}): Promise<BusyboxDaemon> {
  const tag = opts.tag ?? '1';
  const reg = await startRegistry();
  let d: TestDaemon | undefined;
  try {
    await pushImage(reg, 'test/busybox', tag, await busyboxImage(opts.busybox));
    const image = `${reg.host}/test/busybox:${tag}`;
    d = new TestDaemon(opts.daemon);
    await d.start();
    const images = createImageClient(d.socket);
    try {
      await call(images, 'PullImage', { image: { image } }, { deadlineMs: 60_000 });
    } finally {
      images.close();
    }
    return { reg, d, image };
  } catch (e) {
    await d?.cleanup().catch(() => undefined);
    await reg.stop().catch(() => undefined);
    throw e;
  }
}

/** Creates and starts a container of `image` running `command` in the pod, logging to `<name>.log`; returns its ID. */
export async function startContainer(
  d: TestDaemon,
  pod: { podSandboxId: string; sandboxConfig: unknown },
  image: string,
  name: string,
  command: string[],
  extra: Record<string, unknown> = {},
): Promise<string> {
  const { containerId } = await d.rpc('CreateContainer', {
    podSandboxId: pod.podSandboxId,
    config: { metadata: { name, attempt: 0 }, image: { image }, command, logPath: `${name}.log`, linux: {}, ...extra },
    sandboxConfig: pod.sandboxConfig,
  });
  await d.rpc('StartContainer', { containerId });
  return containerId as string;
}
