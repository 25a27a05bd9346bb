import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { SALT_BYTES, deriveKey, open, seal } from './crypto.ts';
import { AlreadyExistsError, CairnError, DamagedError, NotFoundError, errorMessage } from './errors.ts';
import { DAMAGE_PREFIX, damageKey } from './layout.ts';
import { PieceIndex } from './piece-index.ts';
import type { Repository, Who } from './repository.ts';
import { markedDamaged, type Snapshot } from './snapshot.ts';

/**
 * Damage markers (docs/repository-format.md, "Damage markers"): what a verify found damaged,
 * written so that retention, restore planning, `latest` and the next backup know it too.
 *
 * Known one way: a marker is created once under a random name (create-if-absent) and never
 * rewritten, and nothing read from the repository ever un-marks anything, so a host (which may
 * only create objects) can add damage but never clear it. Clearing a marker is an operator's
 * decision, taken with delete rights: deleting the `damage/<id>` object.
 *
 * A marker is sealed under its own subkey, HKDF(master, "cairn/v1/damage", salt), with its name
 * and the repository id as additional data, so it cannot be moved, swapped or made by anyone
 * without the key.
 */

const MAGIC = Buffer.from('CDM\x01', 'latin1');
const INFO = 'cairn/v1/damage';
/** Pieces per marker: a verify that finds more writes several markers, each well under a MiB. */
export const MAX_PIECES_PER_MARKER = 10_000;

const hex64 = z.string().regex(/^[0-9a-f]{64}$/);

export const damageMarkerSchema = z.object({
  version: z.literal(1),
  id: hex64,
  time: z.string(),
  by: z.object({ host: z.string(), user: z.string() }),
  tool: z.string(),
  /** What found it: "verify" (and, later, a failed drill). */
  source: z.string(),
  /** Per pack, the pieces found damaged there; every location of those pieces in that pack is bad. */
  packs: z.array(z.object({ pack: hex64, pieces: z.array(hex64), problem: z.string() })),
  /** The snapshots whose files the damage affects (they are no longer good). */
  snapshots: z.array(hex64),
});
export type DamageMarker = z.infer<typeof damageMarkerSchema>;

function aad(repositoryId: string, name: string): Buffer {
  return Buffer.from(`${INFO}|${repositoryId}|${name}`, 'utf8');
}

/** `"CDM" 0x01 ‖ salt[16] ‖ seal(HKDF(master, "cairn/v1/damage", salt), JSON, aad)`. */
export function sealMarker(master: Buffer, repositoryId: string, marker: DamageMarker): Buffer {
  const name = damageKey(marker.id);
  const salt = randomBytes(SALT_BYTES);
  const body = seal(deriveKey(master, INFO, salt), Buffer.from(JSON.stringify(marker), 'utf8'), aad(repositoryId, name));
  return Buffer.concat([MAGIC, salt, body]);
}

export function openMarker(master: Buffer, repositoryId: string, name: string, data: Buffer): DamageMarker {
  if (data.length < MAGIC.length + SALT_BYTES || !data.subarray(0, MAGIC.length).equals(MAGIC))
    throw new DamagedError(`${name} is not a damage marker (bad header)`);
  const salt = data.subarray(MAGIC.length, MAGIC.length + SALT_BYTES);
  const plain = open(deriveKey(master, INFO, salt), data.subarray(MAGIC.length + SALT_BYTES), aad(repositoryId, name));
  if (!plain) throw new DamagedError(`${name} failed authentication: it was altered, truncated, or written by another repository`);
  let json: unknown;
  try {
    json = JSON.parse(plain.toString('utf8'));
  } catch (cause) {
    throw new DamagedError(`${name} is not valid JSON`, { cause });
  }
  const parsed = damageMarkerSchema.safeParse(json);
  if (!parsed.success) throw new DamagedError(`${name} is invalid: ${z.prettifyError(parsed.error)}`);
  if (damageKey(parsed.data.id) !== name) throw new DamagedError(`${name} claims to be marker ${parsed.data.id}`);
  return parsed.data;
}

/** What one verify found: damaged locations (pack → pieces) and the snapshots affected. */
export interface FoundDamage {
  packs: Array<{ pack: string; pieces: string[]; problem: string }>;
  snapshots: string[];
}

/**
 * Writes markers for what was found (several when it names more than MAX_PIECES_PER_MARKER
 * pieces; each repeats the affected snapshots). Returns the names written. Nothing is written
 * when nothing was found.
 */
export async function writeDamageMarkers(
  repo: Repository,
  found: FoundDamage,
  meta: { who: Who; tool: string; source: string; now?: Date },
): Promise<string[]> {
  if (found.packs.length === 0 && found.snapshots.length === 0) return [];
  const batches: FoundDamage['packs'][] = [[]];
  let count = 0;
  for (const entry of found.packs) {
    for (let at = 0; at < Math.max(1, entry.pieces.length); at += MAX_PIECES_PER_MARKER) {
      const pieces = entry.pieces.slice(at, at + MAX_PIECES_PER_MARKER);
      if (count > 0 && count + pieces.length > MAX_PIECES_PER_MARKER) {
        batches.push([]);
        count = 0;
      }
      (batches.at(-1) as FoundDamage['packs']).push({ pack: entry.pack, pieces, problem: entry.problem });
      count += pieces.length;
    }
  }
  const names: string[] = [];
  for (const packs of batches) {
    const marker: DamageMarker = {
      version: 1,
      id: randomBytes(32).toString('hex'),
      time: (meta.now ?? new Date()).toISOString(),
      by: meta.who,
      tool: meta.tool,
      source: meta.source,
      packs,
      snapshots: [...new Set(found.snapshots)].sort(),
    };
    const name = damageKey(marker.id);
    try {
      await repo.storage.put(name, sealMarker(repo.masterKey(), repo.id, marker), { ifAbsent: true });
    } catch (error) {
      // A random 32-byte name already taken is not ours to overwrite; the marker is simply not written twice.
      if (!(error instanceof AlreadyExistsError)) throw error;
    }
    names.push(name);
  }
  return names;
}

