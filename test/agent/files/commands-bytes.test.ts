import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, symlink, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { dump } from '../../../agent/commands/file-dump.ts';
import { SnapshotBrowser } from '../../../agent/commands/snapshot-browser.ts';
import { diff } from '../../../agent/commands/tree-diff.ts';
import type { Repository } from '../../../agent/core/repository.ts';
import { runCli } from '../../helpers/cli.ts';
import { tempDir, initSmallRepo, fileRepo, backupDir, PASSPHRASE } from '../../helpers/repo.ts';
import { craftSnapshot, META } from './craft.ts';

/**
 * Names that are not UTF-8 seen through ls/find/diff/dump (the findings of the
 * issue-20 review): two names whose bytes differ share one display form (U+FFFD),
 * so the commands key entries by their bytes, say the bytes in JSON output, and
 * refuse a display name that stands for more than one entry.
 */
const under = (dir: string, name: Buffer): Buffer => Buffer.concat([Buffer.from(`${dir}/`), name]);
const FE = Buffer.from([0x6e, 0xfe]);
const FF = Buffer.from([0x6e, 0xff]);

describe('ls, diff and dump over names that are not UTF-8', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  let env: Record<string, string>;
  before(async () => {
    work = await tempDir('commands-bytes');
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE };
  });
  after(async () => {
    await work.remove();
  });

  it('diff reports a change to one of two files whose names differ only in bytes that are not UTF-8', async () => {
    const src = join(work.path, 'diff-src');
    await mkdir(src);
    await writeFile(under(src, FE), 'first\n');
    await writeFile(under(src, FF), 'second\n');
    const a = await backupDir(repo, src);
    await writeFile(under(src, FE), 'first, changed\n');
    const b = await backupDir(repo, src);
    const browser = await SnapshotBrowser.open(repo);
    const items = [];
    for await (const item of diff(browser, a, b)) items.push(item);
    const changed = items.filter((i) => i.change === 'changed');
    assert.equal(changed.length, 1, JSON.stringify(items));
    assert.equal(changed[0]?.pathBytes, FE.toString('base64'), 'the changed one is told by its bytes');
    assert.equal(items.length, 1, JSON.stringify(items));
  });

  it('diff reports a symlink whose target changed only in bytes that are not UTF-8', async () => {
    const src = join(work.path, 'diff-link');
    await mkdir(src);
    await symlink(Buffer.from([0x74, 0xfe]), join(src, 'link'));
    const a = await backupDir(repo, src);
    await unlink(join(src, 'link'));
    await symlink(Buffer.from([0x74, 0xff]), join(src, 'link'));
    const b = await backupDir(repo, src);
    const browser = await SnapshotBrowser.open(repo);
    const items = [];
    for await (const item of diff(browser, a, b)) items.push(item);
    assert.equal(items.filter((i) => i.change === 'changed').length, 1, JSON.stringify(items));
  });

  it('dump of a display name shared by two entries refuses the ambiguity instead of writing the first one', async () => {
    const src = join(work.path, 'dump-src');
    await mkdir(src);
    await writeFile(under(src, FE), 'first\n');
    await writeFile(under(src, FF), 'second\n');
    const snapshot = await backupDir(repo, src);
    const browser = await SnapshotBrowser.open(repo);
    await assert.rejects(dump(browser, snapshot, 'n\ufffd', new PassThrough()), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'Cairn.Usage');
      assert.match(error.message, /ambiguous/);
      assert.match(error.message, new RegExp(`${FE.toString('hex')}, ${FF.toString('hex')}`), 'both names, by their bytes');
      return true;
    });
    const cli = await runCli(['dump', snapshot.id, 'n\ufffd'], env);
    assert.equal(cli.code, 2, cli.stderr);
    assert.equal(cli.stdout, '', 'nothing dumped');
  });

  it('ls of a crafted entry with an mtime past what a Date holds lists it instead of crashing', async () => {
    const id = await craftSnapshot(repo, async (_t, f) => [{ ...f, ...META, mtimeNs: '9'.repeat(30) }]);
    const snapshot = await repo.readSnapshot(id);
    const browser = await SnapshotBrowser.open(repo);
    const listedEntries = [];
    for await (const entry of browser.walk(snapshot.tree, '', true)) listedEntries.push(entry);
    assert.equal(listedEntries.length, 1);
    assert.equal(listedEntries[0]?.mtime, '9'.repeat(30), 'the raw nanoseconds');
    const cli = await runCli(['ls', id, '/'], env);
    assert.equal(cli.code, 0, cli.stderr);
    assert.equal((cli.lines.find((l) => l.type === 'entry')?.entry as { mtime?: string } | undefined)?.mtime, '9'.repeat(30));
  });

  it('ls and find in JSON carry the bytes of names, paths and targets that are not UTF-8', async () => {
    const src = join(work.path, 'json-src');
    await mkdir(src);
    await mkdir(under(src, FE));
    await writeFile(under(src, Buffer.concat([FE, Buffer.from('/f')])), 'below\n');
    await writeFile(under(src, FF), 'second\n');
    await symlink(Buffer.from([0x74, 0xfe]), join(src, 'link'));
    const snapshot = await backupDir(repo, src);
    const ls = await runCli(['ls', '-R', snapshot.id, '/'], env);
    assert.equal(ls.code, 0, ls.stderr);
    const listed = ls.lines.filter((l) => l.type === 'entry').map((l) => l.entry as Record<string, unknown>);
    const b64 = (b: Buffer): string => b.toString('base64');
    const byBytes = (bytes: Buffer): Record<string, unknown> | undefined => listed.find((e) => e.pathBytes === b64(bytes));
    assert.deepEqual(
      { name: byBytes(FE)?.name, nameBytes: byBytes(FE)?.nameBytes, type: byBytes(FE)?.type },
      { name: 'n\ufffd', nameBytes: b64(FE), type: 'dir' },
    );
    assert.deepEqual({ name: byBytes(FF)?.name, nameBytes: byBytes(FF)?.nameBytes }, { name: 'n\ufffd', nameBytes: b64(FF) });
    const below = byBytes(Buffer.concat([FE, Buffer.from('/f')]));
    assert.equal(below?.path, 'n\ufffd/f');
    assert.equal(below?.name, 'f');
    assert.equal(below?.nameBytes, undefined, 'a UTF-8 name has no second form');
    const link = listed.find((e) => e.path === 'link');
    assert.deepEqual(
      { target: link?.target, targetBytes: link?.targetBytes },
      { target: 't\ufffd', targetBytes: b64(Buffer.from([0x74, 0xfe])) },
    );
    assert.equal(link?.pathBytes, undefined);
    const find = await runCli(['find', '--snapshot', snapshot.id, 'n*'], env);
    assert.equal(find.code, 0, find.stderr);
    const found = find.lines.filter((l) => l.type === 'match').map((l) => (l.entry as Record<string, unknown>).nameBytes);
    assert.deepEqual(found.sort(), [b64(FE), b64(FF)].sort());
  });
});
