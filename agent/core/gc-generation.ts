import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { ID_BYTES, SALT_BYTES, deriveKey, open, seal } from './crypto.ts';
import { DamagedError, NotFoundError, errorMessage } from './errors.ts';
import { GC_PREFIX, gcGenerationKey, gcSweptKey } from './layout.ts';
import type { Repository } from './repository.ts';

/**
 * A GC generation: the mark of the two-phase garbage collection
 * (docs/locks-and-gc.md, "Garbage collection"). Written create-only at
 * `gc/<generation>` before anything is deleted, sealed with the repository key
 * like the other repository objects, it names
 *
 * - `packs`: the packs the collection means to delete (no used piece, or repacked);
 * - `pieces`: the pieces that lose every location when it is done (the unused
 *   pieces of the index), which no backup may reuse while the generation is known;
 * - `seen`: the snapshots the decision was made from. The sweep re-reads every
 *   other manifest (committed since, or missed by the listing) and keeps
 *   whatever they reference: this set, not a time, says what is new, so no
 *   clock (the storage's or a host's) decides which manifests are re-read.
 *
 * When its sweep has deleted what it could, `gc/<generation>.swept` is written;
 * both objects stay one grace longer, so a backup that loaded the index just
 * before the sweep still learns which pieces not to reuse.
 */
export const GC_GENERATION_VERSION = 1;

const MAGIC = Buffer.from('CGC\x01', 'latin1');
const HEADER_BYTES = MAGIC.length + SALT_BYTES;
const GENERATION_NAME = /^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{16}$/;

const generationSchema = z.object({
  version: z.literal(GC_GENERATION_VERSION),
  generation: z.string().regex(GENERATION_NAME),
  /** The marking host's clock: informational only, nothing is timed by it. */
  created: z.string(),
  by: z.object({ host: z.string(), user: z.string(), operation: z.string() }),
  seen: z.array(z.string().regex(/^[0-9a-f]{64}$/)),
  packs: z.array(z.string().regex(/^[0-9a-f]{64}$/)),
  /** The doomed piece ids, 32 bytes each, concatenated, base64. */
  pieces: z.string(),
});

export interface GcGeneration {
  generation: string;
  created: string;
  by: { host: string; user: string; operation: string };
  seen: string[];
  packs: string[];
  pieces: Buffer[];
}

/** A generation as found on storage, with the storage's times. */
export interface StoredGeneration extends GcGeneration {
  /** When the mark was stored, by the storage's clock. */
  marked: number;
  /** When its sweep finished, by the storage's clock; undefined while pending. */
  swept: number | undefined;
}

export function newGenerationName(now = new Date()): string {
  return `${now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z')}-${randomBytes(8).toString('hex')}`;
}

function recordKey(masterKey: Buffer, salt: Buffer): Buffer {
  return deriveKey(masterKey, 'cairn/v1/gc-generation', salt);
}

/** `"CGC" 0x01 | salt (16) | AES-256-GCM(JSON)` with the header and the object's name as additional data. */
export function sealGeneration(repo: Repository, name: string, payload: Buffer): Buffer {
  const salt = randomBytes(SALT_BYTES);
  const header = Buffer.concat([MAGIC, salt]);
  return Buffer.concat([header, seal(recordKey(repo.masterKey(), salt), payload, Buffer.concat([header, Buffer.from(name, 'utf8')]))]);
}

export function openGeneration(repo: Repository, name: string, data: Buffer): Buffer {
  if (data.length < HEADER_BYTES || !data.subarray(0, MAGIC.length).equals(MAGIC)) throw new DamagedError(`${name} is not a GC generation`);
  const header = data.subarray(0, HEADER_BYTES);
  const plain = open(
    recordKey(repo.masterKey(), header.subarray(MAGIC.length)),
    data.subarray(HEADER_BYTES),
    Buffer.concat([header, Buffer.from(name, 'utf8')]),
  );
  if (!plain) throw new DamagedError(`${name} failed authentication: it was altered, truncated, or written by another repository`);
  return plain;
}

