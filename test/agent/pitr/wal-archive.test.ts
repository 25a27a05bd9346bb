import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, readdir, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CAIRN_BIN, runCli, type CliResult } from '../../helpers/cli.ts';
import { PASSPHRASE, fileRepo, tempDir } from '../../helpers/repo.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { LogArchive } from '../../../agent/core/log-archive.ts';
import { processAlive as alive } from '../../../agent/core/lock-file.ts';
import { spoolPaths } from '../../../agent/pitr/wal-spool.ts';

const SYSID = '7301234567890123456';
const STREAM = `pg-${SYSID}`;
const SEGMENT = 1 << 20;

/** The CLI run in a directory: archive_command runs in the data directory. */
function cairnIn(cwd: string, args: string[], env: Record<string, string>): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CAIRN_BIN, ...args], {
      cwd,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', CAIRN_JSON: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, lines: [] }));
  });
}

/**
 * Whether a client's connection to the Unix socket at `path` is open on the listening side (Linux's
 * /proc/net/unix lists it under the socket's path, state 03, from the moment the client connects):
 * the daemon has the request, and killing it now interrupts it.
 */
async function connectedTo(path: string): Promise<boolean> {
  const table = await readFile('/proc/net/unix', 'utf8');
  return table.split('\n').some((line) => {
    const fields = line.trim().split(/\s+/);
    return fields[5] === '03' && fields[7] === path;
  });
}

