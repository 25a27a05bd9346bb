import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto, { randomBytes, scryptSync } from 'node:crypto';
import { promisify } from 'node:util';
import './scrypt-memo.ts';

/**
 * The cache `npm run test:unit` puts in front of scrypt (scrypt-memo.ts) must never change a
 * result: every test that opens a repository relies on it. scryptSync is not patched, so it is
 * the real function to compare with.
 */
const scrypt = promisify(crypto.scrypt) as (
  password: crypto.BinaryLike,
  salt: crypto.BinaryLike,
  keylen: number,
  options: crypto.ScryptOptions,
) => Promise<Buffer>;
const CHEAP = { N: 1 << 10, r: 8, p: 1 };

describe('the test suite’s scrypt cache', () => {
  it('is installed, and returns what the real scrypt returns, for repeated and for new inputs', async () => {
    assert.notEqual(crypto.scrypt.name, 'scrypt', 'node:crypto scrypt is the cache');
    for (let i = 0; i < 6; i++) {
      const password = i % 2 ? randomBytes(12) : `pass ${i} é`;
      const salt = randomBytes(16);
      const real = scryptSync(password, salt, 32, CHEAP);
      assert.deepEqual(await scrypt(password, salt, 32, CHEAP), real);
      assert.deepEqual(await scrypt(password, salt, 32, CHEAP), real, 'a cached key is the real key');
      assert.deepEqual(await scrypt(password, salt, 64, CHEAP), scryptSync(password, salt, 64, CHEAP), 'another length');
      assert.deepEqual(await scrypt(password, salt, 32, { ...CHEAP, r: 4 }), scryptSync(password, salt, 32, { ...CHEAP, r: 4 }));
      const otherSalt = Buffer.from(salt);
      otherSalt.writeUInt8(otherSalt.readUInt8(0) ^ 1, 0);
      assert.deepEqual(await scrypt(password, otherSalt, 32, CHEAP), scryptSync(password, otherSalt, 32, CHEAP));
      const otherPassword = typeof password === 'string' ? `${password}!` : Buffer.concat([password, Buffer.from('!')]);
      assert.deepEqual(await scrypt(otherPassword, salt, 32, CHEAP), scryptSync(otherPassword, salt, 32, CHEAP));
    }
  });

  it('keys on the bytes of any view and leaves other inputs to the real function', async () => {
    const salt = randomBytes(16);
    const inner = Buffer.from('..alpha..');
    const view = new DataView(inner.buffer, inner.byteOffset + 2, 5);
    assert.deepEqual(await scrypt(view, salt, 32, CHEAP), scryptSync('alpha', salt, 32, CHEAP));
    for (const word of ['alpha', 'bravo']) {
      const arrayBuffer = new Uint8Array(Buffer.from(word)).buffer;
      const real = scryptSync(new Uint8Array(arrayBuffer), salt, 32, CHEAP);
      assert.deepEqual(await scrypt(arrayBuffer as unknown as crypto.BinaryLike, salt, 32, CHEAP), real, `an ArrayBuffer of ${word}`);
    }
    assert.throws(() => crypto.scrypt('pw', salt, 32, { N: 3 }, () => undefined), /N|cost|Invalid/i, 'bad parameters throw at the call');
  });

  it('hands every caller its own copy: zeroing a used key spoils nothing', async () => {
    const salt = randomBytes(16);
    const first = await scrypt('pw', salt, 32, CHEAP);
    first.fill(0);
    assert.deepEqual(await scrypt('pw', salt, 32, CHEAP), scryptSync('pw', salt, 32, CHEAP));
  });

  it('fails where the real scrypt fails, though the same key was derived before under other limits', async () => {
    const salt = randomBytes(16);
    await scrypt('pw', salt, 32, { ...CHEAP, maxmem: 32 << 20 });
    await assert.rejects(scrypt('pw', salt, 32, { ...CHEAP, maxmem: 1024 }), /memory limit exceeded/i);
    await assert.rejects(scrypt('pw', salt, 32, { ...CHEAP, maxmem: 1024 }), /memory limit exceeded/i, 'a failure is not cached as a key');
    assert.deepEqual(await scrypt('pw', salt, 32, { ...CHEAP, maxmem: 32 << 20 }), scryptSync('pw', salt, 32, CHEAP));
  });
});
