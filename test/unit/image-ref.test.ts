import { test } from 'node:test';
import assert from 'node:assert/strict';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { grpcCode } from '../../src/cri/errors.js';
import {
  familiarName,
  familiarString,
  InvalidReferenceError,
  isDigest,
  manifestReference,
  normalizeReference,
  parseReference,
  repoDigest,
  repoTag,
  tryParseReference,
  validateDigest,
} from '../../src/image/reference.js';

const D = `sha256:${'a'.repeat(64)}`;
const D2 = `sha256:${'0123456789abcdef'.repeat(4)}`;

test('Docker Hub short names get docker.io, library/ and latest', () => {
  const r = parseReference('busybox');
  assert.equal(r.domain, 'docker.io');
  assert.equal(r.path, 'library/busybox');
  assert.equal(r.tag, 'latest');
  assert.equal(r.digest, undefined);
  assert.equal(r.name, 'docker.io/library/busybox');
  assert.equal(r.toString(), 'docker.io/library/busybox:latest');
  assert.equal(String(r), 'docker.io/library/busybox:latest');
  assert.equal(JSON.stringify({ r }), '{"r":"docker.io/library/busybox:latest"}');
});

test('user repositories on Docker Hub keep their namespace', () => {
  assert.equal(normalizeReference('foo/bar'), 'docker.io/foo/bar:latest');
  assert.equal(normalizeReference('foo/bar/baz:1.0'), 'docker.io/foo/bar/baz:1.0');
  assert.equal(normalizeReference('docker.io/busybox'), 'docker.io/library/busybox:latest');
  assert.equal(normalizeReference('index.docker.io/library/busybox:1'), 'docker.io/library/busybox:1');
  assert.equal(normalizeReference('docker.io/library/busybox:1.36'), 'docker.io/library/busybox:1.36');
});

test('registry hosts: dots, ports, localhost, IPv4 and IPv6', () => {
  const cases: [string, string, string, string | undefined][] = [
    ['localhost:5000/x', 'localhost:5000', 'x', 'latest'],
    ['localhost/x', 'localhost', 'x', 'latest'],
    ['127.0.0.1:5000/x:tag', '127.0.0.1:5000', 'x', 'tag'],
    ['registry.k8s.io/pause:3.9', 'registry.k8s.io', 'pause', '3.9'],
    ['quay.io/org/sub/img:v1.2.3-rc.1', 'quay.io', 'org/sub/img', 'v1.2.3-rc.1'],
    ['[::1]:5000/img:1', '[::1]:5000', 'img', '1'],
    ['my-registry:8080/a/b', 'my-registry:8080', 'a/b', 'latest'],
  ];
  for (const [input, domain, path, tag] of cases) {
    const r = parseReference(input);
    assert.deepEqual([r.domain, r.path, r.tag], [domain, path, tag], input);
  }
  // A first component without '.', ':' and not localhost is a Docker Hub namespace.
  assert.equal(parseReference('myregistry/x').domain, 'docker.io');
});

test('digests: name@digest and name:tag@digest', () => {
  const a = parseReference(`busybox@${D}`);
  assert.equal(a.tag, undefined);
  assert.equal(a.digest, D);
  assert.equal(a.toString(), `docker.io/library/busybox@${D}`);
  assert.equal(manifestReference(a), D);

  const b = parseReference(`registry.k8s.io/pause:3.9@${D2}`);
  assert.equal(b.tag, '3.9');
  assert.equal(b.digest, D2);
  assert.equal(b.toString(), `registry.k8s.io/pause:3.9@${D2}`);
  assert.equal(manifestReference(b), D2, 'the digest wins over the tag');
  assert.equal(manifestReference(parseReference('x:7')), '7');
});

test('clear errors for malformed references', () => {
  const bad: [string, RegExp][] = [
    ['', /empty/],
    ['Busybox', /must be lowercase/],
    ['foo/Bar', /must be lowercase/],
    ['busybox:-bad', /bad tag/],
    ['busybox:' + 'a'.repeat(129), /bad tag/],
    ['busybox:a/b', /bad registry host "busybox:a": port "a"/],
    [`busybox@sha256:${'a'.repeat(63)}`, /64 lowercase hexadecimal/],
    [`busybox@sha256:${'A'.repeat(64)}`, /64 lowercase hexadecimal/],
    [`busybox@md5:${'a'.repeat(32)}`, /unsupported digest algorithm "md5"/],
    ['busybox@notadigest', /not of the form/],
    [`busybox@${D}@${D}`, /more than one '@'/],
    ['foo//bar', /empty path component/],
    ['foo/-bar', /bad path component/],
    ['foo/bar_', /bad path component/],
    ['localhost:99999/x', /port "99999"/],
    ['local_host.io/x', /not a valid host name label/],
    ['busy box', /whitespace/],
    ['a'.repeat(64), /image ID, not a reference/],
    ['registry.io/', /empty/],
    ['x/' + 'a'.repeat(260), /longer than 255/],
  ];
  for (const [input, re] of bad) {
    assert.throws(
      () => parseReference(input),
      (e: unknown) => {
        assert.ok(e instanceof InvalidReferenceError, `${input}: ${String(e)}`);
        assert.equal(grpcCode(e), GrpcStatus.INVALID_ARGUMENT);
        assert.match(e.message, re, input);
        assert.ok(e.message.includes(`"${input}"`), 'the message quotes the reference');
        return true;
      },
      input,
    );
  }
  assert.equal(tryParseReference('Bad'), undefined);
  assert.equal(tryParseReference('good')?.toString(), 'docker.io/library/good:latest');
});

test('familiar names strip docker.io and library/', () => {
  assert.equal(familiarName('docker.io/library/busybox:latest'), 'busybox');
  assert.equal(familiarName('docker.io/foo/bar'), 'foo/bar');
  assert.equal(familiarName('docker.io/library/a/b'), 'library/a/b');
  assert.equal(familiarName('registry.k8s.io/pause:3.9'), 'registry.k8s.io/pause');
  assert.equal(familiarString('busybox'), 'busybox:latest');
  assert.equal(familiarString(`foo/bar@${D}`), `foo/bar@${D}`);
  assert.equal(familiarString(parseReference('localhost:5000/x:1')), 'localhost:5000/x:1');
});

test('repo tags and repo digests', () => {
  assert.equal(repoTag('busybox'), 'docker.io/library/busybox:latest');
  assert.equal(repoTag('registry.k8s.io/pause:3.9'), 'registry.k8s.io/pause:3.9');
  assert.equal(repoTag(`busybox@${D}`), undefined);
  assert.equal(repoTag(`busybox:1@${D}`), 'docker.io/library/busybox:1');
  assert.equal(repoDigest(`busybox@${D}`), `docker.io/library/busybox@${D}`);
  assert.equal(repoDigest('busybox:1', D2), `docker.io/library/busybox@${D2}`);
  assert.equal(repoDigest('busybox:1'), undefined);
  assert.throws(() => repoDigest('busybox', 'sha256:xyz'), /64 lowercase|not of the form/);
});

test('digest helpers', () => {
  assert.ok(isDigest(D));
  assert.ok(!isDigest('sha256:abc'));
  assert.ok(!isDigest(`sha512:${'a'.repeat(128)}`));
  assert.equal(validateDigest(D), D);
  assert.throws(() => validateDigest(`sha512:${'a'.repeat(128)}`, 'layer digest'), /layer digest .*unsupported digest algorithm "sha512"/);
});
