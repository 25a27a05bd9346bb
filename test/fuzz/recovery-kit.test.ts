import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { scryptParamsProblem } from '../../agent/core/crypto.ts';
import { newMasterKey } from '../../agent/core/keyfile.ts';
import { base32Decode, base32Encode, createRecoveryKit, parseRecoveryKit } from '../../agent/core/recovery-kit.ts';
import { decodes, fuzz, mutatedBytes } from './fuzz.ts';

/**
 * Recovery kits (text a person types back in): parseRecoveryKit returns a kit with
 * a repository id, bounded scrypt parameters, a 16-byte salt and a 60-byte sealed
 * key, or throws Cairn.Usage naming the line to look at. Text mutations mostly stop
 * at a line checksum, so payload mutations are also written out as kits whose line
 * and kit checksums are right (the documented format, docs/keys.md), to reach the
 * checks behind them.
 */
const FAST = { N: 1 << 10, r: 8, p: 1 };
const kits: string[] = [];
let payloads: Buffer[] = [];

before(async () => {
  for (let i = 0; i < 4; i++)
    kits.push(await createRecoveryKit(newMasterKey(), 'fuzz', { repositoryId: randomBytes(32).toString('hex') }, FAST));
  payloads = kits.map((kit) => {
    const lines = kit.split('\n').filter((l) => /^\d\d: /.test(l));
    return base32Decode(lines.map((l) => l.slice(4, l.indexOf('[')).replace(/\s/g, '')).join(''));
  });
});

/** A kit's text for any payload, with correct line and kit checksums. */
function kitText(payload: Buffer): string {
  const encoded = base32Encode(payload);
  const lines: string[] = [];
  for (let at = 0, n = 1; at < encoded.length; at += 16, n++) {
    const chars = encoded.slice(at, at + 16);
    const sum = base32Encode(createHash('sha256').update(`cairn-kit-line|${n}|${chars}`).digest().subarray(0, 2)).slice(0, 2);
    lines.push(`${String(n).padStart(2, '0')}: ${chars}  [${sum}]`);
  }
  const kitSum = base32Encode(createHash('sha256').update(payload).digest().subarray(0, 5));
  return ['-----BEGIN CAIRN RECOVERY KEY-----', ...lines, '-----END CAIRN RECOVERY KEY-----', `Kit checksum: ${kitSum}`, ''].join('\n');
}

describe('fuzz: recovery kits', () => {
  it('the checksummed writer here matches the real one', () => {
    for (const [i, payload] of payloads.entries()) {
      const parsed = parseRecoveryKit(kitText(payload));
      assert.deepEqual(parsed, parseRecoveryKit(kits[i] as string));
    }
  });

  it('text mutations, line shuffles and re-checksummed payload mutations parse to bounded kits or fail as Cairn.Usage', () => {
    const kit = fc.nat().map((n) => kits[n % kits.length] as string);
    const payload = fc.nat().map((n) => payloads[n % payloads.length] as Buffer);
    const lineEdit = fc
      .tuple(kit, fc.array(fc.tuple(fc.constantFrom('drop', 'dup', 'swap'), fc.nat(), fc.nat()), { minLength: 1, maxLength: 3 }))
      .map(([text, edits]) => {
        const lines = text.split('\n');
        for (const [op, a, b] of edits) {
          const i = a % lines.length;
          const j = b % lines.length;
          if (op === 'drop') lines.splice(i, 1);
          else if (op === 'dup') lines.splice(i, 0, lines[j] as string);
          else [lines[i], lines[j]] = [lines[j] as string, lines[i] as string];
        }
        return lines.join('\n');
      });
    const input = fc.oneof(
      fc.string({ maxLength: 300 }),
      mutatedBytes(kit.map((k) => Buffer.from(k))).map((b) => b.toString('utf8')),
      lineEdit,
      { weight: 4, arbitrary: mutatedBytes(payload).map(kitText) },
      fc
        .tuple(payload, fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }))
        .map(([p, n, r, pp]) => {
          const copy = Buffer.from(p);
          copy.set([n, r, pp], 36);
          return kitText(copy);
        }),
    );
    fuzz(
      'recovery-kit/parse',
      input,
      (text) => {
        decodes(
          () => parseRecoveryKit(text),
          ['Cairn.Usage'],
          (parsed) => {
            assert.match(parsed.repositoryId, /^[0-9a-f]{64}$/);
            assert.equal(parsed.salt.length, 16);
            assert.equal(parsed.sealed.length, 60);
            assert.equal(scryptParamsProblem(parsed.params), undefined, `accepted scrypt parameters ${JSON.stringify(parsed.params)}`);
          },
        );
      },
      1500,
    );
  });
});
