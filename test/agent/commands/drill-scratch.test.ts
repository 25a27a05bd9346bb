import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { chmod, chown, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { makeScratch, removeKilledScratch, removeScratch } from '../../../agent/commands/drill-scratch.ts';
import { tempDir } from '../../helpers/repo.ts';

const OWNER = '.cairn-drill-owner';
const SWAPPER = fileURLToPath(new URL('./link-swapper.mjs', import.meta.url));

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

  it('is left, with a warning, while a process still works in it (a server that outlived its drill), and removed once it ends', async () => {
    const parent = join(work.path, 'in-use');
    await mkdir(parent);
    const dir = join(parent, 'cairn-drill-in-use');
    await mkdir(join(dir, 'data'), { recursive: true });
    await writeFile(join(dir, OWNER), owner(deadPid(), ourStartTime()));
    // Its data directory in its command line, as a private server's.
    const server = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1 << 30)', join(dir, 'data')], { stdio: 'ignore' });
    await once(server, 'spawn');
    const warnings: string[] = [];
    assert.deepEqual(await removeKilledScratch(parent, (message) => warnings.push(message)), []);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0] as string, new RegExp(`process ${server.pid} \\(node\\) still uses it`));
    const exit = once(server, 'exit');
    server.kill('SIGKILL');
    await exit;
    assert.deepEqual(await removeKilledScratch(parent, () => undefined), [dir]);
  });

  it('is removed without following a link swapped in for one of its directories while it is removed', { timeout: 120_000 }, async () => {
    const victim = join(work.path, 'victim');
    await mkdir(victim);
    for (let i = 0; i < 300; i++) await writeFile(join(victim, `keep-${i}`), 'not the drill’s');
    for (let round = 0; round < 10; round++) {
      const dir = join(work.path, `swapped-${round}`);
      await mkdir(join(dir, 'data', 'd'), { recursive: true });
      for (let i = 0; i < 300; i++) await writeFile(join(dir, 'data', 'd', `f-${i}`), 'x');
      await symlink(victim, join(dir, 'data', 'l'));
      const swapper = spawn(process.execPath, [SWAPPER, join(dir, 'data')], { stdio: ['ignore', 'pipe', 'inherit'] });
      const ended = once(swapper, 'exit');
      await once(swapper.stdout, 'data');
      // Names that keep changing under it may keep it from finishing (rm then fails): never at the link's target's expense.
      const failed = await removeScratch(dir).then(
        () => false,
        () => true,
      );
      swapper.kill('SIGKILL');
      await ended;
      assert.equal((await readdir(victim)).length, 300, `round ${round}: the link's target lost files`);
      if (failed) await removeScratch(dir);
      assert.equal(existsSync(dir), false);
    }
  });

  it(
    'is removed when the drill left read-only directories in it (restored from a snapshot) and is not root',
    { skip: process.getuid?.() !== 0 ? 'needs root to run the removal as another user' : false },
    async () => {
      // The drill's user owns the scratch parent, the scratch directory and all in it, as when a drill is not run as root.
      const parent = join(work.path, 'not-root');
      const dir = join(parent, 'cairn-drill-read-only');
      await mkdir(join(dir, 'files', 'ro'), { recursive: true });
      await writeFile(join(dir, 'files', 'ro', 'f'), 'restored');
      await chmod(join(dir, 'files', 'ro'), 0o555);
      spawnSync('chown', ['-R', 'nobody:', parent]);
      await chmod(work.path, 0o711);
      const script = `import { removeScratch } from ${JSON.stringify(new URL('../../../agent/commands/drill-scratch.ts', import.meta.url).href)}; await removeScratch(${JSON.stringify(dir)});`;
      const result = spawnSync(
        'setpriv',
        ['--reuid=nobody', '--regid=nogroup', '--clear-groups', '--', process.execPath, '--input-type=module', '-e', script],
        { encoding: 'utf8' },
      );
      assert.equal(result.status, 0, result.stderr);
      assert.equal(existsSync(dir), false);
    },
  );

  it(
    'made in another pid namespace whose /proc is not its own records no place, and is never taken for a killed drill’s',
    { skip: process.getuid?.() !== 0 ? 'unshare --pid needs root' : false },
    async () => {
      const parent = join(work.path, 'namespaced');
      await mkdir(parent);
      const script = `import { makeScratch } from ${JSON.stringify(new URL('../../../agent/commands/drill-scratch.ts', import.meta.url).href)}; process.stdout.write(await makeScratch(${JSON.stringify(parent)}, 0o700));`;
      const result = spawnSync('unshare', ['--pid', '--fork', '--', process.execPath, '--input-type=module', '-e', script], {
        encoding: 'utf8',
      });
      assert.equal(result.status, 0, result.stderr);
      // Its pid there is 1; our /proc's pid 1 is another process entirely.
      assert.match(await readFile(join(result.stdout, OWNER), 'latin1'), /^1 \d+ \n$/);
      assert.deepEqual(await removeKilledScratch(parent, () => undefined), []);
      assert.equal(existsSync(result.stdout), true);
    },
  );

  it('made by makeScratch names this process, and is not removed while it runs', async () => {
    const parent = join(work.path, 'made');
    await mkdir(parent);
    const dir = await makeScratch(parent, 0o700);
    assert.equal(await readFile(join(dir, OWNER), 'latin1'), owner(process.pid, ourStartTime()));
    assert.deepEqual(await removeKilledScratch(parent, () => undefined), []);
    assert.deepEqual(await readdir(parent), [dir.slice(parent.length + 1)]);
  });
});
