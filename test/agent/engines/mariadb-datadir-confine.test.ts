import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { confineDatadir } from '../../../agent/engines/mariabackup-drill.ts';
import { tempDir } from '../../helpers/repo.ts';

/**
 * The physical MariaDB drill's check before `mariabackup --prepare` (issue 18), on real files:
 * a symbolic link or an InnoDB `.isl` file leading outside the drill's scratch directory is
 * refused, naming it, whether it is absolute, relative, climbs out through `..`, or dangles;
 * ones that stay inside pass. (The `.isl` a real DATA DIRECTORY table leaves is drilled against
 * a live server in mariadb-drill.test.ts.)
 */
describe('a restored MariaDB datadir is confined to the drill scratch directory', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let scratch: string;
  let datadir: string;
  const production = (): string => join(work.path, 'production');
  before(async () => {
    work = await tempDir('mariadb-confine');
    scratch = join(work.path, 'scratch');
    datadir = join(scratch, 'data');
    await mkdir(join(datadir, 'shop'), { recursive: true });
    await mkdir(join(production(), 'shop'), { recursive: true });
    await writeFile(join(production(), 'shop', 'orders.ibd'), 'production tablespace');
  });
  after(async () => work?.remove());

  it('passes links and .isl files that stay inside scratch', async () => {
    await writeFile(join(scratch, 'inside.ibd'), 'scratch');
    await symlink('../../inside.ibd', join(datadir, 'shop', 'inside-link.ibd'));
    await writeFile(join(datadir, 'shop', 'inside.isl'), `${join(scratch, 'inside.ibd')}\n`);
    await confineDatadir(datadir, scratch);
  });

  for (const [what, make, named] of [
    [
      'an absolute symlink',
      (d: string) => symlink(join(production(), 'shop', 'orders.ibd'), join(d, 'shop', 'orders.ibd')),
      'shop/orders.ibd',
    ],
    ['a relative symlink climbing out', (d: string) => symlink('../../production/shop', join(d, 'linked')), 'linked'],
    ['a dangling symlink outside', (d: string) => symlink(join(production(), 'not-yet', 'x.ibd'), join(d, 'shop', 'x.ibd')), 'shop/x.ibd'],
    [
      'an .isl naming a production tablespace',
      (d: string) => writeFile(join(d, 'shop', 'orders.isl'), join(production(), 'shop', 'orders.ibd')),
      'shop/orders.isl',
    ],
    [
      'a relative .isl climbing out',
      (d: string) => writeFile(join(d, 'shop', 'rel.isl'), '../../production/shop/orders.ibd\n'),
      'shop/rel.isl',
    ],
  ] as const) {
    it(`refuses ${what}, naming it`, async () => {
      const dir = join(scratch, `data-${named.replace(/\W/g, '-')}`);
      await mkdir(join(dir, 'shop'), { recursive: true });
      await make(dir);
      await assert.rejects(confineDatadir(dir, scratch), (error: Error & { code?: string }) => {
        assert.equal(error.code, 'Cairn.Usage');
        assert.ok(error.message.includes(`${named} -> ${production()}`), error.message);
        assert.match(error.message, /refuses/);
        return true;
      });
    });
  }
});
