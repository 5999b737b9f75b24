import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { Duplex } from 'node:stream';
import { HpackDecoder, HpackError, encodeStateless, huffmanDecode } from '../../src/cri/hpack.js';
import { ClientLimitError, ClientStreamRewriter, RequestBodyBudget, interpose, isValidAuthority } from '../../src/cri/http2-authority.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const pairs = (fields: { name: string; value: string }[]) => fields.map((f) => [f.name, f.value]);

test('RFC 7541 C.3 / C.4 request examples decode, with the expected dynamic table sizes', () => {
  const raw = new HpackDecoder();
  assert.deepEqual(pairs(raw.decode(hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'))), [
    [':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com'],
  ]);
  assert.equal(raw.dynamicTableSize, 57);
  assert.deepEqual(pairs(raw.decode(hex('8286 84be 5808 6e6f 2d63 6163 6865'))).at(-1), ['cache-control', 'no-cache']);
  assert.equal(raw.dynamicTableSize, 110);

  const huff = new HpackDecoder();
  assert.deepEqual(pairs(huff.decode(hex('8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff'))).at(-1), [':authority', 'www.example.com']);
  assert.equal(huff.dynamicTableSize, 57);
});

test('size updates evict; an oversize update or a misplaced one is an error', () => {
  const d = new HpackDecoder();
  d.decode(hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'));
  assert.equal(d.dynamicTableEntries, 1);
  d.decode(hex('20'));
  assert.equal(d.dynamicTableEntries, 0);
  assert.throws(() => d.decode(hex('be')), HpackError); // index 62 no longer exists
  assert.throws(() => new HpackDecoder().decode(hex('3fe21f')), HpackError); // 4097 > 4096
  assert.throws(() => new HpackDecoder().decode(hex('82 20')), HpackError);
});

test('Huffman: bad padding and EOS are rejected', () => {
  assert.equal(huffmanDecode(hex('f1e3c2e5f23a6ba0ab90f4ff')).toString(), 'www.example.com');
  assert.throws(() => huffmanDecode(hex('f1e3c2e5f23a6ba0ab90f4ffff')), HpackError); // 8+ bits of padding
  assert.throws(() => huffmanDecode(hex('00')), HpackError); // '0' then padding of zeros
  assert.throws(() => huffmanDecode(hex('ffffffff')), HpackError); // EOS
});

test('stateless re-encoding round-trips and never touches the dynamic table', () => {
  const fields = [
    { name: ':method', value: 'POST', neverIndex: false },
    { name: ':authority', value: 'localhost', neverIndex: false },
    { name: 'x-secret', value: 'token', neverIndex: true },
    { name: 'x-long', value: 'v'.repeat(300), neverIndex: false },
  ];
  const d = new HpackDecoder();
  const back = d.decode(encodeStateless(fields));
  assert.deepEqual(back, fields);
  assert.equal(d.dynamicTableEntries, 0);
});

test('isValidAuthority matches what nghttp2 accepts', () => {
  for (const ok of ['localhost', 'localhost:80', '[::1]:443', 'user@host', '%2Frun%2Fx', "a!$&'()*+,;=~_-.b", '']) assert.ok(isValidAuthority(ok), ok);
  for (const bad of ['/run/corral/corral.sock', 'a b', 'a?b', 'a#b', 'a"b', 'a<b', 'a\\b', 'a^b', 'a`b', 'a{b', 'a|b', 'é', 'a\x7fb', 'a\nb']) assert.ok(!isValidAuthority(bad), bad);
});

/** Everything a Node (nghttp2) HTTP/2 client writes for the given requests, captured without a server. */
async function captureClientBytes(requests: Record<string, string>[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const sink = new Duplex({
    read() {},
    write(chunk, _e, cb) {
      chunks.push(Buffer.from(chunk));
      cb();
    },
  });
  const session = http2.connect('http://localhost', { createConnection: () => sink as any });
  session.on('error', () => undefined);
  for (const h of requests) {
    const req = session.request(h, { endStream: true });
    req.on('error', () => undefined);
  }
  await new Promise((r) => setTimeout(r, 50));
  session.destroy();
  return Buffer.concat(chunks);
}

function headerBlocks(bytes: Buffer): Buffer[] {
  let off = 24;
  const blocks: Buffer[] = [];
  while (off + 9 <= bytes.length) {
    const len = bytes.readUIntBE(off, 3);
    if (bytes[off + 3] === 0x1) blocks.push(bytes.subarray(off + 9, off + 9 + len));
    off += 9 + len;
  }
  return blocks;
}

test('decodes what nghttp2 encodes: Huffman strings over all printable ASCII, indexing and eviction', async () => {
  const printable = Array.from({ length: 95 }, (_, i) => String.fromCharCode(0x20 + i)).join('');
  const requests: Record<string, string>[] = [];
  for (let i = 0; i < 40; i++) {
    requests.push({
      ':method': 'POST', ':path': `/svc/M${i % 3}`, ':authority': i % 2 ? '/run/corral/corral.sock' : 'localhost',
      'x-printable': printable.slice(i % 50) + i, 'x-rot': printable.split('').reverse().join('').trim(),
      ['x-h' + (i % 6)]: 'abc'.repeat(1 + (i % 5) * 200),
    });
  }
  const bytes = await captureClientBytes(requests);
  const blocks = headerBlocks(bytes);
  assert.equal(blocks.length, requests.length);
  const d = new HpackDecoder();
  blocks.forEach((block, i) => {
    const got = Object.fromEntries(pairs(d.decode(block)));
    for (const [k, v] of Object.entries(requests[i]!)) assert.equal(got[k], v, `request ${i} header ${k}`);
  });
});

test('the rewriter replaces only invalid authorities, passing other blocks through byte for byte until then', async () => {
  const base = { ':method': 'POST', ':path': '/x', 'content-type': 'application/grpc' };
  const bytes = await captureClientBytes([
    { ...base, ':authority': 'localhost' },
    { ...base, ':authority': '/run/corral/corral.sock' },
    { ...base, ':authority': 'localhost' },
  ]);
  const rw = new ClientStreamRewriter();
  // feed in small, uneven pieces
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += 5) out.push(...rw.push(bytes.subarray(i, i + 5)));
  const forwarded = Buffer.concat(out);
  const inBlocks = headerBlocks(bytes);
  const outBlocks = headerBlocks(forwarded);
  assert.equal(outBlocks.length, 3);
  assert.deepEqual(outBlocks[0], inBlocks[0]); // untouched before the first rewrite
  assert.equal(rw.rewrites, 1);
  assert.equal(rw.reencoding, true);
  assert.equal(rw.originalAuthority, '/run/corral/corral.sock');
  const d = new HpackDecoder();
  const decoded = outBlocks.map((b) => Object.fromEntries(pairs(d.decode(b))));
  assert.equal(decoded[1]![':authority'], 'localhost');
  assert.equal(decoded[2]![':authority'], 'localhost');
  assert.equal(decoded[2]![':path'], '/x');
});

test('the rewriter forwards unparseable input raw while still in step with nghttp2', () => {
  const rw = new ClientStreamRewriter();
  const junk = Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.deepEqual(Buffer.concat(rw.push(junk)), junk);
  assert.equal(rw.passthrough, true);
});

// ─── Bounded work and memory on hostile client streams ───────────────────────

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
function h2frame(type: number, flags: number, stream: number, payload: Buffer, claimedLength = payload.length): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(claimedLength, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}
/** A literal header field without indexing, new name (raw strings). */
function literal(name: string, value: string): Buffer {
  const out: number[] = [0x00];
  for (const s of [name, value]) {
    const b = Buffer.from(s, 'latin1');
    if (b.length < 127) out.push(b.length);
    else {
      out.push(127);
      let v = b.length - 127;
      while (v >= 128) {
        out.push((v % 128) | 0x80);
        v = Math.floor(v / 128);
      }
      out.push(v);
    }
    out.push(...b);
  }
  return Buffer.from(out);
}
/** A header block split into HEADERS + CONTINUATION frames of at most frameSize bytes. */
function blockFrames(block: Buffer, stream: number, frameSize = 16384): Buffer[] {
  const frames: Buffer[] = [];
  for (let off = 0; off < block.length; off += frameSize) {
    const last = off + frameSize >= block.length;
    frames.push(h2frame(off === 0 ? 0x1 : 0x9, last ? 0x4 : 0, stream, block.subarray(off, off + frameSize)));
  }
  return frames;
}
/** Puts a rewriter in re-encoding mode (one rewritten block), where framing errors close the connection. */
function reencodingRewriter(): ClientStreamRewriter {
  const rw = new ClientStreamRewriter();
  rw.push(Buffer.concat([PREFACE, h2frame(0x1, 0x4, 1, Buffer.concat([Buffer.from([0x83, 0x86]), literal(':authority', '/run/x.sock')]))]));
  assert.equal(rw.reencoding, true);
  return rw;
}

test('a large header block arriving a byte at a time is handled in linear time, byte for byte', () => {
  // ~240 KB of headers in 15 frames of 16 KB, each byte its own chunk: re-copying the pending
  // frame on every chunk would copy gigabytes.
  const fields = [Buffer.from([0x83, 0x86]), literal(':authority', 'localhost')];
  for (let i = 0; i < 60; i++) fields.push(literal(`x-pad-${i}`, 'p'.repeat(4000)));
  const input = Buffer.concat([PREFACE, ...blockFrames(Buffer.concat(fields), 1)]);
  const rw = new ClientStreamRewriter();
  const out: Buffer[] = [];
  let maxBuffered = 0;
  // Count every byte the rewriter copies (Buffer.concat, Buffer.from(buffer), buf.copy).
  let copied = 0;
  const { concat, from } = Buffer;
  const copy = Buffer.prototype.copy;
  Buffer.concat = ((list: readonly Uint8Array[], total?: number) => {
    const r = concat(list, total);
    copied += r.length;
    return r;
  }) as typeof Buffer.concat;
  Buffer.from = ((...args: any[]) => {
    const r = (from as any)(...args);
    if (Buffer.isBuffer(args[0])) copied += r.length;
    return r;
  }) as typeof Buffer.from;
  Buffer.prototype.copy = function (this: Buffer, ...args: any[]) {
    const n = (copy as any).apply(this, args);
    copied += n;
    return n;
  };
  const t0 = performance.now();
  try {
    for (let i = 0; i < input.length; i++) {
      out.push(...rw.push(input.subarray(i, i + 1)));
      maxBuffered = Math.max(maxBuffered, rw.bufferedBytes);
    }
  } finally {
    Buffer.concat = concat;
    Buffer.from = from;
    Buffer.prototype.copy = copy;
  }
  const ms = performance.now() - t0;
  assert.equal(rw.passthrough, false);
  assert.deepEqual(Buffer.concat(out), input);
  assert.ok(maxBuffered <= 256 * 1024, `buffered ${maxBuffered}`);
  // Linear: each byte is copied about once (a frame taken whole), not once per later chunk.
  assert.ok(copied <= 2 * input.length, `copied ${copied} bytes for ${input.length} input bytes in ${Math.round(ms)} ms`);
});

test('a HEADERS frame claiming 16 MB is not buffered: raw to nghttp2 in step, connection closed when re-encoding', () => {
  const huge = h2frame(0x1, 0x4, 1, Buffer.alloc(100), 0xffffff); // the largest a frame header can claim
  const rw = new ClientStreamRewriter();
  const out = Buffer.concat(rw.push(Buffer.concat([PREFACE, huge])));
  assert.equal(rw.passthrough, true);
  assert.deepEqual(out, Buffer.concat([PREFACE, huge]));
  assert.equal(rw.bufferedBytes, 0);
  // One byte over the advertised SETTINGS_MAX_FRAME_SIZE is refused the same way.
  const over = new ClientStreamRewriter();
  over.push(Buffer.concat([PREFACE, h2frame(0x1, 0x4, 1, Buffer.alloc(0), 16385)]));
  assert.equal(over.passthrough, true);
  const rw2 = reencodingRewriter();
  assert.throws(() => rw2.push(huge), /exceeds SETTINGS_MAX_FRAME_SIZE/);
});

test('endless CONTINUATION frames: buffering stops at the header block cap and the connection is closed', () => {
  for (const rw of [new ClientStreamRewriter(), reencodingRewriter()]) {
    if (!rw.reencoding) rw.push(PREFACE);
    let maxBuffered = 0;
    assert.throws(() => {
      rw.push(h2frame(0x1, 0, 3, Buffer.from([0x83])));
      for (let i = 0; i < 2000; i++) {
        rw.push(h2frame(0x9, 0, 3, Buffer.alloc(1000, 0x82)));
        maxBuffered = Math.max(maxBuffered, rw.bufferedBytes);
      }
    }, (e: Error) => e instanceof ClientLimitError && /header block larger than 262144 bytes/.test(e.message));
    assert.ok(maxBuffered <= 256 * 1024, `buffered ${maxBuffered}`);
  }
});

test('unfinished request bodies are capped per connection and across connections; finished streams give bytes back', () => {
  const shared = new RequestBodyBudget(100_000);
  const a = new ClientStreamRewriter({ maxUnfinishedBodyBytes: 60_000, shared });
  const b = new ClientStreamRewriter({ maxUnfinishedBodyBytes: 60_000, shared });
  const data = (stream: number, n: number, end = false) => h2frame(0x0, end ? 0x1 : 0, stream, Buffer.alloc(n));
  a.push(PREFACE);
  b.push(PREFACE);
  // Partial messages on many streams add up...
  for (let s = 1; s <= 11; s += 2) a.push(data(s, 9000));
  assert.equal(a.unfinishedRequestBytes, 54_000);
  assert.equal(shared.used, 54_000);
  assert.throws(() => a.push(data(13, 9000)), (e: Error) => e instanceof ClientLimitError && /on one connection/.test(e.message));
  // ...END_STREAM, RST_STREAM and trailers (HEADERS with END_STREAM) finish streams and give bytes back.
  const c = new ClientStreamRewriter({ maxUnfinishedBodyBytes: 60_000, shared });
  c.push(PREFACE);
  c.push(data(1, 10_000));
  c.push(data(1, 10, true));
  c.push(data(3, 10_000));
  c.push(h2frame(0x3, 0, 3, Buffer.alloc(4)));
  c.push(data(5, 10_000));
  c.push(h2frame(0x1, 0x5, 5, Buffer.from([0x40, 0x01, 0x61, 0x01, 0x62]))); // trailers a: b
  assert.equal(c.unfinishedRequestBytes, 0);
  // The shared budget: b may not take what a holds.
  b.push(data(1, 40_000));
  assert.equal(shared.used, 94_000);
  assert.throws(() => b.push(data(3, 9000)), (e: Error) => e instanceof ClientLimitError && /on all connections/.test(e.message));
  a.release();
  assert.equal(shared.used, 40_000);
  b.release();
  assert.equal(shared.used, 0);
});

test('a header block that does not decode goes to nghttp2 raw, itself included, so nghttp2 judges exactly what the client sent', () => {
  const input = Buffer.concat([
    PREFACE,
    h2frame(0x1, 0x4, 1, Buffer.concat([Buffer.from([0x83, 0x86]), literal(':authority', 'localhost')])), // fine
    h2frame(0x1, 0x0, 3, Buffer.from([0x83, 0x40, 0x01, 0x61, 0x01, 0x62])), // inserts a: b ...
    h2frame(0x9, 0x4, 3, Buffer.from([0xff, 0x7f])), // ... then an index far beyond the table
    h2frame(0x0, 0x1, 3, Buffer.from('body')),
  ]);
  const rw = new ClientStreamRewriter();
  const out: Buffer[] = [];
  for (let i = 0; i < input.length; i += 11) out.push(...rw.push(input.subarray(i, i + 11)));
  assert.equal(rw.passthrough, true);
  assert.deepEqual(Buffer.concat(out), input);
});

test('HPACK garbage is an HpackError, never a crash or a huge allocation', () => {
  const bad: Array<[string, string]> = [
    ['index 0', '80'],
    ['index beyond the dynamic table', 'ff80 01'],
    ['integer with endless continuation bytes', '7f' + 'ff'.repeat(40) + '01'],
    ['integer of 2^35', 'ff ffffffff7f'],
    ['string length of 4 GB', '00 7f ffffffff0f'],
    ['string length past the block', '00 05 6162'],
    ['Huffman garbage (EOS)', '00 84 ffffffff 00'],
    ['Huffman bad padding', '00 81 00'],
    ['table size update above the limit', '3f e17f'],
    ['block ends inside a field', '40'],
  ];
  for (const [what, bytes] of bad) assert.throws(() => new HpackDecoder().decode(hex(bytes)), HpackError, what);
  // A header list that decodes to more than the cap (Huffman expands it) is refused.
  const d = new HpackDecoder(4096, 1000);
  assert.throws(() => d.decode(literal('x-big', 'v'.repeat(2000))), /header list too large/);
  // Inserting entries never grows the table past its size: 1000 inserts of 100-byte entries.
  const t = new HpackDecoder();
  for (let i = 0; i < 1000; i++) t.decode(Buffer.concat([Buffer.from([0x40]), literal('n', String(i).padEnd(60, 'x')).subarray(1)]));
  assert.ok(t.dynamicTableSize <= 4096, String(t.dynamicTableSize));
  assert.ok(t.dynamicTableEntries <= 4096 / 32);
});

// ─── Per-call cost of the pass-through path ──────────────────────────────────

test('a chunk of whole frames that needs no rewriting is handed on as itself, not in pieces', () => {
  const request = Buffer.concat([
    h2frame(0x1, 0x4, 1, Buffer.concat([Buffer.from([0x83, 0x86]), literal(':authority', 'localhost')])),
    h2frame(0x0, 0x1, 1, Buffer.from('\0\0\0\0\0')),
    h2frame(0x8, 0x0, 0, Buffer.from([0, 0, 0, 5])), // WINDOW_UPDATE
  ]);
  const rw = new ClientStreamRewriter();
  const first = Buffer.concat([PREFACE, request]);
  const out = rw.push(first);
  assert.equal(out.length, 1);
  assert.equal(out[0], first, 'the chunk itself: one hand-over to nghttp2');
  // A frame split across chunks is still forwarded byte for byte, once whole.
  const split = rw.push(request.subarray(0, 20));
  const rest = rw.push(request.subarray(20));
  assert.deepEqual(Buffer.concat([...split, ...rest]), request);
  // Once re-encoding, a chunk is never handed on as itself (its header blocks change).
  const re = reencodingRewriter();
  const again = Buffer.concat([h2frame(0x1, 0x5, 3, Buffer.concat([Buffer.from([0x83, 0x86]), literal(':authority', 'localhost')]))]);
  const reOut = re.push(again);
  assert.notEqual(reOut[0], again);
  assert.equal(new HpackDecoder().decode(Buffer.concat(reOut).subarray(9)).find((f) => f.name === ':authority')?.value, 'localhost');
});

test('interpose sends the frames nghttp2 hands over together in one socket write, unchanged', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'corral-interpose-'));
  const server = net.createServer();
  t.after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  server.listen(path.join(dir, 's'));
  await once(server, 'listening');
  const client = net.connect(path.join(dir, 's'));
  const [accepted] = (await once(server, 'connection')) as [net.Socket];
  t.after(() => {
    client.destroy();
    accepted.destroy();
  });
  // What reaches the socket, per write request (a write(2) or writev(2) each).
  const writes: number[] = [];
  const s = accepted as any;
  const { _write, _writev } = s;
  s._write = function (...args: unknown[]) {
    writes.push(1);
    return _write.apply(this, args);
  };
  s._writev = function (chunks: unknown[], cb: unknown) {
    writes.push(chunks.length);
    return _writev.call(this, chunks, cb);
  };
  const duplex = interpose(accepted, {}, 10_000, () => undefined, () => undefined);
  const frames = [Buffer.from('headers frame'), Buffer.from('data frame'), Buffer.from('trailers frame')];
  let received = Buffer.alloc(0);
  const all = Buffer.concat(frames);
  const got = new Promise<void>((resolve) => client.on('data', (c: Buffer) => {
    received = Buffer.concat([received, c]);
    if (received.length >= all.length) resolve();
  }));
  let callbacks = 0;
  // As JSStreamSocket (between nghttp2 and this Duplex) writes a batch: corked.
  duplex.cork();
  for (const f of frames) duplex.write(f, () => callbacks++);
  duplex.uncork();
  await got;
  assert.deepEqual(received, all);
  assert.deepEqual(writes, [3], 'one writev of the three frames');
  await new Promise((r) => setImmediate(r));
  assert.equal(callbacks, 3, 'every write is called back');
  duplex.destroy();
});
