import { z } from 'zod';
import { CairnError } from './errors.ts';
import { FORMAT_VERSION } from './layout.ts';

export const MIN_CHUNK_LIMIT = 1 << 12;
export const MAX_CHUNK_LIMIT = 1 << 26;

const chunkerSchema = z
  .object({
    algorithm: z.literal('fastcdc-gear32'),
    min: z.number().int().min(MIN_CHUNK_LIMIT).max(MAX_CHUNK_LIMIT),
    avg: z.number().int().min(MIN_CHUNK_LIMIT).max(MAX_CHUNK_LIMIT),
    max: z.number().int().min(MIN_CHUNK_LIMIT).max(MAX_CHUNK_LIMIT),
  })
  .refine((c) => c.min < c.avg && c.avg < c.max && (c.avg & (c.avg - 1)) === 0, {
    message: 'chunker sizes must satisfy min < avg < max with avg a power of two',
  });

export const compressionSchema = z.discriminatedUnion('codec', [
  z.object({ codec: z.literal('none') }),
  z.object({ codec: z.literal('zstd'), level: z.number().int().min(-7).max(22) }),
]);
export type Compression = z.infer<typeof compressionSchema>;

/** The plaintext `config` object: everything a reader needs before it has a key. */
export const repositoryConfigSchema = z.object({
  format: z.literal('cairn'),
  version: z.union([z.literal(1), z.literal(FORMAT_VERSION)]),
  id: z.string().regex(/^[0-9a-f]{64}$/),
  created: z.string(),
  chunker: chunkerSchema,
  packSize: z
    .number()
    .int()
    .min(1 << 20)
    .max(1 << 30),
  compression: compressionSchema,
  /** Objects other than this config pass through a storage hook (docs/storage-hooks.md). */
  transform: z.literal('hook').optional(),
  /**
   * Optional: the chunker key, sealed under the master key (base64), for a repository
   * created by `cairn copy --to-init` with another repository's chunker parameters, so
   * copied data and later backups are cut alike and dedupe. Absent: derived from the master key.
   */
  chunkerKey: z.string().optional(),
});
export type RepositoryConfig = z.infer<typeof repositoryConfigSchema>;
export type ChunkerParams = RepositoryConfig['chunker'];

export const DEFAULT_CHUNKER: ChunkerParams = { algorithm: 'fastcdc-gear32', min: 256 << 10, avg: 1 << 20, max: 4 << 20 };
// 8 MiB: S3 object count stays low (125k objects per TB) and a backup holds at most (concurrency + 1) packs in memory.
export const DEFAULT_PACK_SIZE = 8 << 20;
// Level 1 on runs of ≥ 256 KiB compresses database pages as well as level 3 at 1.5× the speed (measured with `npm run bench`).
export const DEFAULT_COMPRESSION: Compression = { codec: 'zstd', level: 1 };

export function parseRepositoryConfig(raw: Buffer, location: string): RepositoryConfig {
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch (cause) {
    throw new CairnError('Cairn.Damaged', `the repository config at ${location} is not valid JSON`, { cause });
  }
  const version = (json as { version?: unknown } | null)?.version;
  if (typeof version === 'number' && version > FORMAT_VERSION) {
    throw new CairnError(
      'Cairn.Usage',
      `the repository at ${location} uses format version ${version}; this cairn reads up to version ${FORMAT_VERSION}`,
      {
        hint: 'upgrade cairn',
      },
    );
  }
  const parsed = repositoryConfigSchema.safeParse(json);
  if (!parsed.success) {
    throw new CairnError('Cairn.Damaged', `the repository config at ${location} is invalid: ${z.prettifyError(parsed.error)}`);
  }
  return parsed.data;
}

/** "zstd", "zstd:5", "none" → Compression. */
export function parseCompression(spec: string): Compression {
  const match = /^(none|zstd)(?::(-?\d+))?$/.exec(spec.trim());
  if (!match)
    throw new CairnError('Cairn.Usage', `invalid compression ${JSON.stringify(spec)}`, { hint: 'use none, zstd or zstd:LEVEL (1-19)' });
  if (match[1] === 'none') return { codec: 'none' };
  const level = match[2] === undefined ? 1 : Number(match[2]);
  const parsed = compressionSchema.safeParse({ codec: 'zstd', level });
  if (!parsed.success) throw new CairnError('Cairn.Usage', `invalid zstd level ${match[2]}`, { hint: 'use a level from 1 to 19' });
  return parsed.data;
}
