/**
 * The clock-skew part of the reliability soak (docs/reliability.md, "Clock
 * skew"). Hosts are real `cairn` processes under libfaketime (skewed-cli.ts):
 * one 10 minutes slow, one 10 minutes fast, one on time, sharing a file
 * repository whose clock (file mtimes, set by the kernel) is the true one.
 *
 * 1. Together: each host runs a loop of backup (its own changing tree, one
 *    logical host name, so retention sees one group), forget --keep-last and
 *    prune, all with --lock-wait. Afterwards nothing is lost: every backup that
 *    exited 0 is listed unless a forget's output removed it; every snapshot
 *    listed restores exactly the tree of its attempt (known by its tag); the
 *    snapshot stored last (by the manifests' mtimes) survives every forget;
 *    check and verify
 *    --read-data pass; no operation failed.
 * 2. Dead skewed holders: a backup on a host 10 minutes slow, 10 minutes fast and
 *    a year fast is killed holding its lock; an on-time prune with --lock-wait
 *    must get the exclusive lock within one lease (of storage time) of the dead
 *    holder's last record.
 */
import { watch } from 'node:fs';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Repository } from '../../agent/core/repository.ts';
import { FileStorage } from '../../agent/storage/file.ts';
import { runCli, type CliResult } from '../helpers/cli.ts';
import { SMALL } from '../helpers/repo.ts';
import { describeTree, Random, type Described } from '../helpers/tree.ts';
import { runSkewedCli } from './skewed-cli.ts';
import { ChangingTree, treeDifference } from './soak-tree.ts';

export interface ClockSkewOptions {
  seed: number;
  work: string;
  /** Operations per host in the together phase. */
  rounds: number;
  /** Lease length in seconds (CAIRN_LOCK_LEASE). */
  leaseSeconds: number;
  /** The skews of the dead holders (default -10m, +10m, +1y). */
  deadSkews?: string[];
  log: (line: string) => void;
}

export interface ClockSkewReport {
  seed: number;
  operations: Record<string, Record<string, number>>;
  committed: number;
  forgotten: number;
  restoresCompared: number;
  /** Per dead holder's skew: how long after its last record's storage time the prune got the lock (ms), and the lease. */
  takeovers: Array<{ skew: string; blockedMs: number; leaseMs: number; exit: number | null }>;
  failures: string[];
  seconds: number;
}

const PASSWORD = 'soak clock skew';
const HOSTS = [
  { name: 'slow', skew: '-10m' },
  { name: 'fast', skew: '+10m' },
  { name: 'on-time', skew: '' },
];

