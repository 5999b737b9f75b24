/**
 * Keeps the last `cap` bytes of a stream and counts the rest. Memory is one buffer (64 KiB,
 * then `cap`) used as a ring, so it never holds more than `cap` bytes however the stream is
 * chunked (a flood of one-byte chunks costs no more than one big one).
 */
export class TailBuffer {
  private buf = Buffer.alloc(0);
  private start = 0;
  private len = 0;
  private seen = 0;

  constructor(readonly cap: number) {
    if (!Number.isInteger(cap) || cap < 0) throw new RangeError(`TailBuffer cap must be a non-negative integer, got ${cap}`);
  }

  /** Bytes pushed in all. */
  get total(): number {
    return this.seen;
  }

  /** Bytes pushed but no longer kept. */
  get dropped(): number {
    return this.seen - this.len;
  }

  push(chunk: Buffer): void {
    this.seen += chunk.length;
    if (chunk.length === 0 || this.cap === 0) return;
    if (chunk.length >= this.cap) {
      if (this.buf.length < this.cap) this.buf = Buffer.allocUnsafe(this.cap);
      chunk.copy(this.buf, 0, chunk.length - this.cap);
      this.start = 0;
      this.len = this.cap;
      return;
    }
    if (this.len + chunk.length > this.buf.length && this.buf.length < this.cap) {
      // Small outputs stay small; past 64 KiB go straight to the cap: a large buffer is
      // mapped on demand, so its untouched pages cost nothing, and no copy is made twice.
      this.resize(this.len + chunk.length <= 65536 ? Math.min(this.cap, 65536) : this.cap);
    }
    // Either it fits, or the buffer is at cap and the oldest bytes are overwritten.
    const size = this.buf.length;
    const end = (this.start + this.len) % size;
    const first = Math.min(chunk.length, size - end);
    chunk.copy(this.buf, end, 0, first);
    if (first < chunk.length) chunk.copy(this.buf, 0, first);
    const newLen = this.len + chunk.length;
    if (newLen > size) {
      this.start = (this.start + newLen - size) % size;
      this.len = size;
    } else {
      this.len = newLen;
    }
  }

  /** The kept bytes, oldest first (shares memory with this buffer when they are not wrapped). */
  toBuffer(): Buffer {
    if (this.start + this.len <= this.buf.length) return this.buf.subarray(this.start, this.start + this.len);
    const out = Buffer.allocUnsafe(this.len);
    this.copyOut(out);
    return out;
  }

  private resize(size: number): void {
    const next = Buffer.allocUnsafe(size);
    this.copyOut(next);
    this.buf = next;
    this.start = 0;
  }

  private copyOut(target: Buffer): void {
    if (this.len === 0) return;
    const first = Math.min(this.len, this.buf.length - this.start);
    this.buf.copy(target, 0, this.start, this.start + first);
    if (first < this.len) this.buf.copy(target, first, 0, this.len - first);
  }
}
