/**
 * The storage-faults part of the reliability soak (docs/reliability.md,
 * "Storage faults"): backups, restores, forgets, prunes and verifies of a
 * changing tree run against s3rver and the GCS test server through a proxy that
 * fails a random share of requests (chaos-proxy.ts). Every run must end with
 * exit 0 or a documented failure (its error line's code and exit code agree with
 * docs/exit-codes.md, and it is not the catch-all Cairn.Failure); a restore that
 * exits 0 must hold exactly the tree backed up; a snapshot listed must be one a
 * backup made (even one whose backup failed after committing: a lost response);
 * and at the end, with the faults off, every snapshot committed and not
 * forgotten is listed, restores exactly, and `verify --read-data` passes.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Repository } from '../../agent/core/repository.ts';
import { openStorage } from '../../agent/storage/open.ts';
import { runCli, type CliResult } from '../helpers/cli.ts';
import { startFaultProxy } from '../helpers/fault-proxy.ts';
import { startGcsTestServer } from '../helpers/gcs-server.ts';
import { SMALL } from '../helpers/repo.ts';
import { startS3rver, s3rverEnv } from '../helpers/s3rver.ts';
import { describeTree, Random, type Described } from '../helpers/tree.ts';
import { CHAOS_KINDS, startChaosProxy, type ChaosProxy } from './chaos-proxy.ts';
import { ChangingTree, treeDifference } from './soak-tree.ts';

export interface StorageFaultsOptions {
  seed: number;
  work: string;
  /** Backup steps per backend. */
  steps: number;
  /** Share of requests faulted while the faults are on. */
  rate: number;
  backends: Array<'s3' | 'gcs'>;
  log: (line: string) => void;
}

export interface BackendFigures {
  requests: number;
  faulted: number;
  share: string;
  byKind: Record<string, number>;
  runs: number;
  exits: Record<string, number>;
  committed: number;
  committedDespiteFailure: number;
  restoresCompared: number;
}

export interface StorageFaultsReport {
  seed: number;
  backends: Record<string, BackendFigures>;
  failures: string[];
  seconds: number;
}

/** Exit codes and the error codes docs/exit-codes.md pairs with them; Cairn.Failure (1) is a crash, not a clean failure. */
const DOCUMENTED: Record<number, string[]> = {
  3: ['Cairn.PartialFailure'],
  11: ['Cairn.Locked'],
  13: ['Cairn.NotFound'],
  14: ['Cairn.Damaged'],
  16: ['Cairn.Storage'],
};

const PASSWORD = 'soak storage faults';

export async function runStorageFaultsCampaign(options: StorageFaultsOptions): Promise<StorageFaultsReport> {
  const started = Date.now();
  const failures: string[] = [];
  const fail = (message: string): void => {
    failures.push(message);
    options.log(`FAILURE: ${message}`);
  };
  const backends: Record<string, BackendFigures> = {};
  for (const backend of options.backends) {
    const seed = options.seed + (backend === 's3' ? 0 : 1);
    const servers: Array<{ stop(): Promise<void> }> = [];
    try {
      let url: string;
      let env: Record<string, string>;
      let chaos: ChaosProxy;
      if (backend === 's3') {
        const s3 = await startS3rver();
        servers.push(s3);
        const standIn = await startFaultProxy(s3.endpoint);
        servers.push(standIn);
        chaos = await startChaosProxy(standIn.endpoint, { seed, rate: options.rate, flavor: 's3' });
        url = s3.url(`soak-${seed}`, chaos.endpoint);
        env = { ...s3rverEnv() };
      } else {
        const gcs = await startGcsTestServer({ buckets: ['cairn-soak'] });
        servers.push(gcs);
        chaos = await startChaosProxy(gcs.endpoint, { seed, rate: options.rate, flavor: 'gcs' });
        url = `gs://cairn-soak/soak-${seed}?endpoint=${encodeURIComponent(chaos.endpoint)}`;
        env = {};
      }
      servers.unshift(chaos);
      env = { ...env, CAIRN_REPOSITORY: url, CAIRN_PASSWORD: PASSWORD };
      backends[backend] = await campaign(backend, url, env, chaos, seed, options, fail);
    } finally {
      for (const server of servers) await server.stop();
    }
  }
  return { seed: options.seed, backends, failures, seconds: Math.round((Date.now() - started) / 1000) };
}

