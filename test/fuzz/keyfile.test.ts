import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { scryptParamsProblem } from '../../agent/core/crypto.ts';
import { keyFileSchema, kmsKeyFile, newMasterKey, parseKeyFile, wrapMasterKey, type KeyFile } from '../../agent/core/keyfile.ts';
import { decodes, fuzz, jsonDocumentBytes } from './fuzz.ts';

/**
 * Key files (keys/<id>, plaintext JSON, readable by anyone who can list the
 * repository): parseKeyFile returns a key file its schema accepts whose KDF
 * parameters are within the documented bounds (so unlocking it can never ask
 * scrypt for more than the maximum, nor for parameters scrypt refuses), or throws
 * Cairn.Damaged. The scrypt unwrap itself is not run here (it is slow by design).
 */
const samples: KeyFile[] = [];

before(async () => {
  const master = newMasterKey();
  const id = randomBytes(32).toString('hex');
  for (const N of [1 << 10, 1 << 12]) samples.push(await wrapMasterKey(master, 'fuzz', id, { host: 'h', user: 'u' }, { N, r: 8, p: 1 }));
  samples.push(
    kmsKeyFile('arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab', randomBytes(180), { host: 'h', user: 'u' }),
  );
});

describe('fuzz: key files', () => {
  it('arbitrary bytes, JSON and mutations of valid key files parse to bounded, schema-valid key files or fail as Cairn.Damaged', () => {
    const valid = fc.nat().map((n) => samples[n % samples.length] as KeyFile);
    const kdfEdges = fc
      .record({
        N: fc.oneof(fc.integer({ min: 0, max: 1 << 23 }), fc.constantFrom(1 << 20, 1 << 21, 1 << 22, 3 << 12, 1.5, -1)),
        r: fc.oneof(fc.integer({ min: 0, max: 40 }), fc.constant(1e9)),
        p: fc.oneof(fc.integer({ min: 0, max: 20 }), fc.constant(1e9)),
      })
      .chain((kdf) => valid.map((file) => (file.kind === 'passphrase' ? { ...file, kdf: { ...file.kdf, ...kdf } } : file)));
    fuzz(
      'keyfile/parse',
      fc.oneof(jsonDocumentBytes(valid), jsonDocumentBytes(kdfEdges)),
      (data) => {
        decodes(
          () => parseKeyFile(data, 'keys/fuzz'),
          ['Cairn.Damaged'],
          (file) => {
            assert.ok(keyFileSchema.safeParse(file).success);
            if (file.kind === 'passphrase') {
              const problem = scryptParamsProblem(file.kdf);
              assert.equal(problem, undefined, `accepted KDF parameters ${JSON.stringify(file.kdf)}: ${problem}`);
            }
          },
        );
      },
      1500,
    );
  });
});
