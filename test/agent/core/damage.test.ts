import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import {
  KnownDamage,
  MAX_PIECES_PER_MARKER,
  openMarker,
  readDamage,
  withoutMarkedLocations,
  writeDamageMarkers,
} from '../../../agent/core/damage.ts';
import { DAMAGE_PREFIX, damageKey } from '../../../agent/core/layout.ts';
import { PieceIndex } from '../../../agent/core/piece-index.ts';
import { planRestore, type PlannableSnapshot } from '../../../agent/core/restore-planning.ts';
import { applyPolicy } from '../../../agent/core/retention.ts';
import { snapshotSchema } from '../../../agent/core/snapshot.ts';
import { fileRepo, initSmallRepo, tempDir } from '../../helpers/repo.ts';

const who = { host: 'h', user: 'u' };
const hex = (): string => randomBytes(32).toString('hex');

describe('damage markers', () => {
  let work: { path: string; remove: () => Promise<void> };
  before(async () => {
    work = await tempDir('damage-core');
  });
  after(async () => {
    await work.remove();
  });

  it('are sealed, bound to their name, and read back merged', async () => {
    const repo = await initSmallRepo(fileRepo(join(work.path, 'sealed')));
    const [pack, piece, snapshot] = [hex(), hex(), hex()];
    const names = await writeDamageMarkers(
      repo,
      { packs: [{ pack, pieces: [piece], problem: 'frame failed' }], snapshots: [snapshot] },
      { who, tool: 'test', source: 'verify' },
    );
    assert.equal(names.length, 1);
    const name = names[0] as string;
    assert.ok(name.startsWith(DAMAGE_PREFIX));
    const raw = await repo.storage.get(name);
    assert.ok(!raw.includes(Buffer.from(snapshot)), 'the content is encrypted');
    const known = await readDamage(repo, () => assert.fail('no warning'));
    assert.ok(known.snapshots.has(snapshot));
    assert.ok(known.isMarked(piece, pack));
    assert.ok(!known.isMarked(piece, hex()), 'only at that pack');

    // Moved under another name it no longer opens: a marker cannot be swapped.
    const other = damageKey(hex());
    assert.throws(() => openMarker(repo.masterKey(), repo.id, other, raw), /failed authentication/);
    await rename(join(work.path, 'sealed', name), join(work.path, 'sealed', other));
    const warned: string[] = [];
    const after = await readDamage(repo, (m) => warned.push(m));
    assert.equal(after.snapshots.size, 0);
    assert.deepEqual(
      after.unreadable.map((u) => u.name),
      [other],
    );
    assert.equal(warned.length, 1);
  });

  it('a large finding is split into several markers, each under the piece limit', async () => {
    const repo = await initSmallRepo(fileRepo(join(work.path, 'split')));
    const pieces = Array.from({ length: MAX_PIECES_PER_MARKER + 5 }, hex);
    const names = await writeDamageMarkers(
      repo,
      { packs: [{ pack: hex(), pieces, problem: 'missing' }], snapshots: [hex()] },
      { who, tool: 'test', source: 'verify' },
    );
    assert.equal(names.length, 2);
    const known = await readDamage(repo, () => assert.fail('no warning'));
    assert.equal(known.locations.size, pieces.length);
    for (const marker of known.markers) assert.ok(marker.packs.reduce((n, p) => n + p.pieces.length, 0) <= MAX_PIECES_PER_MARKER);
  });

  it('a snapshot retagged under a new id is still the one its marker names (by original)', () => {
    const [first, retagged] = [hex(), hex()];
    const known = KnownDamage.empty();
    known.add({
      version: 1,
      id: hex(),
      time: '2026-01-01T00:00:00.000Z',
      by: who,
      tool: 't',
      source: 'verify',
      packs: [],
      snapshots: [first],
    });
    assert.ok(known.damaged({ id: retagged, original: first, tags: [] }));
    assert.equal(known.notGood({ id: hex(), tags: [] }), undefined);
    assert.match(known.notGood({ id: hex(), tags: [], partial: true }) ?? '', /partial/);
    assert.match(known.notGood({ id: hex(), tags: ['damaged'] }) ?? '', /tagged damaged/);
  });

  it('a backup index drops only the marked locations of a piece', async () => {
    const repo = await initSmallRepo(fileRepo(join(work.path, 'index')));
    const [bad, good] = [hex(), hex()];
    const piece = randomBytes(32);
    const index = new PieceIndex();
    const location = { type: 0 as const, frameOffset: 20, frameLength: 100, offsetInFrame: 0, length: 10 };
    index.add({ id: piece, packId: bad, ...location });
    await writeDamageMarkers(
      repo,
      { packs: [{ pack: bad, pieces: [piece.toString('hex')], problem: 'x' }], snapshots: [] },
      { who, tool: 't', source: 'verify' },
    );
    const known = await readDamage(repo, () => undefined);
    const dropped = withoutMarkedLocations(index, known);
    assert.equal(dropped.dropped, 1);
    assert.equal(dropped.index.has(piece), false, 'a piece only stored in a damaged place is uploaded again');

    index.add({ id: piece, packId: good, ...location, frameOffset: 40 });
    const kept = withoutMarkedLocations(index, known);
    assert.equal(kept.index.get(piece)?.packId, good, 'a piece also stored elsewhere is reused from there');
  });
});

