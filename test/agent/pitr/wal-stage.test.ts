import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, chown, mkdir, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { stageDirProblem } from '../../../agent/pitr/wal-stage.ts';
import { tempDir } from '../../helpers/repo.ts';
const asRoot = process.getuid?.() === 0;

describe('the WAL staging directory', () => {
  it('is refused by the daemon unless it is a directory cairn restore named, owned by this user and closed to others', async () => {
    const dir = await tempDir('stage');
    try {
      const good = join(dir.path, 'cairn-wal-stage.0123456789abcdef');
      await mkdir(good, { mode: 0o700 });
      assert.equal(await stageDirProblem(good), undefined);
      const open = join(dir.path, 'cairn-wal-stage.1111111111111111');
      await mkdir(open);
      await chmod(open, 0o755);
      assert.match((await stageDirProblem(open)) ?? '', /mode 755/);
      const link = join(dir.path, 'cairn-wal-stage.2222222222222222');
      await symlink(good, link);
      assert.match((await stageDirProblem(link)) ?? '', /not a directory/);
      const other = join(dir.path, 'elsewhere');
      await mkdir(other, { mode: 0o700 });
      assert.match((await stageDirProblem(other)) ?? '', /not a staging directory/);
      assert.match((await stageDirProblem(join(dir.path, 'cairn-wal-stage.3333333333333333'))) ?? '', /does not exist/);
      if (asRoot) {
        const theirs = join(dir.path, 'cairn-wal-stage.4444444444444444');
        await mkdir(theirs, { mode: 0o700 });
        await chown(theirs, 65534, 65534);
        assert.match((await stageDirProblem(theirs)) ?? '', /owned by uid 65534/);
      }
    } finally {
      await dir.remove();
    }
  });
});
