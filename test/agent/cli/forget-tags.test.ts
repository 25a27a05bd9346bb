import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Repository } from '../../../agent/core/repository.ts';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { PASSPHRASE, fileRepo, tempDir } from '../../helpers/repo.ts';

interface Listed {
  id: string;
  tags: string[];
  original?: string;
}

describe('forget by id, and tags', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  let repoPath: string;
  let src: string;

  const list = async (): Promise<Listed[]> =>
    (lastOfType(await runCli(['snapshots'], env), 'snapshots') as { snapshots: Listed[] }).snapshots;
  const backup = async (...tags: string[]): Promise<string> => {
    await writeFile(join(src, 'changing.txt'), randomBytes(64).toString('hex'));
    const r = await runCli(['backup', src, ...tags.flatMap((t) => ['--tag', t])], env);
    assert.equal(r.code, 0, r.stderr);
    return lastOfType(r, 'summary')?.snapshotId as string;
  };

  before(async () => {
    work = await tempDir('forget-tags');
    repoPath = join(work.path, 'repo');
    src = join(work.path, 'src');
    await mkdir(src);
    await writeFile(join(src, 'file.bin'), randomBytes(50_000));
    env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
  });
  after(async () => {
    await work.remove();
  });

  it('forgets snapshots by unique prefix; a dry run deletes nothing; ids with --keep-* is a usage error; history records it', async () => {
    const a = await backup();
    const b = await backup();
    const c = await backup();

    const dry = await runCli(['forget', a.slice(0, 8), '--dry-run'], env);
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(
      (lastOfType(dry, 'forget') as { removed: Array<{ id: string }> }).removed.map((r) => r.id),
      [a],
    );
    assert.deepEqual(
      (await list()).map((s) => s.id),
      [a, b, c],
      'a dry run deletes nothing',
    );

    const both = await runCli(['forget', a, '--keep-last', '1'], env);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /either snapshot ids or --keep-\* rules/);

    const missing = await runCli(['forget', 'ffff0000'], env);
    assert.equal(missing.code, 13, 'an unknown id is not found');

    const done = await runCli(['forget', a.slice(0, 8), b], env);
    assert.equal(done.code, 0, done.stderr);
    assert.deepEqual((lastOfType(done, 'forget') as { removed: Array<{ id: string }> }).removed.map((r) => r.id).sort(), [a, b].sort());
    assert.deepEqual(
      (await list()).map((s) => s.id),
      [c],
    );

    const events = (
      lastOfType(await runCli(['history'], env), 'history') as { events: Array<{ event: string; removed?: Array<{ id: string }> }> }
    ).events.filter((e) => e.event === 'forget');
    assert.equal(events.length, 1, 'one forget event; the dry run recorded none');
    assert.deepEqual(events[0]?.removed?.map((r) => r.id).sort(), [a, b].sort());
  });

  it('refuses an ambiguous prefix and deletes nothing', async () => {
    // Two manifests whose ids share a prefix: copies of a real one under chosen names.
    const repo = await Repository.open(fileRepo(repoPath), PASSPHRASE);
    const [base] = (await repo.listSnapshots()).snapshots;
    assert.ok(base);
    const twins = ['abcd1', 'abcd2'].map((p) => p + randomBytes(32).toString('hex').slice(p.length));
    for (const id of twins) await repo.saveSnapshot({ ...base, id });
    const before = (await list()).map((s) => s.id).sort();
    const r = await runCli(['forget', 'abcd'], env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /prefix abcd is ambiguous/);
    assert.deepEqual((await list()).map((s) => s.id).sort(), before);
    // A longer prefix is unique.
    assert.equal((await runCli(['forget', twins[0]!.slice(0, 5), twins[1]!.slice(0, 5)], env)).code, 0);
    assert.deepEqual(
      (await list()).map((s) => s.id).sort(),
      before.filter((id) => !twins.includes(id)),
    );
  });

  it('refuses a pinned snapshot unless --force, which takes its pin too', async () => {
    const id = await backup();
    assert.equal((await runCli(['pin', id], env)).code, 0);
    const refused = await runCli(['forget', id], env);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /are pinned; nothing was forgotten/);
    assert.ok((await list()).some((s) => s.id === id));
    const forced = await runCli(['forget', id, '--force'], env);
    assert.equal(forced.code, 0, forced.stderr);
    assert.ok(!(await list()).some((s) => s.id === id));
    assert.ok(!(await readdir(join(repoPath, 'pins')).catch((): string[] => [])).includes(id), 'the pin went with the snapshot');
  });

  it('tag --add/--remove/--set writes a new manifest (new id, original kept), moves its pin, and survives verify', async () => {
    const first = await backup('daily');
    const other = await backup('weekly');
    assert.equal((await runCli(['pin', first], env)).code, 0);

    const dry = await runCli(['tag', first.slice(0, 8), '--add', 'keep', '--dry-run'], env);
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual((await list()).find((s) => s.id === first)?.tags, ['daily'], 'a dry run changes nothing');

    const r = await runCli(['tag', first.slice(0, 8), '--add', 'keep', '--add', 'audit', '--remove', 'daily'], env);
    assert.equal(r.code, 0, r.stderr);
    const [change] = (lastOfType(r, 'tag') as { changes: Array<{ id: string; newId: string; original: string; tags: string[] }> }).changes;
    assert.ok(change && change.id === first && change.newId !== first && change.original === first);
    const now = await list();
    assert.ok(!now.some((s) => s.id === first), 'the old manifest is gone');
    const tagged = now.find((s) => s.id === change.newId);
    assert.deepEqual(tagged?.tags, ['keep', 'audit']);
    assert.equal(tagged?.original, first);
    const pins = await readdir(join(repoPath, 'pins'));
    assert.ok(pins.includes(change.newId) && !pins.includes(first), 'the pin moved to the new id');

    // Tagging again keeps pointing at the first id; --set replaces everything.
    const again = await runCli(['tag', change.newId, '--set', 'gold'], env);
    const second = (lastOfType(again, 'tag') as { changes: Array<{ newId: string; original: string }> }).changes[0];
    assert.ok(second);
    assert.equal(second.original, first);
    assert.deepEqual((await list()).find((s) => s.id === second.newId)?.tags, ['gold']);
    const unchanged = await runCli(['tag', second.newId, '--add', 'gold'], env);
    assert.equal(
      (lastOfType(unchanged, 'tag') as { changes: Array<{ changed: boolean; newId: string }> }).changes[0]?.newId,
      second.newId,
      'nothing to change: same id',
    );
    assert.equal((await runCli(['tag', other, '--add', 'a,b'], env)).code, 2, 'a tag with a comma is refused');

    const verified = await runCli(['verify', '--read-data'], env);
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
    const restored = join(work.path, 'restored');
    assert.equal((await runCli(['restore', second.newId, '--target', restored], env)).code, 0, 'the retagged snapshot restores');

    const grouped = lastOfType(await runCli(['snapshots', '--group-by', 'tags'], env), 'snapshots') as {
      groups: Array<{ group: { tags: string[] }; snapshots: Listed[] }>;
    };
    const byTags = Object.fromEntries(grouped.groups.map((g) => [g.group.tags.join(','), g.snapshots.map((s) => s.id)]));
    assert.deepEqual(byTags.gold, [second.newId]);
    assert.deepEqual(byTags.weekly, [other]);
    const filtered = lastOfType(await runCli(['snapshots', '--tag', 'gold', '--tag', 'weekly'], env), 'snapshots') as {
      snapshots: Listed[];
    };
    assert.deepEqual(filtered.snapshots.map((s) => s.id).sort(), [second.newId, other].sort());
    const events = (lastOfType(await runCli(['history'], env), 'history') as { events: Array<{ event: string }> }).events.filter(
      (e) => e.event === 'tag',
    );
    assert.equal(events.length, 2, 'each tag change is recorded; the dry run and the no-op are not');
  });
});
