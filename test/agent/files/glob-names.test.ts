import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Repository } from '../../../agent/core/repository.ts';
import { PathMatcher } from '../../../agent/files/glob.ts';
import { tempDir, initSmallRepo, fileRepo, backupDir, restoreTo } from '../../helpers/repo.ts';

/** --include and --exclude over the names issue 20 made ordinary: newlines, spaces, names that are not UTF-8. */
describe('patterns over awkward names', () => {
  it('** crosses directories whose names hold a newline, and matches such names', () => {
    assert.ok(new PathMatcher(['**/secret']).matches('line\nbreak/secret'));
    assert.ok(new PathMatcher(['data/**']).matches('data/a\nb/c'));
    assert.ok(new PathMatcher(['/top/**/x']).matches('top/one\ntwo/three/x'));
    assert.ok(new PathMatcher(['*']).matches('a\nb'));
    assert.ok(new PathMatcher(['a?b']).matches('a\nb'));
  });

  it('a pattern is taken as written: leading and trailing spaces are part of the names it matches', () => {
    const padded = new PathMatcher([' padded ']);
    assert.ok(padded.matches(' padded '));
    assert.ok(!padded.matches('padded'), 'a name without the spaces is another name');
    assert.ok(new PathMatcher([' ']).matches(' '), 'a name of one space can be matched');
    assert.ok(new PathMatcher(['']).empty, 'an empty pattern is no pattern');
  });

  it('a name that is not UTF-8 is matched by its display form (U+FFFD for each invalid sequence), as the format document says', () => {
    const m = new PathMatcher(['n\ufffd']);
    assert.ok(m.matches(Buffer.from([0x6e, 0xff]).toString('utf8')));
    assert.ok(m.matches(Buffer.from([0x6e, 0xfe]).toString('utf8')), 'every name with that display form');
  });

  describe('through a backup and a restore', () => {
    let work: Awaited<ReturnType<typeof tempDir>>;
    let repo: Repository;
    before(async () => {
      work = await tempDir('glob-names');
      repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
    });
    after(async () => {
      await work.remove();
    });

    it('--exclude **/secret leaves out a secret under a directory whose name holds a newline; --include reaches it', async () => {
      const src = join(work.path, 'src');
      await mkdir(join(src, 'line\nbreak'), { recursive: true });
      await writeFile(join(src, 'line\nbreak', 'secret'), 'do not store\n');
      await writeFile(join(src, 'line\nbreak', 'kept'), 'store\n');
      const excluded = await backupDir(repo, src, { excludes: ['**/secret'] });
      const target = join(work.path, 'excluded');
      await restoreTo(repo, excluded.id, target);
      assert.deepEqual(await readdir(join(target, 'line\nbreak')), ['kept']);

      const all = await backupDir(repo, src);
      const only = join(work.path, 'included');
      await restoreTo(repo, all.id, only, { includes: ['**/secret'] });
      assert.deepEqual(await readdir(join(only, 'line\nbreak')), ['secret']);
    });
  });
});
