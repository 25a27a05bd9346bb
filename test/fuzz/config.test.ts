import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DEFAULT_CHUNKER, parseCompression, parseRepositoryConfig, repositoryConfigSchema } from '../../agent/core/config.ts';
import { CONFIG_KEY } from '../../agent/core/layout.ts';
import { Repository } from '../../agent/core/repository.ts';
import { MemoryStorage } from '../helpers/memory-storage.ts';
import { decodes, fuzz, jsonDocumentBytes } from './fuzz.ts';

/**
 * The repository config (plaintext `config`, read before any key): parseRepositoryConfig
 * returns a config its schema accepts or throws Cairn.Damaged (malformed) or
 * Cairn.Usage (a newer format version: upgrade cairn). The compression spec parser
 * (--compression) returns a valid codec or throws Cairn.Usage.
 */
describe('fuzz: repository config', () => {
  it('arbitrary bytes, JSON and mutations of a real config parse to valid configs or fail cleanly', async () => {
    const storage = new MemoryStorage();
    await Repository.init(storage, 'fuzz passphrase', { host: 'fuzz', user: 'fuzz' });
    const real = JSON.parse((await storage.get(CONFIG_KEY)).toString('utf8')) as unknown;
    const valid = fc.oneof(
      fc.constant(real),
      fc
        .record({ min: fc.constantFrom(4096, 1 << 18), avg: fc.constantFrom(1 << 16, 1 << 20), max: fc.constantFrom(1 << 22, 1 << 26) })
        .map((c) => ({ ...(real as object), chunker: { ...DEFAULT_CHUNKER, ...c } })),
    );
    fuzz(
      'config/parse',
      jsonDocumentBytes(valid),
      (data) => {
        decodes(
          () => parseRepositoryConfig(data, 'memory://fuzz'),
          ['Cairn.Damaged', 'Cairn.Usage'],
          (config) => {
            assert.ok(repositoryConfigSchema.safeParse(config).success);
            assert.ok(config.chunker.min < config.chunker.avg && config.chunker.avg < config.chunker.max);
          },
        );
      },
      1500,
    );
  });

  it('compression specs parse to a valid codec or fail as Cairn.Usage', () => {
    const spec = fc.oneof(
      fc.string({ maxLength: 12 }),
      fc
        .tuple(
          fc.constantFrom('zstd', 'none', 'ZSTD', ' zstd'),
          fc.constantFrom(':', '', '::'),
          fc.oneof(fc.integer().map(String), fc.string({ maxLength: 4 })),
        )
        .map((p) => p.join('')),
    );
    fuzz(
      'config/compression',
      spec,
      (text) => {
        decodes(
          () => parseCompression(text),
          ['Cairn.Usage'],
          (c) => assert.ok(c.codec === 'none' || (Number.isInteger(c.level) && c.level >= -7 && c.level <= 22)),
        );
      },
      1000,
    );
  });
});
