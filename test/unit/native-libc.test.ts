/**
 * The static helpers are linked with musl when musl-gcc is installed (scripts/install-deps.sh
 * installs it): a static glibc program spends ~0.45 ms of CPU at every start on a VM running
 * CPUID ~75 times for its cache sizes, and corral-nshelper and corral-podpause start once or
 * twice per pod (bench/README.md, "Helpers linked with musl").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { nativeBinary, packageRoot } from '../../src/util/paths.js';

/** Every helper scripts/build-native.sh builds statically (its `build NAME ...` lines without --dynamic). */
const STATIC_HELPERS = [...readFileSync(path.join(packageRoot(), 'scripts/build-native.sh'), 'utf8').matchAll(/^build (corral-\S+)/gm)].map((m) => m[1]!);
const haveMusl = spawnSync('sh', ['-c', 'command -v musl-gcc'], { encoding: 'utf8' }).status === 0;

test('with musl-gcc installed, every static helper is static and has no glibc in it', { skip: haveMusl ? false : 'musl-gcc is not installed' }, () => {
  assert.ok(STATIC_HELPERS.length >= 7, `static helpers found in build-native.sh: ${STATIC_HELPERS.join(', ')}`);
  assert.equal(readFileSync(nativeBinary('.static-libc'), 'utf8').trim(), 'musl');
  for (const name of STATIC_HELPERS) {
    const bin = readFileSync(nativeBinary(name));
    assert.equal(bin.indexOf('/ld-linux'), -1, `${name} has a dynamic loader`);
    // Every glibc program carries its tunables parser, which names the variable.
    assert.equal(bin.indexOf('GLIBC_TUNABLES'), -1, `${name} is linked with glibc`);
  }
  // corral-unpack stays glibc, dynamically linked (libisal.so.2): the marker is a real one.
  assert.notEqual(readFileSync(nativeBinary('corral-unpack')).indexOf('/ld-linux'), -1);
});