/** Every readable marker merged, and the markers that could not be read. */
export class KnownDamage {
  /** Snapshot ids some marker names. */
  readonly snapshots = new Set<string>();
  /** piece id (hex) → the packs where it is marked damaged. */
  readonly locations = new Map<string, Set<string>>();
  readonly markers: DamageMarker[] = [];
  readonly unreadable: Array<{ name: string; error: string }> = [];

  static empty(): KnownDamage {
    return new KnownDamage();
  }

  add(marker: DamageMarker): void {
    this.markers.push(marker);
    for (const id of marker.snapshots) this.snapshots.add(id);
    for (const entry of marker.packs) {
      for (const piece of entry.pieces) {
        const packs = this.locations.get(piece) ?? new Set<string>();
        packs.add(entry.pack);
        this.locations.set(piece, packs);
      }
    }
  }

  /** True when a marker names this piece at this pack. */
  isMarked(piece: string, pack: string): boolean {
    return this.locations.get(piece)?.has(pack) ?? false;
  }

  /**
   * True when a marker names the snapshot (by its id, or by the id it was first committed as: a
   * manifest `cairn tag` rewrote keeps `original`), or an operator tagged it `damaged`.
   */
  damaged(snapshot: Pick<Snapshot, 'id' | 'tags' | 'original'>): boolean {
    return this.named(snapshot) || markedDamaged(snapshot);
  }

  /** True when a marker names the snapshot's id or its `original`. */
  named(snapshot: Pick<Snapshot, 'id' | 'original'>): boolean {
    return this.snapshots.has(snapshot.id) || (snapshot.original !== undefined && this.snapshots.has(snapshot.original));
  }

  /** Why the snapshot is damaged (`damaged`), for the messages `latest` prints when it passes over it; undefined when it is not. */
  damagedReason(snapshot: Pick<Snapshot, 'id' | 'tags' | 'original'>): string | undefined {
    if (this.named(snapshot)) return 'a damage marker names it';
    if (markedDamaged(snapshot)) return 'it is tagged damaged';
    return undefined;
  }

  /** Why a snapshot is not good (damage markers, the `damaged` tag, a partial backup), or undefined for a good one. */
  notGood(snapshot: Pick<Snapshot, 'id' | 'tags' | 'partial' | 'original'>): string | undefined {
    if (this.named(snapshot)) return 'a damage marker names it';
    if (markedDamaged(snapshot)) return 'it is tagged damaged';
    if (snapshot.partial === true) return 'it is partial (some files could not be read)';
    return undefined;
  }
}

/**
 * Reads every marker. One that cannot be read (junk, another repository's, cut short) is
 * reported through `warn` and listed in `unreadable`; callers treat that conservatively
 * (retention removes nothing while one cannot be read: it might name any snapshot).
 * Storage failures and cancellation are thrown, not taken for junk.
 */
export async function readDamage(repo: Repository, warn: (message: string) => void): Promise<KnownDamage> {
  const known = new KnownDamage();
  const names: string[] = [];
  for await (const object of repo.storage.list(DAMAGE_PREFIX)) {
    // A name that is not a marker's (damage/junk) is read too, and reported as an unreadable marker.
    names.push(object.key);
  }
  for (const name of names.sort()) {
    try {
      known.add(openMarker(repo.masterKey(), repo.id, name, await repo.storage.get(name)));
    } catch (error) {
      if (error instanceof NotFoundError) continue; // an operator cleared it while we listed
      if (!(error instanceof CairnError && error.code === 'Cairn.Damaged')) throw error;
      known.unreadable.push({ name, error: errorMessage(error) });
      warn(
        `the damage marker ${name} cannot be read (${errorMessage(error)}): the snapshots it names are unknown, so retention removes nothing until an operator deletes it`,
      );
    }
  }
  return known;
}

/**
 * The index a backup reuses pieces from: every location a marker names is dropped, so a piece
 * that lives only in damaged places is read again and uploaded anew, while a piece that also
 * has a good location (an earlier re-upload) is still reused from there. Returns the same index
 * when nothing is marked.
 */
export function withoutMarkedLocations(index: PieceIndex, known: KnownDamage): { index: PieceIndex; dropped: number } {
  if (known.locations.size === 0) return { index, dropped: 0 };
  const kept = new PieceIndex();
  let dropped = 0;
  for (const entry of index.entries()) {
    if (known.isMarked(entry.id.toString('hex'), entry.packId)) dropped++;
    else kept.add(entry);
  }
  return dropped === 0 ? { index, dropped } : { index: kept, dropped };
}
