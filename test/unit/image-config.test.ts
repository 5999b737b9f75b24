import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ImageConfigError, imageRuntimeConfig } from '../../src/image/image-config.js';

test('the runtime config of an image: the fields Corral uses, typed; absent ones empty', () => {
  const c = imageRuntimeConfig({
    architecture: 'amd64',
    config: { Entrypoint: ['/bin/sh', '-c'], Cmd: null, Env: ['PATH=/bin'], WorkingDir: '/w', User: '1000:1000', StopSignal: 'SIGINT', Labels: { a: 'b' } },
  });
  assert.deepEqual(c, { Entrypoint: ['/bin/sh', '-c'], Cmd: null, Env: ['PATH=/bin'], WorkingDir: '/w', User: '1000:1000', StopSignal: 'SIGINT' });
  assert.deepEqual(imageRuntimeConfig({}), { Entrypoint: null, Cmd: null, Env: null, WorkingDir: '', User: '', StopSignal: '' });
});

test('a hostile image config is refused naming the field, never passed on with the wrong type', () => {
  const refused = (doc: unknown, re: RegExp) =>
    assert.throws(() => imageRuntimeConfig(doc), (e: unknown) => e instanceof ImageConfigError && re.test((e as Error).message));
  refused({ config: { Env: 'PATH=/bin' } }, /config\.Env must be a list of strings/);
  refused({ config: { Env: [1, 2] } }, /config\.Env must be a list of strings/);
  refused({ config: { Entrypoint: { 0: '/bin/sh' } } }, /config\.Entrypoint must be a list of strings/);
  refused({ config: { Cmd: ['/bin/sh', null] } }, /config\.Cmd must be a list of strings/);
  refused({ config: { User: 0 } }, /config\.User must be a string/);
  refused({ config: { WorkingDir: ['/'] } }, /config\.WorkingDir must be a string/);
  refused({ config: { StopSignal: 9 } }, /config\.StopSignal must be a string/);
  refused({ config: { Cmd: ['a\0b'] } }, /config\.Cmd must be free of NUL bytes/);
  refused({ config: [] }, /must be an object/);
  refused([], /must be an object/);
  refused(null, /must be an object/);
});
