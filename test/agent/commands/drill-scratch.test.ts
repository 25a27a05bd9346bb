import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
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

const BOOT = readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim();

/** OWNER's text: a pid and start time, of this boot and pid namespace unless `where` says otherwise. */
function owner(pid: number, start: string, where = `${BOOT} ${readlinkSync('/proc/self/ns/pid')}`): string {
  return `${pid} ${start} ${where}\n`;
}

describe("a killed drill's scratch directory", () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('drill-scratch');
  });
  after(async () => {
    await work.remove();
  });

  it('is removed by the next drill only when its owner is gone here: not a running one, another namespace’s or boot’s, an unmarked one, another user’s, through a link, or with an OWNER that is no small regular file', async () => {
    const parent = join(work.path, 'parent');
    await mkdir(parent);
    const scratch = async (name: string, owner: string | undefined): Promise<string> => {
      const dir = join(parent, name);
      await mkdir(dir);
      await writeFile(join(dir, 'restored'), 'a copy of the snapshot');
      if (owner !== undefined) await writeFile(join(dir, OWNER), owner);
      return dir;
    };
    const dead = await scratch('cairn-drill-dead', owner(deadPid(), ourStartTime()));
    const reused = await scratch('cairn-drill-reused', owner(process.pid, '1'));
    await scratch('cairn-drill-running', owner(process.pid, ourStartTime()));
    // A pid of another pid namespace (a container sharing the directory) or another boot (a host sharing it) says nothing here.
    await scratch('cairn-drill-other-namespace', owner(deadPid(), ourStartTime(), `${BOOT} pid:[1]`));
    await scratch(
      'cairn-drill-other-boot',
      owner(deadPid(), ourStartTime(), `00000000-0000-0000-0000-000000000000 ${readlinkSync('/proc/self/ns/pid')}`),
    );
    await scratch('cairn-drill-old-format', `${deadPid()} ${ourStartTime()}\n`);
    // An OWNER that is not a small regular file: a FIFO (reading it would wait forever), a link, a large file.
    const fifo = await scratch('cairn-drill-fifo', undefined);
    spawnSync('mkfifo', [join(fifo, OWNER)]);
    const linked = await scratch('cairn-drill-linked-owner', undefined);
    await writeFile(join(work.path, 'dead-owner'), owner(deadPid(), ourStartTime()));
    await symlink(join(work.path, 'dead-owner'), join(linked, OWNER));
    await scratch('cairn-drill-large-owner', owner(deadPid(), ourStartTime()).padEnd(300, ' '));
    await scratch('cairn-drill-unmarked', undefined);
    await scratch('cairn-drill-garbled', 'not a pid\n');
    await scratch('other-dead', owner(deadPid(), ourStartTime()));
    // A link named like a scratch directory, to a directory a killed drill would have owned.
    const elsewhere = join(work.path, 'elsewhere');
    await mkdir(elsewhere);
    await writeFile(join(elsewhere, OWNER), owner(deadPid(), ourStartTime()));
    await symlink(elsewhere, join(parent, 'cairn-drill-link'));
    const foreign = process.getuid?.() === 0 ? await scratch('cairn-drill-foreign', owner(deadPid(), ourStartTime())) : undefined;
    if (foreign) await chown(foreign, 65534, 65534);

    const warnings: string[] = [];
    const removed = await removeKilledScratch(parent, (message) => warnings.push(message));
    assert.deepEqual(removed.sort(), [dead, reused].sort());
    assert.deepEqual(warnings, []);
    const expected = [
      'cairn-drill-fifo',
      'cairn-drill-garbled',
      'cairn-drill-large-owner',
      'cairn-drill-link',
      'cairn-drill-linked-owner',
      'cairn-drill-old-format',
      'cairn-drill-other-boot',
      'cairn-drill-other-namespace',
      'cairn-drill-running',
      'cairn-drill-unmarked',
      'other-dead',
    ];
    if (foreign) expected.push('cairn-drill-foreign');
    assert.deepEqual((await readdir(parent)).sort(), expected.sort());
    assert.deepEqual(await readdir(elsewhere), [OWNER], 'the link was not followed');
  });

  it('made by makeScratch names this process, and is not removed while it runs', async () => {
    const parent = join(work.path, 'made');
    await mkdir(parent);
    const dir = await makeScratch(parent, 0o700);
    assert.equal(await readFile(join(dir, OWNER), 'latin1'), owner(process.pid, ourStartTime()));
    assert.deepEqual(await removeKilledScratch(parent, () => undefined), []);
    assert.deepEqual(await readdir(parent), [dir.slice(parent.length + 1)]);
  });
});
