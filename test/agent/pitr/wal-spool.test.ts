import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, chown, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { tempDir } from '../../helpers/repo.ts';

const NOBODY = 65534;
const MODULE = new URL('../../../agent/pitr/wal-spool.ts', import.meta.url).href;

/**
 * Where the WAL daemon of a user without CAIRN_SPOOL_DIR keeps its socket: not first at the
 * name <tmp>/cairn-<uid>, which any other user can create before it (every wal-push of the
 * server's user then failed until someone removed it). Run as nobody, as the server's user would run.
 */
describe('the WAL spool directory by default', () => {
  let work: { path: string; remove: () => Promise<void> };
  const planted = join(tmpdir(), `cairn-${NOBODY}`);
  before(async () => {
    assert.equal(process.getuid?.(), 0, 'run as root, to act as two users');
    work = await tempDir('wal-spool');
    await chmod(work.path, 0o755); // nobody must reach the home made in it
    await rm(planted, { recursive: true, force: true });
  });
  after(async () => {
    await rm(planted, { recursive: true, force: true });
    await work.remove();
  });

  /** chooseSpoolDir and ensureSpoolDir as nobody, with this environment; what they chose, or their error. */
  const asNobody = (env: Record<string, string>): { dir?: string; error?: string } => {
    const script = `const { chooseSpoolDir, ensureSpoolDir } = await import(${JSON.stringify(MODULE)});
      try { const dir = await chooseSpoolDir(undefined, process.env); await ensureSpoolDir(dir); process.stdout.write(JSON.stringify({ dir })); }
      catch (error) { process.stdout.write(JSON.stringify({ error: error.message + ' | ' + error.hint })); }`;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      uid: NOBODY,
      gid: NOBODY,
      env: { PATH: process.env.PATH ?? '', ...env },
      encoding: 'utf8',
      cwd: work.path,
    });
    assert.equal(child.status, 0, child.stderr);
    return JSON.parse(child.stdout) as { dir?: string; error?: string };
  };

  it('another user creating <tmp>/cairn-<uid> first no longer stops it: its home is used before <tmp>', async () => {
    const home = join(work.path, 'home');
    await mkdir(home);
    await chown(home, NOBODY, NOBODY);
    // Another user (root here) takes the predictable name first.
    await mkdir(planted, { mode: 0o700 });
    assert.deepEqual(asNobody({ HOME: home }), { dir: join(home, '.cache', 'cairn') });
  });

  it('with no home of its own it falls back to <tmp>/cairn-<uid>, and a name someone else took is named as such', async () => {
    const result = asNobody({ HOME: '/nonexistent' });
    assert.match(result.error ?? '', new RegExp(`${planted} belongs to another user \\(uid 0\\), not to this one \\(uid ${NOBODY}\\)`));
    assert.match(result.error ?? '', /CAIRN_SPOOL_DIR/);
    assert.doesNotMatch(result.error ?? '', /chmod/, 'not told to chmod a directory it does not own');
  });
});