export async function runClockSkewCampaign(options: ClockSkewOptions): Promise<ClockSkewReport> {
  const started = Date.now();
  const failures: string[] = [];
  const fail = (message: string): void => {
    failures.push(message);
    options.log(`FAILURE: ${message}`);
  };
  const repoPath = join(options.work, 'repo');
  await Repository.init(new FileStorage(repoPath), PASSWORD, { host: 'soak', user: 'soak' }, SMALL);
  const env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSWORD, CAIRN_LOCK_LEASE: String(options.leaseSeconds), CAIRN_GC_GRACE: '2' };
  const attempts = new Map<string, Described[]>();
  const succeeded = new Map<string, string>(); // snapshot id → attempt tag
  const removed = new Set<string>();
  const operations: Record<string, Record<string, number>> = {};
  // Each manifest's modification time, read by this (unskewed) process as soon as the file appears: the
  // storage's clock. "Newest" is the manifest stored last, not the backup that exited last: overlapping
  // backups exit in another order than they commit, and a forget lists what committed until it starts.
  const storedAt = new Map<string, number>();
  const snapshotsDir = join(repoPath, 'snapshots');
  await mkdir(snapshotsDir, { recursive: true });
  const noteStored = async (id: string): Promise<void> => {
    if (!/^[0-9a-f]{64}$/.test(id) || storedAt.has(id)) return;
    const info = await stat(join(snapshotsDir, id)).catch(() => undefined);
    if (info) storedAt.set(id, info.mtimeMs);
  };
  const snapshotWatcher = watch(snapshotsDir, (_event, name) => {
    if (typeof name === 'string') void noteStored(name);
  });
  let restoresCompared = 0;

  const count = (host: string, operation: string, result: CliResult): void => {
    const table = (operations[host] ??= {});
    const key = `${operation} exit ${result.code ?? result.signal}`;
    table[key] = (table[key] ?? 0) + 1;
  };

  // 1. Together.
  const lockWait = `${Math.max(120, options.leaseSeconds * 8)}s`;
  await Promise.all(
    HOSTS.map(async (host, h) => {
      const rnd = new Random(options.seed * 3 + h);
      const tree = new ChangingTree(join(options.work, `src-${host.name}`), options.seed + h, {
        budget: 2 << 20,
        grow: [200_000, 700_000],
      });
      await tree.create(options.seed + h);
      for (let round = 1; round <= options.rounds; round++) {
        const roll = rnd.int(10);
        if (roll < 6 || round === 1) {
          await tree.change();
          const tag = `attempt-${host.name}-${round}`;
          attempts.set(tag, await tree.describe());
          const result = await runSkewedCli(host.skew, ['--lock-wait', lockWait, 'backup', '--host', 'db', '--tag', tag, tree.root], env);
          count(host.name, 'backup', result);
          const id = result.lines.find((l) => l.type === 'summary')?.snapshotId;
          if (result.code === 0 && typeof id === 'string') {
            succeeded.set(id, tag);
            await noteStored(id);
          } else
            fail(`${host.name} (${host.skew || 'on time'}) backup ${round} exited ${result.code}: ${result.stderr.trim().slice(-400)}`);
        } else if (roll < 8) {
          const result = await runSkewedCli(host.skew, ['--lock-wait', lockWait, 'forget', '--keep-last', '3', '--group-by', 'host'], env);
          count(host.name, 'forget', result);
          // forget prints its decision per group: { type: 'forget', groups: [{ group, keep, remove }] }.
          const line = result.lines.find((l) => l.type === 'forget') as
            { groups?: Array<{ keep?: Array<{ id: string }>; remove?: Array<{ id: string }> }> } | undefined;
          const removedNow = new Set((line?.groups ?? []).flatMap((g) => g.remove ?? []).map((r) => r.id));
          // The newest of what this forget listed, by the storage's clock.
          let newest: string | undefined;
          for (const { id } of (line?.groups ?? []).flatMap((g) => [...(g.keep ?? []), ...(g.remove ?? [])])) {
            const at = storedAt.get(id);
            if (at === undefined) fail(`forget listed snapshot ${id.slice(0, 8)}, whose manifest the campaign never saw stored`);
            else if (newest === undefined || at > (storedAt.get(newest) ?? 0)) newest = id;
          }
          for (const id of removedNow) removed.add(id);
          if (result.code !== 0) fail(`${host.name} forget exited ${result.code}: ${result.stderr.trim().slice(-400)}`);
          // Only this forget's own removals: the newest it could see must not be among them.
          if (newest && removedNow.has(newest))
            fail(
              `${host.name} (${host.skew || 'on time'}) forget --keep-last 3 removed the snapshot stored last ${newest.slice(0, 8)} (${succeeded.get(newest) ?? '?'}); stored at ${new Date(storedAt.get(newest) ?? 0).toISOString()}; it kept ${JSON.stringify((line?.groups ?? []).flatMap((g) => (g as { keep?: Array<{ id: string }> }).keep ?? []).map((k) => `${succeeded.get(k.id) ?? k.id.slice(0, 8)} stored at ${new Date(storedAt.get(k.id) ?? 0).toISOString()}`))}`,
            );
        } else {
          const result = await runSkewedCli(host.skew, ['--lock-wait', lockWait, 'prune'], env);
          count(host.name, 'prune', result);
          if (result.code !== 0) fail(`${host.name} prune exited ${result.code}: ${result.stderr.trim().slice(-400)}`);
        }
        options.log(`${host.name} round ${round}: ${JSON.stringify(operations[host.name])}`);
      }
    }),
  );
  snapshotWatcher.close();

  // Nothing lost, nothing wrong.
  const listing = await runCli(['snapshots'], env);
  const snapshots = ((listing.lines.find((l) => l.type === 'snapshots') as { snapshots?: Array<{ id: string; tags: string[] }> })
    ?.snapshots ?? []) as Array<{ id: string; tags: string[] }>;
  const listed = new Map(snapshots.map((s) => [s.id, s.tags]));
  for (const [id, tag] of succeeded)
    if (!listed.has(id) && !removed.has(id)) fail(`snapshot ${id.slice(0, 8)} (${tag}) was committed and is lost`);
  const restoreDir = join(options.work, 'restore');
  for (const [id, tags] of listed) {
    const tag = tags.find((t) => attempts.has(t));
    if (!tag) {
      fail(`listed snapshot ${id.slice(0, 8)} belongs to no backup attempt (tags ${tags.join(',')})`);
      continue;
    }
    await rm(restoreDir, { recursive: true, force: true });
    const restored = await runCli(['restore', id, '--target', restoreDir], env);
    restoresCompared++;
    if (restored.code !== 0) {
      fail(`restore of ${id.slice(0, 8)} (${tag}) exited ${restored.code}: ${restored.stderr.trim().slice(-400)}`);
      continue;
    }
    const difference = treeDifference(attempts.get(tag) ?? [], await describeTree(restoreDir));
    if (difference) fail(`snapshot ${id.slice(0, 8)} (${tag}) restored wrong: ${difference}`);
  }
  for (const args of [['check'], ['verify', '--read-data']]) {
    const result = await runCli(args, env);
    if (result.code !== 0) fail(`${args.join(' ')} exited ${result.code}: ${result.stdout.slice(-800)}`);
  }

  // 2. Dead skewed holders.
  const takeovers: ClockSkewReport['takeovers'] = [];
  const leaseMs = options.leaseSeconds * 1000;
  const src = join(options.work, 'src-dead');
  const deadTree = new ChangingTree(src, options.seed + 9, { budget: 1 << 20, grow: [100_000, 200_000] });
  await deadTree.create(options.seed + 9);
  for (const skew of options.deadSkews ?? ['-10m', '+10m', '+1y']) {
    await runCli(['unlock', '--all'], env);
    const locks = join(repoPath, 'locks');
    await mkdir(locks, { recursive: true });
    const before = new Set(await readdir(locks));
    const dead = await runSkewedCli(skew, ['backup', '--host', 'dead', src], env, {
      onSpawn: (pid) => {
        // Killed once its lock record is stored: it holds a lease and will never refresh or release it.
        const watcher = watch(locks, () => {
          void readdir(locks).then((names) => {
            if (names.some((n) => !before.has(n) && !n.endsWith('.tmp'))) {
              watcher.close();
              try {
                process.kill(pid, 'SIGKILL');
              } catch {
                // Already gone.
              }
            }
          });
        });
      },
    });
    if (dead.signal !== 'SIGKILL') {
      fail(`the ${skew} backup was not killed holding its lock (exit ${dead.code})`);
      continue;
    }
    let lastRecord = 0;
    for (const name of await readdir(locks))
      if (!before.has(name)) lastRecord = Math.max(lastRecord, (await stat(join(locks, name))).mtimeMs);
    const result = await runSkewedCli('', ['--lock-wait', `${options.leaseSeconds * 4}s`, 'prune'], env);
    const blockedMs = Date.now() - lastRecord;
    takeovers.push({ skew, blockedMs, leaseMs, exit: result.code });
    options.log(
      `dead holder ${skew}: prune exit ${result.code} ${Math.round(blockedMs / 1000)} s after its last record (lease ${options.leaseSeconds} s)`,
    );
    if (result.code !== 0) fail(`after a dead ${skew} holder, prune exited ${result.code}: ${result.stderr.trim().slice(-400)}`);
    // The prune's own run (a few seconds here) is inside this figure, so one lease plus a prune's time is the bound.
    else if (blockedMs > leaseMs + 30_000)
      fail(`a dead ${skew} holder blocked prune for ${Math.round(blockedMs / 1000)} s, beyond one lease (${options.leaseSeconds} s)`);
  }
  await rm(restoreDir, { recursive: true, force: true });
  return {
    seed: options.seed,
    operations,
    committed: succeeded.size,
    forgotten: removed.size,
    restoresCompared,
    takeovers,
    failures,
    seconds: Math.round((Date.now() - started) / 1000),
  };
}
