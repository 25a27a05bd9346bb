import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeExtents } from '../../../agent/core/page-file.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { tempDir, PASSPHRASE } from '../../helpers/repo.ts';
import { PAGE, postgresFile, readPiece, rootEntries, withChangedPages } from './page-file-fixture.ts';

/** The extents' piece ids of a snapshot's page file. */
async function extentPieces(repo: Repository, snapshotId: string, name: string): Promise<Set<string>> {
  const entry = (await rootEntries(repo, await repo.readSnapshot(snapshotId))).find((e) => e.name === name);
  assert.ok(entry?.extentLists, `${name} is a page file`);
  const ids = new Set<string>();
  for (const listId of entry.extentLists)
    for (const e of decodeExtents(await readPiece(repo, listId), listId)) ids.add(e.id.toString('hex'));
  return ids;
}

/**
 * Prune's reference walk counts every piece a page file's extents name: an incremental page file
 * points at its parent's pieces for the pages that did not change, so forgetting the parent must
 * free only what the child does not use.
 */
describe('page files: prune after forgetting the parent', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('page-file-prune');
  });
  after(async () => {
    await work.remove();
  });

  it('keeps every piece the child snapshot needs: it restores exactly and verifies clean', async () => {
    const repoPath = join(work.path, 'repo');
    const src = join(work.path, 'src');
    await mkdir(src);
    const env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);

    const first = postgresFile(160); // 1.25 MiB of 8 KiB pages
    await writeFile(join(src, 'base.db'), first);
    const one = await runCli(['backup', src], env);
    assert.equal(one.code, 0, one.stderr);
    const parent = lastOfType(one, 'summary')?.snapshotId as string;

    const second = withChangedPages(first, [3, 70, 71, 159]);
    await writeFile(join(src, 'base.db'), second);
    const two = await runCli(['backup', src], env);
    assert.equal(two.code, 0, two.stderr);
    const child = lastOfType(two, 'summary')?.snapshotId as string;

    // The test means something only if the child points into the parent's pieces.
    const repo = await Repository.open(new FileStorage(repoPath), PASSPHRASE);
    const parentPieces = await extentPieces(repo, parent, 'base.db');
    const shared = [...(await extentPieces(repo, child, 'base.db'))].filter((id) => parentPieces.has(id));
    assert.ok(shared.length > 0, 'the child page file reuses pieces of its parent');

    const forgot = await runCli(['forget', parent], env);
    assert.equal(forgot.code, 0, forgot.stderr);
    const pruned = await runCli(['prune'], env);
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.ok((lastOfType(pruned, 'prune') as { bytesFreed: number }).bytesFreed > 0, 'the changed pages of the parent are freed');

    const out = join(work.path, 'restored');
    const restored = await runCli(['restore', child, '--target', out], env);
    assert.equal(restored.code, 0, restored.stderr);
    assert.ok((await readFile(join(out, 'base.db'))).equals(second), 'the child restores byte for byte');
    assert.equal(second.length % PAGE, 0);

    const verified = await runCli(['verify', '--read-data'], env);
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
  });
});
