import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';

/** A pass-through stream that sha256-hashes and counts what flows through it. */
export function sha256Counter(): { stream: Transform; digest(): string; size(): number } {
  const hash = createHash('sha256');
  let size = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      size += chunk.length;
      done(null, chunk);
    },
  });
  return { stream, digest: () => `sha256:${hash.digest('hex')}`, size: () => size };
}
