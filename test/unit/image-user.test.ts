import { test } from 'node:test';
import assert from 'node:assert/strict';
import { imageUser } from '../../src/image/image-user.js';

test('image user: uid, username, with or without a group, and empty', () => {
  assert.deepEqual(imageUser('1002'), { uid: 1002, username: '' });
  assert.deepEqual(imageUser('1002:1003'), { uid: 1002, username: '' });
  assert.deepEqual(imageUser('www-data'), { username: 'www-data' });
  assert.deepEqual(imageUser('www-data:staff'), { username: 'www-data' });
  assert.deepEqual(imageUser(''), { username: '' });
  assert.deepEqual(imageUser(undefined), { username: '' });
  assert.deepEqual(imageUser('0'), { uid: 0, username: '' });
});
