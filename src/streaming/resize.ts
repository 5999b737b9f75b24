/**
 * Terminal resize events as clients send them: JSON objects `{"Width":W,"Height":H}` (Go's
 * json.Encoder, capitalised keys, newline after each) on a byte stream, split or coalesced
 * anywhere across frames. The queue reads its source at once, so a runtime that ignores
 * resizes never stalls the connection, and keeps only the latest few sizes.
 */
import type { Readable } from 'node:stream';
import type { TerminalSize } from './runtime.js';

const MAX_OBJECT_BYTES = 1024;
const MAX_PENDING = 16;

/** Pure: cuts JSON objects out of a byte stream by brace depth; bad or oversized ones are skipped. */
export class ResizeParser {
  private pending = '';
  private depth = 0;

  push(chunk: Buffer | string): TerminalSize[] {
    const out: TerminalSize[] = [];
    for (const ch of chunk.toString('utf8')) {
      if (this.depth === 0 && ch !== '{') continue; // whitespace and newlines between objects
      this.pending += ch;
      if (ch === '{') this.depth++;
      else if (ch === '}') this.depth--;
      if (this.pending.length > MAX_OBJECT_BYTES) {
        this.pending = '';
        this.depth = 0;
        continue;
      }
      if (this.depth === 0) {
        const size = toSize(this.pending);
        this.pending = '';
        if (size) out.push(size);
      }
    }
    return out;
  }
}

function toSize(text: string): TerminalSize | undefined {
  try {
    const o = JSON.parse(text) as Record<string, unknown>;
    const width = o.Width ?? o.width;
    const height = o.Height ?? o.height;
    const ok = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 0xffff;
    return ok(width) && ok(height) ? { width, height } : undefined;
  } catch {
    return undefined;
  }
}

/** The sizes read from `src`, in order, as an async iterable that ends with the source. */
export function resizeEvents(src: Readable): AsyncIterable<TerminalSize> {
  const parser = new ResizeParser();
  const queue: TerminalSize[] = [];
  let ended = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    wake?.();
    wake = undefined;
  };
  src.on('data', (chunk: Buffer) => {
    for (const s of parser.push(chunk)) {
      queue.push(s);
      if (queue.length > MAX_PENDING) queue.shift();
    }
    notify();
  });
  const end = () => {
    ended = true;
    notify();
  };
  src.on('end', end);
  src.on('close', end);
  src.on('error', end);
  return {
    async *[Symbol.asyncIterator]() {
      for (;;) {
        const next = queue.shift();
        if (next) {
          yield next;
          continue;
        }
        if (ended) return;
        await new Promise<void>((r) => (wake = r));
      }
    },
  };
}
