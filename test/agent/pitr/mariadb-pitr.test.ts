import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { chmod, mkdir, readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CAIRN_BIN, runCli, lastOfType, type CliResult } from '../../helpers/cli.ts';
import { missingMariadb, serverClockPast, startMariadb, type MariadbServer } from '../../helpers/mariadb.ts';
import { processesMentioning } from '../../helpers/processes.ts';
import { PASSPHRASE, tempDir } from '../../helpers/repo.ts';

const skip =
  missingMariadb() ??
  (['mariabackup', 'mariadb-binlog'].every((b) => spawnSync('sh', ['-c', `command -v ${b}`]).status === 0)
    ? undefined
    : 'needs mariabackup and mariadb-binlog: apt-get install mariadb-backup mariadb-client');
const asRoot = process.getuid?.() === 0;
const STREAM = 'mariadb-default';

interface Round {
  /** The table's rows once the round committed, and the server's GTID position then. */
  rows: string;
  gtid: string;
  /** A moment after the round's commits and before the next round's, which are logged in a later whole second (binlog times have whole seconds). */
  after: string;
}

const rowsOf = (server: MariadbServer): string => server.sql('SELECT id, round, note FROM shop.orders ORDER BY id');

/** One round of the workload: inserts, an update and a delete, each its own transaction, and one multi-statement transaction. */
function round(server: MariadbServer, n: number): void {
  server.sql(
    `INSERT INTO shop.orders VALUES (${n * 100 + 1}, ${n}, 'first of ${n}');
     BEGIN; INSERT INTO shop.orders VALUES (${n * 100 + 2}, ${n}, 'second of ${n}'); INSERT INTO shop.orders VALUES (${n * 100 + 3}, ${n}, 'third of ${n}'); COMMIT;
     UPDATE shop.orders SET note = CONCAT(note, ' touched by ${n}') WHERE round = ${n - 1};
     DELETE FROM shop.orders WHERE id = ${(n - 1) * 100 + 3};`,
  );
}

async function timedRound(server: MariadbServer, n: number, flush = true): Promise<Round> {
  round(server, n);
  const done: Round = { rows: rowsOf(server), gtid: server.sql('SELECT @@gtid_binlog_pos').trim(), after: new Date().toISOString() };
  if (flush) server.sql('FLUSH BINARY LOGS');
  await serverClockPast(server, done.after);
  return done;
}

/** Every object of the stream's files/ in the file repository, with a hash of its stored bytes. */
async function archivedObjects(repoPath: string): Promise<Map<string, string>> {
  const dir = join(repoPath, 'logs', STREAM, 'files');
  const out = new Map<string, string>();
  for (const name of await readdir(dir))
    out.set(
      name,
      createHash('sha256')
        .update(await readFile(join(dir, name)))
        .digest('hex'),
    );
  return out;
}

