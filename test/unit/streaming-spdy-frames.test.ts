import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import zlib from 'node:zlib';
import { Duplex } from 'node:stream';
import { SpdySession, keptPayload } from '../../src/streaming/spdy-session.js';
import { SPDY3_DICTIONARY } from '../../src/streaming/spdy-dictionary.js';
import {
  FrameParser,
  SpdyProtocolError,
  decodeHeaderBlock,
  encodeData,
  encodeDataHeader,
  encodeGoaway,
  encodeHeaderBlock,
  encodePing,
  encodeRstStream,
  encodeSynReply,
  type Frame,
} from '../../src/streaming/spdy-frames.js';

const hex = (s: string) => Buffer.from(s.replace(/[\s|]/g, ''), 'hex');

function adler32(b: Buffer): number {
  let a = 1;
  let s = 0;
  for (const x of b) {
    a = (a + x) % 65521;
    s = (s + a) % 65521;
  }
  return ((s << 16) | a) >>> 0;
}

test('SPDY/3 dictionary: 1423 bytes with the published Adler-32 and SHA-256', () => {
  assert.equal(SPDY3_DICTIONARY.length, 1423);
  assert.equal(adler32(SPDY3_DICTIONARY), 0xe3c6a7c2);
  assert.equal(createHash('sha256').update(SPDY3_DICTIONARY).digest('hex'), '51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02');
});

test('the Go client’s first SYN_STREAM (measured bytes) parses and inflates to {streamtype: error}', () => {
  const bytes = hex('80 03 00 01 | 00 00 00 29 | 00 00 00 01 | 00 00 00 00 | 00 | 00 | 78 f9 e3 c6 a7 c2 62 60 60 60 04 a7 b3 92 a2 d4 c4 5c 68 51 c2 9a 0a 0a 68 00 00 00 00 ff ff');
  const frames = new FrameParser().push(bytes);
  assert.equal(frames.length, 1);
  const f = frames[0]!;
  assert.equal(f.kind, 'syn_stream');
  if (f.kind !== 'syn_stream') return;
  assert.equal(f.streamId, 1);
  assert.equal(f.fin, false);
  const block = zlib.inflateSync(f.headerBlock, { dictionary: SPDY3_DICTIONARY, finishFlush: zlib.constants.Z_SYNC_FLUSH });
  assert.deepEqual([...decodeHeaderBlock(block)], [['streamtype', 'error']]);
});

/**
 * Frames as a stream sees them: consecutive DATA pieces of one stream joined (a DATA frame cut
 * by chunk ends comes out in pieces; a stream is a byte stream), FIN only at the end of a join.
 */
function joined(frames: Frame[]): string[] {
  const out: string[] = [];
  let data: { streamId: number; bytes: Buffer[] } | null = null;
  const flush = (fin: boolean) => {
    if (data) out.push(`data ${data.streamId} ${Buffer.concat(data.bytes).toString('hex').slice(0, 16)}:${Buffer.concat(data.bytes).length}${fin ? ' fin' : ''}`);
    data = null;
  };
  for (const f of frames) {
    if (f.kind === 'data') {
      if (data && data.streamId !== f.streamId) flush(false);
      data ??= { streamId: f.streamId, bytes: [] };
      data.bytes.push(f.payload);
      if (f.fin) flush(true);
    } else {
      flush(false);
      out.push(f.kind);
    }
  }
  flush(false);
  return out;
}

test('frames split at every byte boundary come out in order, DATA payloads intact', () => {
  const wire = Buffer.concat([encodeData(5, Buffer.from('hello'), false), encodePing(1), encodeData(5, Buffer.alloc(0), true), encodeGoaway(0, 0)]);
  const whole = joined(new FrameParser().push(wire));
  assert.deepEqual(whole, ['data 5 68656c6c6f:5', 'ping', 'data 5 :0 fin', 'goaway']);
  for (let cut = 0; cut <= wire.length; cut++) {
    const p = new FrameParser();
    const got = [...p.push(wire.subarray(0, cut)), ...p.push(wire.subarray(cut))];
    assert.deepEqual(joined(got), whole, `cut at ${cut}`);
    assert.ok(got.every((f) => f.kind !== 'data' || f.payload.length > 0 || f.fin), `no empty piece without FIN, cut at ${cut}`);
    assert.equal(p.pending, 0);
  }
});

test('frames fed one byte at a time: every payload byte in order, FIN once at the end, nothing held', () => {
  const payloads = [Buffer.alloc(40_000, 7), Buffer.from('x'), Buffer.alloc(0), Buffer.alloc(70_000, 9)];
  const wire = Buffer.concat([...payloads.map((b, i) => encodeData(3, b, i === payloads.length - 1)), encodePing(2)]);
  const p = new FrameParser();
  const got: Frame[] = [];
  for (let i = 0; i < wire.length; i++) {
    got.push(...p.push(wire.subarray(i, i + 1)));
    // At most a cut header, or what came of the 12-byte PING: never DATA payload.
    assert.ok(p.pending < 12, `holds ${p.pending} bytes at byte ${i}`);
  }
  const data = got.filter((f) => f.kind === 'data');
  assert.ok(Buffer.concat(data.map((f) => (f.kind === 'data' ? f.payload : Buffer.alloc(0)))).equals(Buffer.concat(payloads)));
  assert.deepEqual(data.map((f, i) => (f.kind === 'data' && f.fin ? i : -1)).filter((i) => i >= 0), [data.length - 1], 'FIN on the last piece only');
  assert.equal(got.at(-1)!.kind, 'ping');
  assert.equal(p.pending, 0);
});