async function campaign(
  backend: string,
  url: string,
  env: Record<string, string>,
  chaos: ChaosProxy,
  seed: number,
  options: StorageFaultsOptions,
  fail: (message: string) => void,
): Promise<BackendFigures> {
  const rnd = new Random(seed);
  const tree = new ChangingTree(join(options.work, `src-${backend}`), seed, { budget: 3 << 20, grow: [300_000, 900_000] });
  await tree.create(seed);
  const restoreDir = join(options.work, `restore-${backend}`);
  const trees = new Map<string, Described[]>();
  const kept = new Set<string>();
  const exits: Record<string, number> = {};
  let runs = 0;
  let committed = 0;
  let committedDespiteFailure = 0;
  let restoresCompared = 0;

  chaos.enabled = false;
  // Initialized through the library for small pieces and packs (the CLI's init takes the defaults); the
  // AWS SDK reads its credentials from process.env, so they are there for this call only.
  const saved = { ...process.env };
  Object.assign(process.env, Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith('AWS_'))));
  try {
    const storage = await openStorage(url, env);
    await Repository.init(storage, PASSWORD, { host: 'soak', user: 'soak' }, SMALL);
    (storage as { destroy?: () => void }).destroy?.();
  } finally {
    for (const key of Object.keys(process.env))
      if (key.startsWith('AWS_') && saved[key] === undefined) Reflect.deleteProperty(process.env, key);
  }

  /** Runs under faults; the exit must be 0 or documented. */
  const faulty = async (args: string[], context: string): Promise<CliResult> => {
    chaos.enabled = true;
    const result = await runCli(args, env);
    chaos.enabled = false;
    runs++;
    const code = result.code ?? -1;
    exits[String(code)] = (exits[String(code)] ?? 0) + 1;
    if (code !== 0) {
      const error = result.lines.find((l) => l.type === 'error') as { code?: string; exitCode?: number; message?: string } | undefined;
      if (!DOCUMENTED[code]?.includes(error?.code ?? '') || error?.exitCode !== code) {
        fail(
          `${backend} ${context}: \`cairn ${args.join(' ')}\` failed uncleanly: exit ${code}, error ${JSON.stringify(error ?? result.stderr.slice(-500))}`,
        );
      }
    }
    return result;
  };

  /** The listing, without faults: nothing committed is missing, nothing unknown appears. */
  const listed = async (context: string, newTree?: Described[]): Promise<string[]> => {
    const result = await runCli(['snapshots'], env);
    if (result.code !== 0) {
      fail(`${backend} ${context}: snapshots exited ${result.code} without faults: ${result.stderr.slice(-500)}`);
      return [];
    }
    const line = result.lines.find((l) => l.type === 'snapshots') as { snapshots: Array<{ id: string }> } | undefined;
    const now = new Set((line?.snapshots ?? []).map((s) => s.id));
    for (const id of kept) if (!now.has(id)) fail(`${backend} ${context}: committed snapshot ${id.slice(0, 8)} is no longer listed`);
    const appeared = [...now].filter((id) => !kept.has(id));
    if (appeared.length > (newTree ? 1 : 0)) fail(`${backend} ${context}: ${appeared.length} snapshots appeared that no backup made`);
    else if (newTree && appeared[0]) {
      trees.set(appeared[0], newTree);
      kept.add(appeared[0]);
      committed++;
    }
    return appeared;
  };

  const compare = async (id: string, context: string): Promise<void> => {
    restoresCompared++;
    const difference = treeDifference(trees.get(id) ?? [], await describeTree(restoreDir));
    if (difference) fail(`${backend} ${context}: snapshot ${id.slice(0, 8)} restored WRONG data: ${difference}`);
  };

  for (let step = 1; step <= options.steps; step++) {
    await tree.change();
    const description = await tree.describe();
    const backup = await faulty(['backup', tree.root], `step ${step} backup`);
    const appeared = await listed(`step ${step} after backup (exit ${backup.code})`, description);
    if (backup.code === 0 && appeared.length === 0) fail(`${backend} step ${step}: backup exited 0 but no snapshot was added`);
    if (backup.code !== 0 && appeared.length > 0) committedDespiteFailure++;

    if (kept.size > 0) {
      const id = rnd.pick([...kept]);
      await rm(restoreDir, { recursive: true, force: true });
      const restored = await faulty(['restore', id, '--target', restoreDir], `step ${step} restore`);
      if (restored.code === 0) await compare(id, `step ${step} restore`);
    }
    if (step % 3 === 0 && kept.size > 3) {
      const oldest = [...kept][0] as string;
      const forgot = await faulty(['forget', oldest], `step ${step} forget`);
      const result = await runCli(['snapshots'], env);
      const line = result.lines.find((l) => l.type === 'snapshots') as { snapshots: Array<{ id: string }> } | undefined;
      if (!(line?.snapshots ?? []).some((s) => s.id === oldest)) kept.delete(oldest);
      else if (forgot.code === 0) fail(`${backend} step ${step}: forget exited 0 but ${oldest.slice(0, 8)} is still listed`);
      await faulty(['prune'], `step ${step} prune`);
      await listed(`step ${step} after prune`);
    }
    if (step % 4 === 0) await faulty(['verify', '--read-data'], `step ${step} verify`);
    // A failed operation may leave its lock; the next ones must not stay blocked (an operator's unlock --all, as after a crash).
    await runCli(['unlock', '--all'], env);
    options.log(
      `${backend} step ${step}: backup exit ${backup.code}; kept ${kept.size}; requests ${chaos.exposed}, faulted ${faultedTotal(chaos)}`,
    );
  }

  // The end, without faults: everything committed and kept restores exactly, and the data verifies.
  await listed('final');
  for (const id of kept) {
    await rm(restoreDir, { recursive: true, force: true });
    const restored = await runCli(['restore', id, '--target', restoreDir], env);
    if (restored.code !== 0) fail(`${backend} final: restore ${id.slice(0, 8)} exited ${restored.code}: ${restored.stderr.slice(-500)}`);
    else await compare(id, 'final');
  }
  const verified = await runCli(['verify', '--read-data'], env);
  if (verified.code !== 0) fail(`${backend} final: verify --read-data exited ${verified.code}: ${verified.stdout.slice(-1000)}`);
  await rm(restoreDir, { recursive: true, force: true });

  const faulted = faultedTotal(chaos);
  return {
    requests: chaos.exposed,
    faulted,
    share: `${((100 * faulted) / Math.max(1, chaos.exposed)).toFixed(1)}%`,
    byKind: Object.fromEntries(CHAOS_KINDS.map((k) => [k, chaos.faulted[k]])),
    runs,
    exits,
    committed,
    committedDespiteFailure,
    restoresCompared,
  };
}

function faultedTotal(chaos: ChaosProxy): number {
  return Object.values(chaos.faulted).reduce((a, b) => a + b, 0);
}
