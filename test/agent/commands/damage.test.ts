import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, unlink, utimes, writeFile } from 'node:fs/promises';
import { unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { readDamage, writeDamageMarkers } from '../../../agent/core/damage.ts';
import { DAMAGE_PREFIX, packKey, snapshotKey } from '../../../agent/core/layout.ts';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import type { Repository } from '../../../agent/core/repository.ts';
import { decodeTree } from '../../../agent/core/tree.ts';
import { lastOfType, runCli } from '../../helpers/cli.ts';
import { PASSPHRASE, backupDir, fileRepo, initSmallRepo, tempDir } from '../../helpers/repo.ts';

const who = { host: 'test-host', user: 'tester' };

/** A repository with one directory backed up `count` times (a file changed between backups), through the library. */
async function repoWithSnapshots(root: string, name: string, count: number) {
  const repoPath = join(root, `${name}-repo`);
  const data = join(root, `${name}-data`);
  await mkdir(data, { recursive: true });
  const repo = await initSmallRepo(fileRepo(repoPath));
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    await writeFile(join(data, 'file.txt'), `version ${i}\n`);
    ids.push((await backupDir(repo, data)).id);
  }
  return { repo, repoPath, data, ids, env: { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE } };
}

async function markers(repoPath: string): Promise<string[]> {
  return readdir(join(repoPath, DAMAGE_PREFIX)).catch(() => []);
}