test('a DATA frame cut by chunk ends comes out as views of each chunk: its payload is never copied', () => {
  // The parser before this one copied the frame whole; before it, ~512 MiB re-concatenated for this frame.
  const payload = Buffer.alloc(1024 * 1024, 5);
  const wire = encodeData(1, payload, true);
  const p = new FrameParser();
  const got: Frame[] = [];
  for (let o = 0; o < wire.length; o += 1024) {
    const chunk = Buffer.from(wire.subarray(o, o + 1024)); // each chunk its own buffer, as a socket reads them
    const frames = p.push(chunk);
    for (const f of frames) assert.ok(f.kind === 'data' && f.payload.buffer === chunk.buffer, 'a view of the chunk it came in');
    got.push(...frames);
  }
  assert.ok(Buffer.concat(got.map((f) => (f.kind === 'data' ? f.payload : Buffer.alloc(0)))).equals(payload));
  assert.ok(got.at(-1)!.kind === 'data' && (got.at(-1) as { fin: boolean }).fin);
  assert.equal(p.gathered, 0, 'no DATA byte gathered');
});

test('a frame header alone does not make the parser hold the size it declares', () => {
  const p = new FrameParser();
  p.push(encodeDataHeader(1, 1024 * 1024, false)); // a 1 MiB DATA frame announced, 8 bytes sent
  assert.equal(p.pending, 0, 'a DATA frame\'s payload is handed out as it comes: nothing is held for it');
  assert.equal((p as unknown as { frame: Buffer | null }).frame, null);
  // A control frame cut after its header is gathered, in a buffer of at most what it declares (≤ 16 KiB).
  const q = new FrameParser();
  const ping = encodePing(1);
  q.push(ping.subarray(0, 9));
  assert.equal(q.pending, 9);
  assert.deepEqual(q.push(ping.subarray(9)).map((f) => f.kind), ['ping']);
});

test('whole frames inside one chunk are handed out as views of it (no copy)', () => {
  const wire = Buffer.concat([encodeData(1, Buffer.alloc(5000, 1), false), encodeData(1, Buffer.alloc(3000, 2), false)]); // over the Buffer pool size: its own ArrayBuffer
  const p = new FrameParser();
  const frames = p.push(wire);
  assert.equal(frames.length, 2);
  for (const f of frames) assert.ok(f.kind === 'data' && f.payload.buffer === wire.buffer);
  assert.equal(p.gathered, 0);
});

test('a stream keeps a payload that is most of its read as a view, a small part of a large read as a copy of its own', () => {
  const read = Buffer.alloc(64 * 1024, 1);
  const big = read.subarray(0, 40_000);
  assert.equal(keptPayload(big), big, 'most of the read: the view itself');
  const small = read.subarray(100, 101);
  const kept = keptPayload(small);
  assert.ok(kept.equals(small));
  assert.notEqual(kept.buffer, read.buffer, 'a 1-byte piece does not keep its 64 KiB read alive');
  assert.equal(kept.buffer.byteLength, 1, 'nor a slab of the shared pool');
});

test('sendData writes the header and the payload itself in one writev, and the bytes are a DATA frame', () => {
  const batches: Buffer[][] = [];
  const socket = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      batches.push([chunk]);
      cb();
    },
    writev(chunks, cb) {
      batches.push(chunks.map((c) => c.chunk as Buffer));
      cb();
    },
  });
  const session = new SpdySession(socket);
  try {
    const payload = Buffer.alloc(32 * 1024, 3);
    session.sendData(7, payload, false);
    session.sendData(7, Buffer.alloc(0), true);
    assert.equal(batches.length, 2);
    assert.equal(batches[0]!.length, 2);
    assert.equal(batches[0]![1], payload, 'the payload buffer itself, not a copy');
    const [frame] = new FrameParser().push(Buffer.concat(batches.flat()));
    assert.ok(frame?.kind === 'data' && frame.streamId === 7 && !frame.fin && frame.payload.equals(payload));
    assert.deepEqual(batches[1]![0], encodeDataHeader(7, 0, true));
  } finally {
    session.destroy();
  }
});