describe('partial and damaged snapshots are not good', () => {
  it('old manifests without `partial` still read', () => {
    const manifest = {
      version: 1,
      id: hex(),
      time: '2026-01-01T00:00:00.000Z',
      endTime: '2026-01-01T00:00:01.000Z',
      host: 'h',
      user: 'u',
      paths: ['/x'],
      tags: [],
      engine: 'files',
      engineMetadata: {},
      tree: hex(),
      summary: {
        filesNew: 0,
        filesChanged: 0,
        filesUnchanged: 0,
        dirs: 0,
        bytesNew: 0,
        bytesChanged: 0,
        bytesUnchanged: 0,
        totalFiles: 0,
        totalBytes: 0,
        bytesRead: 0,
        piecesAdded: 0,
        rawBytesAdded: 0,
        bytesAdded: 0,
        durationMs: 0,
        errors: 0,
      },
      tool: 'cairn 0.0.1',
    };
    assert.equal(snapshotSchema.parse(manifest).partial, undefined);
    assert.equal(snapshotSchema.parse({ ...manifest, partial: true }).partial, true);
  });

  it('retention counts neither partial nor damaged snapshots', () => {
    const at = (h: number): string => new Date(Date.UTC(2026, 0, 1, h)).toISOString();
    const good = { id: 'a'.repeat(64), time: at(1), tags: [] };
    const partialNew = { id: 'b'.repeat(64), time: at(2), tags: [], partial: true };
    const damagedNew = { id: 'c'.repeat(64), time: at(3), tags: [], damaged: true };
    const result = applyPolicy([good, partialNew, damagedNew], { keepLast: 1 });
    const kept = new Map(result.keep.map((d) => [d.id, d.reasons.join('; ')]));
    assert.match(kept.get(good.id) ?? '', /last 1\/1/);
    assert.match(kept.get(partialNew.id) ?? '', /partial/);
    assert.match(kept.get(damagedNew.id) ?? '', /damaged/);

    const partialOld = { id: 'd'.repeat(64), time: at(0), tags: [], partial: true };
    const second = applyPolicy([partialOld, good], { keepLast: 1 });
    assert.deepEqual(
      second.remove.map((d) => d.id),
      [partialOld.id],
      'a partial snapshot older than the newest good one goes',
    );
  });

  it('the console planner passes over a damaged latest with a warning, and restores it only by id', () => {
    const snap = (id: string, h: number, damaged?: string): PlannableSnapshot => ({
      id,
      time: new Date(Date.UTC(2026, 0, 1, h)).toISOString(),
      host: 'h',
      engine: 'files',
      totalBytes: 1,
      ...(damaged ? { damaged } : {}),
    });
    const good = snap('a'.repeat(64), 1);
    const damaged = snap('b'.repeat(64), 2, 'a damage marker names it');
    const ctx = { snapshots: [good, damaged], throughputs: [], planInstanceIds: ['i-1'], instanceOnline: () => true };
    const latest = planRestore({ planId: 'p', snapshot: 'latest' }, ctx);
    assert.equal(latest.snapshot.id, good.id);
    assert.ok(latest.warnings.some((w) => w.includes(damaged.id)));
    const byId = planRestore({ planId: 'p', snapshot: damaged.id }, ctx);
    assert.equal(byId.snapshot.id, damaged.id);
    assert.ok(byId.warnings.some((w) => /damaged/.test(w)));
  });
});