/** Writes the mark, create-only. */
export async function writeGeneration(repo: Repository, generation: GcGeneration): Promise<void> {
  const name = gcGenerationKey(generation.generation);
  const record: z.infer<typeof generationSchema> = {
    version: GC_GENERATION_VERSION,
    generation: generation.generation,
    created: generation.created,
    by: generation.by,
    seen: generation.seen,
    packs: generation.packs,
    pieces: Buffer.concat(generation.pieces).toString('base64'),
  };
  await repo.storage.put(name, sealGeneration(repo, name, Buffer.from(JSON.stringify(record))), { ifAbsent: true });
}

/** Records that the generation's sweep is done (create-only; a second sweep finds it there and is done too). */
export async function writeSwept(repo: Repository, generation: string): Promise<void> {
  const name = gcSweptKey(generation);
  await repo.storage.put(name, sealGeneration(repo, name, Buffer.from(JSON.stringify({ generation }))), { ifAbsent: true });
}

function decodeGeneration(repo: Repository, name: string, data: Buffer): GcGeneration {
  let parsed: z.infer<typeof generationSchema>;
  try {
    parsed = generationSchema.parse(JSON.parse(openGeneration(repo, name, data).toString('utf8')));
  } catch (error) {
    if (error instanceof DamagedError) throw error;
    throw new DamagedError(`${name} is not a valid GC generation: ${errorMessage(error)}`);
  }
  if (gcGenerationKey(parsed.generation) !== name) throw new DamagedError(`${name} claims to be generation ${parsed.generation}`);
  const bytes = Buffer.from(parsed.pieces, 'base64');
  if (bytes.length % ID_BYTES !== 0) throw new DamagedError(`${name}: its piece list is malformed`);
  const pieces: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += ID_BYTES) pieces.push(bytes.subarray(at, at + ID_BYTES));
  return { generation: parsed.generation, created: parsed.created, by: parsed.by, seen: parsed.seen, packs: parsed.packs, pieces };
}

/**
 * Every generation on storage, oldest name first, with the storage's times. An object under
 * `gc/` that cannot be read (junk, another repository's) is reported through `warn` and
 * skipped: it names nothing anyone could act on, and one junk object must not stop backups.
 */
export async function listGenerations(repo: Repository, warn: (message: string) => void): Promise<StoredGeneration[]> {
  const marks = new Map<string, number>();
  const swept = new Map<string, number>();
  for await (const object of repo.storage.list(GC_PREFIX)) {
    const name = object.key.slice(GC_PREFIX.length);
    const done = /^(.*)\.swept$/.exec(name);
    if (done && GENERATION_NAME.test(done[1] as string)) swept.set(done[1] as string, object.modified);
    else if (GENERATION_NAME.test(name)) marks.set(name, object.modified);
  }
  const found: StoredGeneration[] = [];
  for (const [generation, marked] of [...marks].sort(([a], [b]) => a.localeCompare(b))) {
    const name = gcGenerationKey(generation);
    let data: Buffer;
    try {
      data = await repo.storage.get(name);
    } catch (error) {
      if (error instanceof NotFoundError) continue; // tidied away while we listed
      throw error;
    }
    try {
      found.push({ ...decodeGeneration(repo, name, data), marked, swept: swept.get(generation) });
    } catch (error) {
      if (!(error instanceof DamagedError)) throw error;
      warn(`skipped ${name}, which cannot be read (${error.message})`);
    }
  }
  return found;
}

/** The doomed pieces of every generation, as one lookup. */
export function doomedPieces(generations: readonly GcGeneration[]): Set<string> {
  const doomed = new Set<string>();
  for (const g of generations) for (const id of g.pieces) doomed.add(id.toString('hex'));
  return doomed;
}

/** Generation names present in `after` but not in `before`. */
export function newGenerations(before: readonly GcGeneration[], after: readonly StoredGeneration[]): StoredGeneration[] {
  const known = new Set(before.map((g) => g.generation));
  return after.filter((g) => !known.has(g.generation));
}