describe('damage is known, one way (issue 16)', () => {
  let work: { path: string; remove: () => Promise<void> };
  before(async () => {
    work = await tempDir('damage');
  });
  after(async () => {
    await work.remove();
  });

  it('restore latest over an unreadable newest manifest fails with exit 14 naming it and the newest good snapshot; snapshots lists it as damaged', async () => {
    const { repoPath, ids, env } = await repoWithSnapshots(work.path, 'manifest', 2);
    const [older, newest] = ids as [string, string];
    await writeFile(join(repoPath, snapshotKey(newest)), randomBytes(200));

    const restored = await runCli(['restore', 'latest', '--target', join(work.path, 'manifest-target')], env);
    assert.equal(restored.code, 14, restored.stderr);
    assert.match(restored.stderr, new RegExp(newest), 'names the unreadable snapshot');
    assert.match(restored.stderr, new RegExp(older), 'names the newest good snapshot to restore by id');
    await assert.rejects(readFile(join(work.path, 'manifest-target', 'file.txt')), 'nothing restored');

    const listed = await runCli(['snapshots'], env);
    assert.equal(listed.code, 0, listed.stderr);
    const result = lastOfType(listed, 'snapshots') as { unreadable: Array<{ id: string; status: string }> };
    assert.deepEqual(
      result.unreadable.map((u) => [u.id, u.status]),
      [[newest, 'damaged']],
    );

    const byId = await runCli(['restore', older, '--target', join(work.path, 'manifest-by-id')], env);
    assert.equal(byId.code, 0, byId.stderr);
    assert.equal(await readFile(join(work.path, 'manifest-by-id', 'file.txt'), 'utf8'), 'version 0\n');
  });

  it('an unreadable manifest older than the newest good one does not block latest', async () => {
    const { repoPath, ids, env } = await repoWithSnapshots(work.path, 'old-manifest', 2);
    const [older, newest] = ids as [string, string];
    // The newest's storage time must be later than the damaged one's: rewrite the older with an old mtime.
    const path = join(repoPath, snapshotKey(older));
    await writeFile(path, randomBytes(200));
    await utimes(path, new Date(Date.now() - 3_600_000), new Date(Date.now() - 3_600_000));
    const restored = await runCli(['restore', 'latest', '--target', join(work.path, 'old-manifest-target')], env);
    assert.equal(restored.code, 0, restored.stderr);
    assert.equal(lastOfType(restored, 'summary')?.snapshotId, newest);
  });

  it('forget --keep-last 1 with a marked newest keeps the older good one; latest passes over the marked one with a warning naming it', async () => {
    const { repo, ids, env } = await repoWithSnapshots(work.path, 'forget', 3);
    const [oldest, middle, newest] = ids as [string, string, string];
    await writeDamageMarkers(repo, { packs: [], snapshots: [newest] }, { who, tool: 'test', source: 'test' });

    const forgot = await runCli(['forget', '--keep-last', '1'], env);
    assert.equal(forgot.code, 0, forgot.stderr);
    const left = (await repo.listSnapshots()).snapshots.map((s) => s.id).sort();
    assert.deepEqual(left, [middle, newest].sort(), 'the newest good one (middle) is kept, the damaged one kept for inspection');
    assert.ok(!left.includes(oldest));

    const restored = await runCli(['restore', 'latest', '--target', join(work.path, 'forget-target')], env);
    assert.equal(restored.code, 0, restored.stderr);
    assert.equal(lastOfType(restored, 'summary')?.snapshotId, middle);
    const warnings = restored.lines.filter((l) => l.type === 'warning').map((l) => String(l.message));
    assert.ok(
      warnings.some((w) => w.includes(newest) && /passes over/.test(w)),
      `a warning names ${newest}: ${warnings.join(' | ')}`,
    );
  });

  it('the damaged tag counts as damage for forget too', async () => {
    const { repo, ids, env } = await repoWithSnapshots(work.path, 'tagged', 2);
    const [older, newest] = ids as [string, string];
    const tagged = await runCli(['tag', newest, '--add', 'damaged'], env);
    assert.equal(tagged.code, 0, tagged.stderr);
    const forgot = await runCli(['forget', '--keep-last', '1'], env);
    assert.equal(forgot.code, 0, forgot.stderr);
    const left = (await repo.listSnapshots()).snapshots;
    assert.ok(
      left.some((s) => s.id === older),
      'the older good snapshot stays',
    );
    assert.equal(left.length, 2);
  });

  it('while a damage marker cannot be read, forget removes nothing and says why', async () => {
    const { repo, repoPath, env } = await repoWithSnapshots(work.path, 'junk', 3);
    await mkdir(join(repoPath, DAMAGE_PREFIX), { recursive: true });
    await writeFile(join(repoPath, DAMAGE_PREFIX, 'a'.repeat(64)), randomBytes(100));
    const warned: string[] = [];
    const known = await readDamage(repo, (m) => warned.push(m));
    assert.equal(known.unreadable.length, 1);
    assert.match(warned.join('\n'), /cannot be read/);

    const forgot = await runCli(['forget', '--keep-last', '1'], env);
    assert.equal(forgot.code, 0, forgot.stderr);
    assert.equal((await repo.listSnapshots()).snapshots.length, 3, 'nothing removed');
    assert.ok(forgot.lines.some((l) => l.type === 'warning' && /damage marker/.test(String(l.message))));
  });

  it('verify --read-data on a corrupted pack writes a marker; the next backup uploads the damaged pieces again and a fresh verify passes', async () => {
    const repoPath = join(work.path, 'flip-repo');
    const data = join(work.path, 'flip-data');
    await mkdir(data);
    await writeFile(join(data, 'victim.bin'), randomBytes(300_000));
    await writeFile(join(data, 'other.txt'), 'other\n');
    const repo = await initSmallRepo(fileRepo(repoPath));
    const first = await backupDir(repo, data);
    await corruptFirstPiece(repo, repoPath, first.tree, 'victim.bin');
    const env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };

    const verified = await runCli(['verify', '--read-data'], env);
    assert.equal(verified.code, 14, verified.stderr);
    const report = lastOfType(verified, 'verify') as { markers: string[] };
    assert.equal(report.markers.length, 1);
    assert.deepEqual(await markers(repoPath), [report.markers[0]?.slice(DAMAGE_PREFIX.length)]);
    const known = await readDamage(repo, () => assert.fail('the marker reads'));
    assert.ok(known.snapshots.has(first.id), 'the marker names the affected snapshot');
    assert.ok(known.locations.size > 0, 'and the damaged pieces');

    const second = await runCli(['backup', data], env);
    assert.equal(second.code, 0, second.stderr);
    const summary = lastOfType(second, 'summary') as { snapshotId: string; piecesAdded: number };
    assert.ok(summary.piecesAdded > 0, 'the damaged pieces were uploaded again');

    const fresh = await runCli(['verify', '--read-data'], env);
    assert.equal(fresh.code, 0, fresh.stdout + fresh.stderr);
    const freshReport = lastOfType(fresh, 'verify') as { ok: boolean; known: unknown[]; markers: string[] };
    assert.equal(freshReport.ok, true);
    assert.ok(freshReport.known.length > 0, 'the marked location is reported as known');
    assert.deepEqual(freshReport.markers, [], 'nothing new to mark');

    const restored = await runCli(['restore', summary.snapshotId, '--target', join(work.path, 'flip-target')], env);
    assert.equal(restored.code, 0, restored.stderr);
    assert.deepEqual(await readFile(join(work.path, 'flip-target', 'victim.bin')), await readFile(join(data, 'victim.bin')));
  });

  it('a backup that could not read every file commits a manifest marked partial; retention does not count it', async () => {
    const { repo, data, ids, env } = await repoWithSnapshots(work.path, 'partial', 1);
    const [good] = ids as [string];
    await writeFile(join(data, 'a.txt'), 'a\n');
    await writeFile(join(data, 'b.txt'), 'b\n');
    let removed = false;
    // Small files are read one after another in name order: b.txt vanishes after a.txt is read, so it cannot be read.
    const partial = await backupDir(repo, data, {
      progress: {
        progress: (event) => {
          if (!removed && event.phase === 'backup') {
            removed = true;
            unlinkSync(join(data, 'b.txt'));
          }
        },
        warn: () => undefined,
      },
    });
    assert.ok(removed);
    assert.equal(partial.summary.errors, 1);
    assert.equal(partial.partial, true);
    assert.equal((await repo.readSnapshot(partial.id)).partial, true, 'the stored manifest says partial');
    assert.equal((await repo.readSnapshot(good)).partial, undefined, 'a complete one does not');

    // keep-last 1: the partial newest is kept (newer than the newest good) but not counted, so the good one stays too.
    const forgot = await runCli(['forget', '--keep-last', '1'], env);
    assert.equal(forgot.code, 0, forgot.stderr);
    assert.deepEqual((await repo.listSnapshots()).snapshots.map((s) => s.id).sort(), [good, partial.id].sort());
    await unlink(join(data, 'a.txt'));
  });
});

/** Flips one byte inside the frame holding the first piece of `name` in the snapshot's root tree. */
async function corruptFirstPiece(repo: Repository, repoPath: string, tree: string, name: string): Promise<void> {
  const index = await repo.loadIndex();
  const reader = new PieceReader(repo, index);
  const entries = decodeTree(await reader.read(Buffer.from(tree, 'hex')), tree).entries;
  const piece = entries.find((e) => e.name === name)?.content?.[0];
  assert.ok(piece);
  const location = index.get(Buffer.from(piece, 'hex'));
  assert.ok(location);
  const handle = await open(join(repoPath, packKey(location.packId)), 'r+');
  const at = location.frameOffset + Math.floor(location.frameLength / 2);
  const byte = Buffer.alloc(1);
  await handle.read(byte, 0, 1, at);
  byte[0] = (byte[0] as number) ^ 0x40;
  await handle.write(byte, 0, 1, at);
  await handle.close();
}