describe(
  'MariaDB point-in-time recovery: binlog-push, restore --to-time/--to-gtid/--to-position, gaps, renumbered binlogs',
  { skip },
  () => {
    let work: Awaited<ReturnType<typeof tempDir>>;
    let env: Record<string, string>;
    let repoPath: string;
    let server: MariadbServer | undefined;
    const running: MariadbServer[] = [];
    let follower: ChildProcess | undefined;
    const conn = (s: MariadbServer): string[] => ['--db-host', '127.0.0.1', '--db-port', String(s.port), '--db-user', s.user];
    let targets = 0;

    before(async () => {
      work = await tempDir('mariadb-pitr');
      // The restored datadirs below it belong to mysql, whose server must reach them.
      if (asRoot) await chmod(work.path, 0o711);
      repoPath = join(work.path, 'repo');
      const spool = join(work.path, 'spool');
      await mkdir(spool, { mode: 0o700 });
      server = await startMariadb({ maxBinlogSize: 4096 });
      running.push(server);
      env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE, CAIRN_DB_PASSWORD: server.password, CAIRN_SPOOL_DIR: spool };
      assert.equal((await runCli(['init'], env)).code, 0);
    });
    after(async () => {
      follower?.kill('SIGKILL');
      for (const s of running) await s.stop();
      await work?.remove();
    });

    /** restore --to-*, then a server on the restored datadir: its rows and GTID position. */
    async function restoreTo(
      args: string[],
      owner: 'mysql' | undefined = 'mysql',
    ): Promise<{ result: CliResult; rows?: string; gtid?: string }> {
      const target = join(work.path, `restored-${++targets}`);
      const result = await runCli(['restore', ...args, '--target', target, ...(asRoot && owner ? ['--owner', owner] : [])], env);
      if (result.code !== 0) return { result };
      if (asRoot) {
        // The replay's server runs as mysql either way; without --owner the datadir stays as the restore left it (root's).
        const uid = owner ? Number(spawnSync('id', ['-u', owner], { encoding: 'utf8' }).stdout.trim()) : 0;
        for (const path of [target, join(target, 'mariadb-bin.000001'), join(target, 'ibdata1')])
          assert.equal((await stat(path)).uid, uid, `${path} belongs to ${owner ?? 'root'}`);
      }
      const copy = await startMariadb({ datadir: target });
      try {
        return { result, rows: rowsOf(copy), gtid: copy.sql('SELECT @@gtid_binlog_pos').trim() };
      } finally {
        await copy.stop();
        await rm(target, { recursive: true, force: true });
      }
    }

    it("replays to times between rounds and to a GTID; a removed binlog is a gap that refuses restores past it but not before it; a restored server's renumbered binlogs archive beside the old ones", async () => {
      const s1 = server as MariadbServer;
      s1.sql('CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, round INT, note VARCHAR(200)) ENGINE=InnoDB');
      s1.sql("INSERT INTO shop.orders VALUES (3, 0, 'before the base'), (1, 0, 'base row')");
      const base = await runCli(['backup', '--engine', 'mariadb', ...conn(s1)], env);
      assert.equal(base.code, 0, base.stderr);
      const baseId = String(lastOfType(base, 'summary')?.snapshotId);
      const baseRows = rowsOf(s1);
      const rounds: Round[] = [];
      for (let n = 1; n <= 4; n++) rounds.push(await timedRound(s1, n));
      const [r1, r2, r3] = rounds as [Round, Round, Round, Round];

      const push = await runCli(['binlog-push', ...conn(s1)], env);
      assert.equal(push.code, 0, push.stderr);
      const pushed = push.lines.filter((l) => l.type === 'binlog-push');
      assert.ok(pushed.length >= 4, `one file per round at least (${pushed.length})`);

      // A plan first: the base, and the files up to the one holding round 3.
      const plan = await runCli(['restore', '--to-time', r2.after, '--dry-run'], env);
      assert.equal(plan.code, 0, plan.stderr);
      const planned = lastOfType(plan, 'pitr-plan') as { snapshot: { id: string }; logRange: { stream: string; files: number } };
      assert.equal(planned.snapshot.id, baseId);
      assert.equal(planned.logRange.stream, STREAM);
      assert.ok(
        planned.logRange.files >= 3 && planned.logRange.files < pushed.length,
        `up to the file that holds round 3 (${planned.logRange.files} of ${pushed.length})`,
      );

      const toR2 = await restoreTo(['--to-time', r2.after]);
      assert.equal(toR2.result.code, 0, toR2.result.stderr);
      assert.equal(toR2.rows, r2.rows, 'exactly the rows committed before the time');
      assert.notEqual(r2.rows, baseRows);
      assert.equal(toR2.gtid, r2.gtid, 'the replayed transactions keep their GTIDs');
      assert.match(String(lastOfType(toR2.result, 'summary')?.replay), /replayed 8 transaction\(s\)/, 'two rounds of four transactions');

      const gtidOfR3 = r3.gtid;
      const toGtid = await restoreTo(['--to-gtid', gtidOfR3], undefined);
      assert.equal(toGtid.result.code, 0, toGtid.result.stderr);
      assert.equal(toGtid.rows, r3.rows, 'up to and including the GTID');
      assert.equal(toGtid.gtid, gtidOfR3);

      const r3File = pushed.find(
        (l) => Number(l.transactions) > 0 && String(l.lastEventTime) > r2.after && String(l.lastEventTime) <= r3.after,
      );
      assert.ok(r3File, 'round 3 has its own file');
      // FILE:POS: every transaction that starts before it; the file of round 3 from its start is round 2's end.
      const toPosition = await restoreTo(['--to-position', `${String(r3File.name)}:4`]);
      assert.equal(toPosition.result.code, 0, toPosition.result.stderr);
      assert.equal(toPosition.rows, r2.rows);
      assert.equal(toPosition.gtid, r2.gtid);

      // Remove round 3's binlog from the repository, and from the server so no push brings it back.
      await rm(join(repoPath, 'logs', STREAM, 'files', String(r3File.key)));
      const files = s1
        .sql('SHOW BINARY LOGS')
        .trim()
        .split('\n')
        .map((l) => l.split('\t')[0] as string);
      s1.sql(`PURGE BINARY LOGS TO '${files.at(-1) as string}'`);
      const status = await runCli(['pitr', 'status', '--json'], env);
      assert.equal(status.code, 0, status.stderr);
      const report = (
        lastOfType(status, 'pitr-status')?.streams as Array<{
          stream: string;
          gaps: Array<{ missing: string; cause: string; after: string | null }>;
        }>
      ).find((st) => st.stream === STREAM);
      assert.equal(report?.gaps.length, 1, JSON.stringify(report?.gaps));
      assert.match(report?.gaps[0]?.missing ?? '', new RegExp(String(r3File.name).replace('.', '\\.')));
      assert.match(report?.gaps[0]?.cause ?? '', /no longer in the repository/);
      const refused = await restoreTo(['--to-time', r3.after]);
      assert.equal(refused.result.code, 13, refused.result.stderr);
      assert.match(refused.result.stderr, new RegExp(`gap.*${String(r3File.name).replace('.', '\\.')}`));
      const toR1 = await restoreTo(['--to-time', r1.after]);
      assert.equal(toR1.result.code, 0, toR1.result.stderr);
      assert.equal(toR1.rows, r1.rows, 'a restore before the gap still works');
      assert.equal(toR1.gtid, r1.gtid);

      // Killed during its replay, a point-in-time restore leaves a datadir the server refuses: the grant
      // table goes into place only after the replay (the base alone would start, without round 1).
      const killedDir = join(work.path, 'killed-in-replay');
      const child = spawn(
        process.execPath,
        [CAIRN_BIN, 'restore', '--to-time', r1.after, '--target', killedDir, ...(asRoot ? ['--owner', 'mysql'] : [])],
        { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] },
      );
      const exited = new Promise((resolve) => child.once('exit', resolve));
      let stderr = '';
      await new Promise<void>((resolve) => {
        child.stderr?.on('data', (chunk: Buffer) => {
          stderr += chunk.toString();
          // The replayer's own line: the base is restored and prepared, the replay starts.
          if (/replaying \d+ transaction/.test(stderr)) resolve();
        });
        void exited.then(() => resolve());
      });
      assert.match(stderr, /replaying \d+ transaction/, 'the replay started');
      child.kill('SIGKILL');
      await exited;
      for (const server of processesMentioning(`--datadir=${killedDir}`)) process.kill(server.pid, 'SIGKILL');
      assert.ok(existsSync(join(killedDir, 'ibdata1')), 'the base was restored');
      assert.ok(!existsSync(join(killedDir, 'mysql', 'global_priv.frm')), 'the grant table is not in place');
      await assert.rejects(startMariadb({ datadir: killedDir }), /Can't open and lock privilege tables/);
      await rm(killedDir, { recursive: true, force: true });

      // The server is replaced by a copy restored from the base snapshot: its binlogs start again at .000001.
      const before = await archivedObjects(repoPath);
      await s1.stop();
      running.splice(running.indexOf(s1), 1);
      const datadir = join(work.path, 'second-server');
      const restored = await runCli(['restore', baseId, '--target', datadir], env);
      assert.equal(restored.code, 0, restored.stderr);
      const s2 = await startMariadb({ datadir, maxBinlogSize: 4096 });
      running.push(s2);
      assert.equal(rowsOf(s2), baseRows);
      assert.equal(s2.sql('SHOW BINARY LOGS').trim().split('\n')[0]?.split('\t')[0], 'mariadb-bin.000001', 'numbering starts again');
      follower = spawn(process.execPath, [CAIRN_BIN, 'binlog-push', '--follow', ...conn(s2)], {
        env: { PATH: process.env.PATH ?? '', CAIRN_JSON: '1', ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let followOut = '';
      let followErr = '';
      follower.stdout?.on('data', (d: Buffer) => (followOut += d.toString()));
      follower.stderr?.on('data', (d: Buffer) => (followErr += d.toString()));
      const followExit = new Promise<number | null>((resolve) => follower?.on('close', (code) => resolve(code)));
      const secondBase = await runCli(['backup', '--engine', 'mariadb', ...conn(s2)], env);
      assert.equal(secondBase.code, 0, secondBase.stderr);
      const r6 = await timedRound(s2, 6);
      const r7 = await timedRound(s2, 7);
      const lastClosed = s2.sql('SHOW BINARY LOGS').trim().split('\n').at(-2)?.split('\t')[0] as string;
      for (let i = 0; i < 200 && !followOut.includes(`"name":"${lastClosed}"`); i++) await sleep(100);
      assert.ok(
        followOut.includes(`"name":"${lastClosed}"`),
        `--follow archived ${lastClosed}: ${followOut.slice(-1500)} ${followErr.slice(-1500)}`,
      );
      follower.kill('SIGTERM');
      assert.equal(await followExit, 0, followErr);
      follower = undefined;

      // SIGKILLed, --follow has no chance to stop its `mariadb-binlog --stop-never`: the kernel ends it (pdeathsig).
      const killed = spawn(process.execPath, [CAIRN_BIN, 'binlog-push', '--follow', ...conn(s2)], {
        env: { PATH: process.env.PATH ?? '', CAIRN_JSON: '1', ...env },
        stdio: 'ignore',
      });
      follower = killed;
      const streamOf = (parent: number): number | undefined => {
        for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
          const stat = (() => {
            try {
              return readFileSync(`/proc/${pid}/stat`, 'latin1');
            } catch {
              return '';
            }
          })();
          const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
          if (stat.includes('(mariadb-binlog)') && Number(fields[1]) === parent) return Number(pid);
        }
        return undefined;
      };
      let client: number | undefined;
      for (let i = 0; i < 300 && client === undefined; i++) {
        client = streamOf(killed.pid as number);
        if (client === undefined) await sleep(100);
      }
      assert.ok(client !== undefined, 'the follower streams through mariadb-binlog');
      killed.kill('SIGKILL');
      follower = undefined;
      let gone = false;
      for (let i = 0; i < 100 && !gone; i++) {
        gone = !existsSync(`/proc/${client}`) || readFileSync(`/proc/${client}/stat`, 'latin1').includes(') Z ');
        if (!gone) await sleep(100);
      }
      if (!gone) process.kill(client, 'SIGKILL');
      assert.ok(gone, 'mariadb-binlog ended with the SIGKILLed cairn, not left streaming for no one');

      const afterRenumbering = await archivedObjects(repoPath);
      for (const [key, hash] of before) assert.equal(afterRenumbering.get(key), hash, `${key} is untouched`);
      const renumbered = [...afterRenumbering.keys()].filter((k) => !before.has(k));
      assert.ok(
        renumbered.some((k) => k.endsWith('-1-mariadb-bin.000001')) &&
          before.size > 0 &&
          [...before.keys()].some((k) => k.endsWith('-1-mariadb-bin.000001')),
        `two files named mariadb-bin.000001, each under its own key: ${renumbered.join(', ')}`,
      );

      const toR6 = await restoreTo(['--to-time', r6.after]);
      assert.equal(toR6.result.code, 0, toR6.result.stderr);
      assert.equal(toR6.rows, r6.rows, 'a restore to a time after the renumbering replays the new line from the new base');
      assert.notEqual(r6.rows, r7.rows);
      assert.equal(toR6.gtid, r6.gtid);
    });
  },
);
