import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { Duplex } from 'node:stream';
import {
  ClientStreamRewriter, HpackDecoder, HpackError, encodeStateless, huffmanDecode, isValidAuthority,
} from '../../src/cri/http2-authority.js';

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
