/** Image subcommands: crictl-style pull/images/inspecti/rmi over the socket, and offline archive import. */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { table } from './format.js';
import { DEFAULT_ENDPOINT, parseOptions } from './commands.js';
import { explainCallError } from './hints.js';
import { parseDuration } from './client-commands.js';
import { loadConfig } from '../config/config.js';
import type { ImageRpcName } from '../cri/proto.js';

export async function imageCommand(command: string, argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: parseOptions(command), allowPositionals: true });
  const endpoint = (values['runtime-endpoint'] as string | undefined) ?? process.env.IMAGE_SERVICE_ENDPOINT ?? process.env.CONTAINER_RUNTIME_ENDPOINT ?? DEFAULT_ENDPOINT;
  const timeout = values.timeout as string | undefined;
  // A pull may take long (big layers); the other calls are quick.
  const defaultDeadlineMs = timeout ? parseDuration(timeout) : 120_000;
  const { createImageClient, call } = await import('../cri/client.js');
  const client = createImageClient(endpoint);
  const rpc = (method: ImageRpcName, req: object, deadlineMs = defaultDeadlineMs) =>
    call(client, method, req, { deadlineMs }).catch((e: unknown) => {
      throw explainCallError(e, endpoint);
    });
  try {
    switch (command) {
      case 'pull': {
        const image = positionals[0];
        if (!image) throw new Error('pull needs an image reference');
        const auth = values.creds ? credsToAuth(values.creds as string) : undefined;
        const progress = await watchIngest((values.config as string | undefined) ?? undefined);
        try {
          const r = await rpc('PullImage', { image: { image }, auth }, timeout ? defaultDeadlineMs : 30 * 60_000);
          progress.stop();
          process.stdout.write(`Image is up to date for ${r.imageRef}\n`);
        } finally {
          progress.stop();
        }
        return 0;
      }
      case 'images': {
        const filter = positionals[0] ? { image: { image: positionals[0] } } : {};
        const { images } = await rpc('ListImages', { filter });
        if (values.quiet) {
          for (const i of images) process.stdout.write(`${i.id}\n`);
        } else if (values.output === 'json') {
          process.stdout.write(JSON.stringify({ images }, null, 2) + '\n');
        } else {
          const rows: string[][] = [];
          for (const i of images) {
            const tags: string[] = i.repoTags.length ? i.repoTags : ['<none>:<none>'];
            for (const t of tags) {
              const at = t.lastIndexOf(':');
              rows.push([t.slice(0, at), t.slice(at + 1), i.id.slice(7, 20), humanSize(Number(i.size))]);
            }
          }
          process.stdout.write(table(['IMAGE', 'TAG', 'IMAGE ID', 'SIZE'], rows) + '\n');
        }
        return 0;
      }
      case 'inspecti': {
        if (positionals.length === 0) throw new Error('inspecti needs an image reference');
        let missing = 0;
        for (const image of positionals) {
          const r = await rpc('ImageStatus', { image: { image }, verbose: true });
          if (!r.image) {
            process.stderr.write(`corral: no such image: ${image}\n`);
            missing++;
            continue;
          }
          const info = r.info?.info ? JSON.parse(r.info.info) : undefined;
          process.stdout.write(JSON.stringify({ status: r.image, info }, null, 2) + '\n');
        }
        return missing === 0 ? 0 : 1;
      }
      case 'rmi': {
        if (positionals.length === 0) throw new Error('rmi needs an image reference');
        for (const image of positionals) {
          const st = await rpc('ImageStatus', { image: { image } });
          if (!st.image) {
            process.stderr.write(`corral: no such image: ${image}\n`);
            continue;
          }
          await rpc('RemoveImage', { image: { image } });
          process.stdout.write(`Deleted: ${image}\n`);
        }
        return 0;
      }
    }
    throw new Error(`unknown command ${command}`);
  } finally {
    client.close();
  }
}

/** `corral image import FILE`: straight into this node's image store (the daemon picks it up). */
export async function importCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: parseOptions('image import'), allowPositionals: true });
  const file = positionals[0];
  if (!file) throw new Error('image import needs an archive file');
  const cfg = await loadConfig(values.config as string | undefined);
  const { silentLogger } = await import('../util/log.js');
  const { ImageStore } = await import('../image/image-store.js');
  const { importArchive } = await import('../image/archive.js');
  const store = new ImageStore(path.join(cfg.rootDir, 'images'), silentLogger());
  // Blobs stored before registration must survive a removal the daemon runs meanwhile.
  const release = await store.holdGarbageCollection(true);
  let imported;
  try {
    imported = await importArchive(file, store);
  } finally {
    await release();
  }
  for (const i of imported) process.stdout.write(`Imported ${i.repoTags.join(', ') || i.id} (${i.id})\n`);
  return 0;
}

function credsToAuth(creds: string) {
  const at = creds.indexOf(':');
  if (at < 0) throw new Error('--creds must be USER:PASSWORD');
  return { username: creds.slice(0, at), password: creds.slice(at + 1) };
}

/**
 * Per-layer progress while the daemon pulls: the daemon downloads each blob into
 * <root>/images/ingest/<digest hex>.<pid>.<rand>.partial, so their sizes are the progress.
 */
async function watchIngest(configFile: string | undefined): Promise<{ stop(): void }> {
  let ingestDir: string;
  try {
    ingestDir = path.join((await loadConfig(configFile)).rootDir, 'images', 'ingest');
  } catch {
    return { stop() {} };
  }
  const seen = new Map<string, number>();
  const tty = process.stderr.isTTY;
  const timer = setInterval(async () => {
    const names = await fs.readdir(ingestDir).catch(() => [] as string[]);
    for (const n of names) {
      const hex = n.split('.')[0]!;
      const size = (await fs.stat(path.join(ingestDir, n)).catch(() => undefined))?.size;
      if (size === undefined || seen.get(hex) === size) continue;
      seen.set(hex, size);
      process.stderr.write(`${tty ? '\r' : ''}layer ${hex.slice(0, 12)}: ${humanSize(size)} downloaded${tty ? '  ' : '\n'}`);
    }
  }, 200);
  return {
    stop() {
      clearInterval(timer);
      if (tty && seen.size > 0) process.stderr.write('\n');
    },
  };
}

function humanSize(n: number): string {
  if (n < 1024) return `${n}B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n / 1000;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)}${units[u]}`;
}