function segmentName(n: number): string {
  return `00000001000000000000${n.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** A data directory as archive_command sees it: global/pg_control with the system identifier, and WAL segments marked ready. */
async function fakeDataDir(path: string): Promise<void> {
  await mkdir(join(path, 'global'), { recursive: true });
  await mkdir(join(path, 'pg_wal', 'archive_status'), { recursive: true });
  const control = randomBytes(512);
  control.writeBigUInt64LE(BigInt(SYSID), 0);
  await writeFile(join(path, 'global', 'pg_control'), control);
}

async function addSegment(dataDir: string, n: number, content = randomBytes(SEGMENT)): Promise<Buffer> {
  await writeFile(join(dataDir, 'pg_wal', segmentName(n)), content);
  await writeFile(join(dataDir, 'pg_wal', 'archive_status', `${segmentName(n)}.ready`), '');
  return content;
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

describe('wal-push and wal-fetch through the WAL daemon', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  let repoPath: string;
  let dataDir: string;
  let restoreDir: string;
  let spool: ReturnType<typeof spoolPaths>;
  const daemonPid = async (): Promise<number> => Number((await readFile(spool.pid, 'utf8')).trim());
  const unwrapCount = async (): Promise<number> =>
    (await readFile(spool.log, 'utf8')).split('\n').filter((l) => l.includes('master key unwrapped')).length;
  const stopDaemons = async (): Promise<void> => {
    const stop = await runCli(['wal-daemon', '--stop'], env);
    assert.equal(stop.code, 0, stop.stderr);
  };
  /** As PostgreSQL's archiver does: on success the segment's .ready becomes .done. */
  const push = async (n: number, extra: Record<string, string> = {}): Promise<CliResult> => {
    const result = await cairnIn(dataDir, ['wal-push', `pg_wal/${segmentName(n)}`], { ...env, ...extra });
    const status = join(dataDir, 'pg_wal', 'archive_status', segmentName(n));
    if (result.code === 0) await rename(`${status}.ready`, `${status}.done`).catch(() => undefined);
    return result;
  };
  const fetch = (name: string, dest = 'pg_wal/RECOVERYXLOG', extra: Record<string, string> = {}): Promise<CliResult> =>
    cairnIn(restoreDir, ['wal-fetch', '--stream', STREAM, name, dest], { ...env, ...extra });
  const archived = async (): Promise<string[]> => readdir(join(repoPath, 'logs', STREAM, 'files')).catch(() => []);

  before(async () => {
    work = await tempDir('walarchive');
    repoPath = join(work.path, 'repo');
    dataDir = join(work.path, 'data');
    restoreDir = join(work.path, 'restore');
    await mkdir(join(restoreDir, 'pg_wal'), { recursive: true });
    env = {
      CAIRN_REPOSITORY: repoPath,
      CAIRN_PASSWORD: PASSPHRASE,
      CAIRN_SPOOL_DIR: join(work.path, 'spool'),
      CAIRN_WAL_DAEMON_IDLE: '60',
    };
    assert.equal((await runCli(['init'], env)).code, 0);
    await fakeDataDir(dataDir);
    spool = spoolPaths(join(work.path, 'spool'), repoPath, STREAM);
  });
  after(async () => {
    await runCli(['wal-daemon', '--stop'], env).catch(() => undefined);
    if (!process.env.KEEP) await work?.remove();
  });

  it('archives a segment silently; the same content again is a no-op, different content fails with AlreadyExists and overwrites nothing', async () => {
    const original = await addSegment(dataDir, 1);
    const first = await push(1);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout + first.stderr, '', 'archive_command prints nothing on success');
    const object = join(repoPath, 'logs', STREAM, 'files', segmentName(1));
    const stored = await readFile(object);

    const again = await push(1);
    assert.equal(again.code, 0, again.stderr);
    await stopDaemons();
    const afterRestart = await push(1);
    assert.equal(afterRestart.code, 0, `a new daemon finds the same content archived: ${afterRestart.stderr}`);

    await writeFile(join(dataDir, 'pg_wal', segmentName(1)), randomBytes(SEGMENT));
    const different = await push(1);
    assert.equal(different.code, 17, different.stderr);
    assert.match(different.stderr, /already archived .* with different content; nothing was overwritten/);
    assert.deepEqual(await readFile(object), stored, 'the archived object is untouched');

    const fetched = await fetch(segmentName(1));
    assert.equal(fetched.code, 0, fetched.stderr);
    assert.deepEqual(await readFile(join(restoreDir, 'pg_wal', 'RECOVERYXLOG')), original);
    await writeFile(join(dataDir, 'pg_wal', segmentName(1)), original);
  });

  it('fetching a file that was never archived exits 1 and says nothing', async () => {
    for (const name of ['00000002.history', segmentName(0x99)]) {
      const missing = await fetch(name);
      assert.equal(missing.code, 1);
      assert.equal(missing.stderr, '', 'PostgreSQL probes for files that do not exist: no message');
    }
    const bogus = await fetch('../../etc/passwd');
    // Refused (a usage error), and not as "never archived": wal-fetch's failures exit above 125, which stops PostgreSQL.
    assert.equal(bogus.code, 200, 'a name PostgreSQL never archives is refused');
    assert.match(bogus.stderr, /^cairn: /);
  });

  it('one daemon serves every request: same pid, the key unwrapped once, owner-only spool, socket, pid file and log', async () => {
    await stopDaemons();
    const before = await unwrapCount().catch(() => 0);
    await addSegment(dataDir, 2);
    assert.equal((await push(2)).code, 0);
    const pid = await daemonPid();
    for (const n of [3, 4]) {
      await addSegment(dataDir, n);
      const r = await push(n);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await daemonPid(), pid, 'the same daemon answered');
    }
    assert.equal((await fetch(segmentName(3))).code, 0);
    assert.equal(await daemonPid(), pid);
    assert.equal((await unwrapCount()) - before, 1, 'scrypt ran once for four requests');
    assert.ok(alive(pid));

    assert.equal((await stat(spool.dir)).mode & 0o777, 0o700);
    const socket = await stat(spool.socket);
    assert.ok(socket.isSocket());
    assert.equal(socket.mode & 0o777, 0o600);
    assert.equal((await stat(spool.pid)).mode & 0o777, 0o600);
    assert.equal((await stat(spool.log)).mode & 0o777, 0o600);
  });

  it('refuses a spool directory that others can enter', async () => {
    const open = join(work.path, 'open-spool');
    await mkdir(open, { mode: 0o755 });
    await chmod(open, 0o755);
    const r = await push(2, { CAIRN_SPOOL_DIR: open });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /mode 0700.*mode 755/);
    assert.deepEqual(await readdir(open), [], 'no socket was created there');
  });

  it('uploads the other ready segments ahead, in one record batch, so later pushes are already done', async () => {
    await stopDaemons();
    for (let n = 0x10; n < 0x16; n++) await addSegment(dataDir, n);
    const r = await push(0x10);
    assert.equal(r.code, 0, r.stderr);
    const files = await archived();
    for (let n = 0x10; n < 0x16; n++) assert.ok(files.includes(segmentName(n)), `${segmentName(n)} was stored with the first push`);
    const repo = await Repository.open(fileRepo(repoPath), PASSPHRASE);
    const log = await new LogArchive(repo, STREAM).read();
    const batch = log.batches.find((b) => b.files.includes(segmentName(0x10)));
    assert.ok(batch);
    for (let n = 0x10; n < 0x16; n++)
      assert.ok(batch.files.includes(segmentName(n)), `${segmentName(n)} is in the first push's record batch`);
    const record = log.records.find((x) => x.name === segmentName(0x12));
    assert.equal(record?.kind, 'wal');
    assert.deepEqual(record?.wal, { timeline: 1, segment: 0x12, segmentSize: SEGMENT });
    assert.equal(record?.firstEventTime, null, 'random bytes hold no commit');

    // Already done: the daemon answers from what it stored ahead, uploading nothing and writing no new record batch.
    const uploads = async (): Promise<number> =>
      (await readFile(spool.log, 'utf8')).split('\n').filter((l) => / archived [0-9A-F]{24}$/.test(l)).length;
    await waitFor('the daemon to log the six segments of the first push', async () => {
      const text = await readFile(spool.log, 'utf8');
      return [0x10, 0x11, 0x12, 0x13, 0x14, 0x15].every((n) => text.includes(`archived ${segmentName(n)}`));
    });
    const uploadsBefore = await uploads();
    const next = await push(0x13);
    assert.equal(next.code, 0, next.stderr);
    assert.equal(await uploads(), uploadsBefore, 'the later push uploaded nothing');
    assert.equal((await new LogArchive(repo, STREAM).read()).batches.length, log.batches.length, 'and wrote no record batch');
  });

  it('two clients racing to start the daemon end with one daemon', async () => {
    await stopDaemons();
    const before = await unwrapCount();
    for (let n = 0x20; n < 0x24; n++) await addSegment(dataDir, n);
    const results = await Promise.all([0x20, 0x21, 0x22, 0x23].map((n) => push(n)));
    for (const r of results) assert.equal(r.code, 0, r.stderr);
    assert.equal((await unwrapCount()) - before, 1, 'one daemon opened the repository');
    const status = await runCli(['wal-daemon', '--status', '--json'], env);
    const running = (status.lines.find((l) => l.type === 'wal-daemon') as { running: Array<{ pid: number }> }).running;
    assert.equal(running.length, 1);
    assert.equal(running[0]?.pid, await daemonPid());
  });

  it('a daemon killed mid-upload leaves nothing fetch would return, and the segment is archived on the next push', async () => {
    await stopDaemons();
    const content = await addSegment(dataDir, 0x30);
    // 50 kB/s: the 1 MiB upload takes ~20 s, so the kill lands while it is under way.
    const slow = push(0x30, { CAIRN_LIMIT_UPLOAD: '0.05' });
    await waitFor('the daemon to start', () =>
      stat(spool.pid).then(
        () => true,
        () => false,
      ),
    );
    await waitFor('the daemon to hold the push connection', async () => connectedTo(spool.socket));
    const pid = await daemonPid();
    process.kill(pid, 'SIGKILL');
    const killed = await slow;
    assert.notEqual(killed.code, 0);
    assert.match(killed.stderr, /closed the connection before answering/);
    assert.ok(!(await archived()).includes(segmentName(0x30)), "no object under the segment's key");

    const fetched = await fetch(segmentName(0x30));
    assert.equal(fetched.code, 1, 'fetch finds nothing to return');
    const again = await push(0x30);
    assert.equal(again.code, 0, again.stderr);
    assert.notEqual(await daemonPid(), pid, 'a new daemon took over the stale socket');
    assert.equal((await fetch(segmentName(0x30))).code, 0);
    assert.deepEqual(await readFile(join(restoreDir, 'pg_wal', 'RECOVERYXLOG')), content);
  });

  it('prefetches the next segments after a fetch, serves them from the spool and drops those not asked for', async () => {
    await stopDaemons();
    const contents = new Map<number, Buffer>();
    for (let n = 0x40; n < 0x45; n++) contents.set(n, await addSegment(dataDir, n));
    assert.equal((await push(0x40)).code, 0);
    await stopDaemons();

    assert.equal((await fetch(segmentName(0x40))).code, 0);
    const prefetched = async (): Promise<string[]> =>
      (await readdir(spool.prefetch).catch(() => [] as string[])).filter((f) => !f.endsWith('.tmp')).sort();
    await waitFor('the next four segments in the spool', async () => (await prefetched()).length === 4);
    assert.deepEqual(await prefetched(), [0x41, 0x42, 0x43, 0x44].map(segmentName));

    const second = await fetch(segmentName(0x41));
    assert.equal(second.code, 0);
    assert.deepEqual(await readFile(join(restoreDir, 'pg_wal', 'RECOVERYXLOG')), contents.get(0x41));
    const status = await runCli(['wal-daemon', '--status', '--json'], env);
    const running = (
      status.lines.find((l) => l.type === 'wal-daemon') as { running: Array<{ servedFromPrefetch: number; fetched: number }> }
    ).running[0];
    assert.equal(running?.fetched, 2);
    assert.equal(running?.servedFromPrefetch, 1, 'the second segment came from the spool');

    // Jumping ahead: 0x42 is skipped, so it is dropped; 0x44 stays.
    assert.equal((await fetch(segmentName(0x43))).code, 0);
    assert.deepEqual(await readFile(join(restoreDir, 'pg_wal', 'RECOVERYXLOG')), contents.get(0x43));
    await waitFor('the skipped segment to be dropped', async () => (await prefetched()).join() === segmentName(0x44));
  });

  it('stops when idle and on SIGTERM, removing its socket and pid file', async () => {
    await stopDaemons();
    assert.equal((await fetch(segmentName(0x40), 'pg_wal/RECOVERYXLOG', { CAIRN_WAL_DAEMON_IDLE: '1' })).code, 0);
    const idle = await daemonPid();
    await waitFor('the idle daemon to exit', () => !alive(idle), 10_000);
    await assert.rejects(stat(spool.socket));
    await assert.rejects(stat(spool.pid));

    assert.equal((await fetch(segmentName(0x40))).code, 0);
    const pid = await daemonPid();
    process.kill(pid, 'SIGTERM');
    await waitFor('the daemon to exit on SIGTERM', () => !alive(pid), 10_000);
    await assert.rejects(stat(spool.socket));
    await assert.rejects(stat(spool.pid));
    await assert.rejects(stat(spool.prefetch), 'prefetched WAL is removed');
    assert.match(await readFile(spool.log, 'utf8'), /stopped \(SIGTERM\)/);
  });
});