test('encoders write the measured bytes', () => {
  assert.deepEqual(encodeData(5, Buffer.from('hello'), false), hex('00 00 00 05 | 00 00 00 05 | 68 65 6c 6c 6f'));
  assert.deepEqual(encodeData(5, Buffer.alloc(0), true), hex('00 00 00 05 | 01 00 00 00'));
  assert.deepEqual(encodePing(1), hex('80 03 00 06 | 00 00 00 04 | 00 00 00 01'));
  assert.deepEqual(encodeRstStream(7, 5), hex('80 03 00 03 | 00 00 00 08 | 00 00 00 07 | 00 00 00 05'));
  assert.deepEqual(encodeGoaway(0, 0), hex('80 03 00 07 | 00 00 00 08 | 00 00 00 00 | 00 00 00 00'));
  const reply = encodeSynReply(1, hex('78 f9 e3 c6 a7 c2 62 00 02 00 00 00 00 ff ff'));
  assert.deepEqual(reply, hex('80 03 00 02 | 00 00 00 13 | 00 00 00 01 | 78 f9 e3 c6 a7 c2 62 00 02 00 00 00 00 ff ff'));
});

test('malformed frames are protocol errors, never crashes or unbounded buffering', () => {
  const bad: Array<[string, Buffer]> = [
    ['unknown control type (CREDENTIAL)', hex('80 03 00 0a 00 00 00 00')],
    ['wrong version', hex('80 02 00 06 00 00 00 04 00 00 00 01')],
    ['PING of wrong length', hex('80 03 00 06 00 00 00 08 00 00 00 01 00 00 00 00')],
    ['PING with flags', hex('80 03 00 06 01 00 00 04 00 00 00 01')],
    ['PING id 0', hex('80 03 00 06 00 00 00 04 00 00 00 00')],
    ['GOAWAY of length 4', hex('80 03 00 07 00 00 00 04 00 00 00 00')],
    ['RST_STREAM status 0', hex('80 03 00 03 00 00 00 08 00 00 00 01 00 00 00 00')],
    ['RST_STREAM stream 0', hex('80 03 00 03 00 00 00 08 00 00 00 00 00 00 00 05')],
    ['SYN_STREAM shorter than its fixed fields', hex('80 03 00 01 00 00 00 04 00 00 00 01')],
    ['SYN_STREAM for stream 0', hex('80 03 00 01 00 00 00 0a 00 00 00 00 00 00 00 00 00 00')],
    ['DATA on stream 0', hex('00 00 00 00 00 00 00 01 41')],
    ['SETTINGS count disagreeing with length', hex('80 03 00 04 00 00 00 04 00 00 00 05')],
    ['WINDOW_UPDATE of wrong length', hex('80 03 00 09 00 00 00 04 00 00 00 01')],
  ];
  for (const [what, bytes] of bad) assert.throws(() => new FrameParser().push(bytes), SpdyProtocolError, what);
});

test('a frame over the size caps is refused from its header, before its body is buffered', () => {
  const p = new FrameParser({ maxControlLength: 1024, maxDataLength: 4096 });
  assert.throws(() => p.push(hex('00 00 00 01 00 00 10 01')), /data frame of 4097 bytes exceeds the limit of 4096/);
  assert.throws(() => new FrameParser({ maxControlLength: 1024, maxDataLength: 4096 }).push(hex('80 03 00 01 00 ff ff ff')), /control frame of 16777215 bytes/);
  // At the cap: buffered until whole.
  const q = new FrameParser({ maxControlLength: 1024, maxDataLength: 4096 });
  assert.deepEqual(q.push(hex('00 00 00 01 00 00 10 00')), []);
  assert.equal(q.push(Buffer.alloc(4096)).length, 1);
});

test('SETTINGS and WINDOW_UPDATE parse (and are ignored by the session)', () => {
  const frames = new FrameParser().push(Buffer.concat([hex('80 03 00 04 00 00 00 0c 00 00 00 01 00 00 00 07 00 01 00 00'), hex('80 03 00 09 00 00 00 08 00 00 00 01 00 00 10 00')]));
  assert.deepEqual(frames.map((f) => f.kind), ['settings', 'window_update']);
});

test('header blocks: round trip, lowercased names, NUL-joined values, hostile counts and lengths refused', () => {
  const block = encodeHeaderBlock({ StreamType: 'data', port: '80', requestid: '0' });
  assert.deepEqual(Object.fromEntries(decodeHeaderBlock(block)), { streamtype: 'data', port: '80', requestid: '0' });
  assert.deepEqual([...decodeHeaderBlock(encodeHeaderBlock({}))], []);
  const multi = Buffer.concat([hex('00000001 00000001'), Buffer.from('a'), hex('00000003'), Buffer.from('x\0y')]);
  assert.equal(decodeHeaderBlock(multi).get('a'), 'x');
  assert.throws(() => decodeHeaderBlock(hex('ffffffff')), /headers \(limit 64\)/);
  assert.throws(() => decodeHeaderBlock(hex('00000001 7fffffff')), /truncated/);
  assert.throws(() => decodeHeaderBlock(hex('00000001 00000001')), /truncated/);
  assert.throws(() => decodeHeaderBlock(Buffer.concat([block, hex('00')])), /trailing bytes/);
  assert.throws(() => decodeHeaderBlock(hex('000000')), /shorter than its count/);
  assert.throws(() => decodeHeaderBlock(hex('00000001 00000000 00000000')), /empty name/);
});
