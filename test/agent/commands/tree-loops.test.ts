import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Repository } from '../../../agent/core/repository.ts';
import { MAX_TREE_DEPTH } from '../../../agent/core/tree-walk.ts';
import type { TreeEntry } from '../../../agent/core/tree.ts';
import { runCli, type CliResult } from '../../helpers/cli.ts';
import { PASSPHRASE, backupDir, fileRepo, initSmallRepo, tempDir } from '../../helpers/repo.ts';
import { craftSnapshot, META } from '../files/craft.ts';
import { mkdir, writeFile } from 'node:fs/promises';

/**
 * Crafted trees no backup writes — a directory whose tree is one of its own
 * ancestors (a pack may claim any id for any bytes), and a chain of directories
 * deeper than MAX_TREE_DEPTH — walked by every command that walks trees. Each
 * must fail with exit 14 naming the tree, never hang or overflow the stack; the
 * timeouts turn a regression into a failure instead of a stuck run.
 */
const TIMEOUT = { timeout: 60_000 };

describe('commands over a loop of trees or an absurdly deep one', TIMEOUT, () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  let env: Record<string, string>;
  let honest: string;
  let looped: string;
  let loopTree: string;
  let deep: string;

  before(async () => {
    work = await tempDir('tree-loops');
    const repoPath = join(work.path, 'repo');
    repo = await initSmallRepo(fileRepo(repoPath));
    env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };
    const src = join(work.path, 'src');
    await mkdir(join(src, 'loop'), { recursive: true });
    await writeFile(join(src, 'loop', 'dump.sql'), 'honest\n');
    honest = (await backupDir(repo, src)).id;
    loopTree = randomBytes(32).toString('hex');
    looped = await craftSnapshot(repo, async (_t, f, addTreeAs) => {
      await addTreeAs(Buffer.from(loopTree, 'hex'), [
        { ...f, name: 'dump.sql' },
        { ...META, name: 'loop', type: 'dir', subtree: loopTree },
      ]);
      return [{ ...META, name: 'loop', type: 'dir', subtree: loopTree }];
    });
    // Honest trees (each its content's id), one inside the other, past the depth any walk goes.
    deep = await craftSnapshot(repo, async (addTree, f) => {
      let entries: TreeEntry[] = [{ ...f, name: 'dump.sql' }];
      for (let level = 0; level < MAX_TREE_DEPTH + 5; level++)
        entries = [{ ...META, name: 'd', type: 'dir', subtree: await addTree(entries) }];
      return entries;
    });
  });
  after(async () => {
    await work.remove();
  });

  const damaged = (r: CliResult, what: RegExp): void => {
    assert.equal(r.code, 14, `exit code; stderr: ${r.stderr}`);
    assert.match(r.stderr, what);
  };
  // A loop needs a tree that holds its own keyed id, which no content has: readers that recompute the
  // id refuse the crafted tree as a substitute before the walk could see the loop. Either is exit 14.
  const loop = (): RegExp => new RegExp(`tree ${loopTree} holds itself|piece ${loopTree} are not that piece`);
  const tooDeep = new RegExp(`more than ${MAX_TREE_DEPTH} directories deep`);

  it('ls -R fails with exit 14 naming the tree; a plain ls of the root still lists it', TIMEOUT, async () => {
    damaged(await runCli(['ls', '-R', looped, '/'], env), loop());
    damaged(await runCli(['ls', '-R', deep, '/'], env), tooDeep);
    const plain = await runCli(['ls', looped, '/'], env);
    assert.equal(plain.code, 0, plain.stderr);
    assert.deepEqual(
      plain.lines.filter((l) => l.type === 'entry').map((l) => (l.entry as { path: string }).path),
      ['loop'],
    );
  });

  it('find fails with exit 14 naming the tree', TIMEOUT, async () => {
    damaged(await runCli(['find', '--snapshot', looped, 'dump.sql'], env), loop());
    damaged(await runCli(['find', '--snapshot', deep, 'dump.sql'], env), tooDeep);
    const honestFind = await runCli(['find', '--snapshot', honest, 'dump.sql'], env);
    assert.equal(honestFind.code, 0, honestFind.stderr);
  });

  it('diff fails with exit 14 naming the tree, whichever side the loop is on', TIMEOUT, async () => {
    damaged(await runCli(['diff', honest, looped], env), loop());
    damaged(await runCli(['diff', looped, honest], env), loop());
    damaged(await runCli(['diff', honest, deep], env), tooDeep);
  });

  it('verify and check report the loop and the depth as damage (exit 14), naming the trees', TIMEOUT, async () => {
    for (const command of [['check'], ['verify'], ['verify', '--read-data']]) {
      const r = await runCli(command, env);
      assert.equal(r.code, 14, `${command.join(' ')}: ${r.stderr}`);
      const report = r.lines.find((l) => l.type === 'verify') as { affected: Array<{ snapshot: string; path: string; problem: string }> };
      const of = (id: string): string[] => report.affected.filter((a) => a.snapshot === id).map((a) => a.problem);
      assert.equal(of(looped).length, 1, JSON.stringify(report.affected));
      // Reading the data also finds the forged id itself: a tree whose bytes do not hash to the id it is stored under.
      assert.match(of(looped)[0] ?? '', command.includes('--read-data') ? new RegExp(`piece ${loopTree} does not match its id`) : loop());
      assert.equal(of(deep).length, 1, JSON.stringify(report.affected));
      assert.match(of(deep)[0] ?? '', tooDeep);
      assert.deepEqual(of(honest), []);
    }
  });

  it('copy fails with exit 14 naming the tree and commits nothing of that snapshot', TIMEOUT, async () => {
    const target = join(work.path, 'target');
    const copyEnv = { ...env, CAIRN_TO_PASSWORD: PASSPHRASE };
    damaged(await runCli(['copy', '--to-repo', target, '--to-init', '--snapshot', looped], copyEnv), loop());
    damaged(await runCli(['copy', '--to-repo', target, '--snapshot', deep], copyEnv), tooDeep);
    const listed = await runCli(['snapshots'], { ...env, CAIRN_REPOSITORY: target });
    assert.equal(listed.code, 0, listed.stderr);
    assert.equal(listed.lines.filter((l) => l.type === 'snapshot').length, 0, listed.stdout);
  });

  it('restore fails with exit 14 naming the tree', TIMEOUT, async () => {
    damaged(await runCli(['restore', looped, '--target', join(work.path, 'restored')], env), loop());
  });

  it(
    'forget finishes (it remembers a tree before walking it), prune deletes nothing while a tree fails its check, and the honest snapshot is kept',
    TIMEOUT,
    async () => {
      const forgot = await runCli(['forget', '--keep-last', '10'], env);
      assert.equal(forgot.code, 0, forgot.stderr);
      // GC deletes nothing while a listed snapshot's tree fails its keyed-id check: it cannot know what that snapshot uses.
      damaged(await runCli(['prune'], env), loop());
      const honestLs = await runCli(['ls', '-R', honest, '/'], env);
      assert.equal(honestLs.code, 0, honestLs.stderr);
      damaged(await runCli(['ls', '-R', looped, '/'], env), loop());
    },
  );
});
