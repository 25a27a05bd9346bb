import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chown, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeScratch, removeKilledScratch } from '../../../agent/commands/drill-scratch.ts';
import { tempDir } from '../../helpers/repo.ts';

const OWNER = '.cairn-drill-owner';

/** A pid that ran and is gone: a child that exited (and was reaped). */
function deadPid(): number {
  const child = spawnSync('sh', ['-c', 'echo $$']);
  return Number(child.stdout.toString().trim());
}

function ourStartTime(): string {
  const stat = readFileSync('/proc/self/stat', 'latin1');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] as string;
}

describe("a killed drill's scratch directory", () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('drill-scratch');
  });
  after(async () => {
    await work.remove();
  });

  it('is removed by the next drill only when its owner is gone: not a running one, not an unmarked one, not another user’s, not through a link', async () => {
    const parent = join(work.path, 'parent');
    await mkdir(parent);
    const scratch = async (name: string, owner: string | undefined): Promise<string> => {
      const dir = join(parent, name);
      await mkdir(dir);
      await writeFile(join(dir, 'restored'), 'a copy of the snapshot');
      if (owner !== undefined) await writeFile(join(dir, OWNER), owner);
      return dir;
    };
    const dead = await scratch('cairn-drill-dead', `${deadPid()} ${ourStartTime()}\n`);
    const reused = await scratch('cairn-drill-reused', `${process.pid} 1\n`);
    await scratch('cairn-drill-running', `${process.pid} ${ourStartTime()}\n`);
    await scratch('cairn-drill-unmarked', undefined);
    await scratch('cairn-drill-garbled', 'not a pid\n');
    await scratch('other-dead', `${deadPid()} ${ourStartTime()}\n`);
    // A link named like a scratch directory, to a directory a killed drill would have owned.
    const elsewhere = join(work.path, 'elsewhere');
    await mkdir(elsewhere);
    await writeFile(join(elsewhere, OWNER), `${deadPid()} ${ourStartTime()}\n`);
    await symlink(elsewhere, join(parent, 'cairn-drill-link'));
    const foreign = process.getuid?.() === 0 ? await scratch('cairn-drill-foreign', `${deadPid()} ${ourStartTime()}\n`) : undefined;
    if (foreign) await chown(foreign, 65534, 65534);

    const warnings: string[] = [];
    const removed = await removeKilledScratch(parent, (message) => warnings.push(message));
    assert.deepEqual(removed.sort(), [dead, reused].sort());
    assert.deepEqual(warnings, []);
    const expected = ['cairn-drill-garbled', 'cairn-drill-link', 'cairn-drill-running', 'cairn-drill-unmarked', 'other-dead'];
    if (foreign) expected.push('cairn-drill-foreign');
    assert.deepEqual((await readdir(parent)).sort(), expected.sort());
    assert.deepEqual(await readdir(elsewhere), [OWNER], 'the link was not followed');
  });

  it('made by makeScratch names this process, and is not removed while it runs', async () => {
    const parent = join(work.path, 'made');
    await mkdir(parent);
    const dir = await makeScratch(parent, 0o700);
    assert.equal(await readFile(join(dir, OWNER), 'latin1'), `${process.pid} ${ourStartTime()}\n`);
    assert.deepEqual(await removeKilledScratch(parent, () => undefined), []);
    assert.deepEqual(await readdir(parent), [dir.slice(parent.length + 1)]);
  });
});
