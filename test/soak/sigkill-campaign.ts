/**
 * The SIGKILL part of the reliability soak (docs/reliability.md, "SIGKILL"), one
 * unit because the model of what was committed and the checks made against it
 * after every kill only make sense together.
 *
 * A real `cairn` process (agent/cli/cairn.js) runs backup, forget, prune, copy,
 * restore, key add and key remove on a changing tree, and is killed at random
 * moments and in chosen phases (kill-switch.ts). The campaign keeps a model:
 * every snapshot known committed in repository A (backups) and B (copies), with a
 * description of the tree at its backup. After every operation, killed or not:
 * no committed snapshot is missing unless a forget of it ran; a snapshot listed
 * that the model does not know must be the killed operation's own, whole commit
 * (it is then checked like the others). Every few operations and at the end, every
 * kept snapshot of both repositories is restored and compared with its tree, and
 * `verify --read-data` must pass.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { listGenerations } from '../../agent/core/gc-generation.ts';
import { packKey } from '../../agent/core/layout.ts';
import { Repository } from '../../agent/core/repository.ts';
import { FileStorage } from '../../agent/storage/file.ts';
import { runCli, type CliResult } from '../helpers/cli.ts';
import { ageLockRecords, SMALL } from '../helpers/repo.ts';
import { describeTree, Random, type Described } from '../helpers/tree.ts';
import { PHASES, runWithKill, type KillPlan, type Phase } from './kill-switch.ts';
import { ChangingTree, treeDifference } from './soak-tree.ts';

export interface SigkillOptions {
  seed: number;
  work: string;
  /** Kills wanted in each of PHASES. */
  perPhase: number;
  /** Kills wanted in all. */
  kills: number;
  /** Stop after this many operations even if the counts are not reached. */
  maxOps: number;
  /** Start no operation after this many minutes (the final check still runs); unset: no limit. */
  minutes?: number;
  /** Restore every kept snapshot and verify --read-data every this many operations. */
  fullCheckEvery: number;
  /** Only these operations (default: all); the small pass in npm test leaves out restores and key changes. */
  operations?: Operation[];
  log: (line: string) => void;
}

export interface SigkillReport {
  seed: number;
  operations: number;
  kills: number;
  byPhase: Record<string, number>;
  byOperation: Record<string, { runs: number; kills: number }>;
  committed: number;
  forgotten: number;
  restoresCompared: number;
  verifyRuns: number;
  failures: string[];
  seconds: number;
}

const PASSWORD_A = 'soak passphrase A';
const PASSWORD_B = 'soak passphrase B';
export type Operation = 'backup' | 'forget' | 'prune' | 'copy' | 'restore' | 'key-add' | 'key-remove';
const PHASES_OF: Partial<Record<Operation, readonly Phase[]>> = {
  backup: ['mid-pack', 'packs-index', 'index-manifest'],
  copy: ['mid-pack', 'packs-index', 'index-manifest'],
  prune: ['gc-deletes'],
};

interface Repo {
  name: 'A' | 'B';
  path: string;
  env: Record<string, string>;
  /** Snapshots known committed and not forgotten: id → manifest time. */
  kept: Map<string, string>;
  /** Snapshots forgotten since the last prune finished (so prune has garbage). */
  garbage: boolean;
}

export async function runSigkillCampaign(options: SigkillOptions): Promise<SigkillReport> {
  const started = Date.now();
  const rnd = new Random(options.seed);
  const failures: string[] = [];
  const fail = (message: string): void => {
    failures.push(message);
    options.log(`FAILURE: ${message}`);
  };
  const trees = new Map<string, Described[]>();
  const byPhase: Record<string, number> = Object.fromEntries([...PHASES, 'other'].map((p) => [p, 0]));
  const byOperation: Record<string, { runs: number; kills: number }> = {};
  const durations = new Map<Operation, number>();
  const extraKeys = new Map<string, string>();
  let kills = 0;
  let operations = 0;
  let committed = 0;
  let forgotten = 0;
  let restoresCompared = 0;
  let verifyRuns = 0;
  let keyCounter = 0;

  const tree = new ChangingTree(join(options.work, 'src'), options.seed);
  await tree.create(options.seed);
  const repos: Record<'A' | 'B', Repo> = {
    A: { name: 'A', path: join(options.work, 'repo-a'), env: {}, kept: new Map(), garbage: false },
    B: { name: 'B', path: join(options.work, 'repo-b'), env: {}, kept: new Map(), garbage: false },
  };
  for (const [repo, password] of [
    [repos.A, PASSWORD_A],
    [repos.B, PASSWORD_B],
  ] as const) {
    // 1 MiB packs and 16 KiB pieces: a step's new data spans several packs, so kills can land between them.
    await Repository.init(new FileStorage(repo.path), password, { host: 'soak', user: 'soak' }, SMALL);
    // A 2 s GC grace (prune --gc-grace): the soak is about kills in every phase, not about waiting.
    repo.env = { CAIRN_REPOSITORY: repo.path, CAIRN_PASSWORD: password, CAIRN_GC_GRACE: '2' };
  }
  const restoreDir = join(options.work, 'restore');

  const listed = async (repo: Repo): Promise<Map<string, string> | undefined> => {
    const result = await runCli(['snapshots'], repo.env);
    if (result.code !== 0) {
      fail(`snapshots of ${repo.name} exited ${result.code}: ${result.stderr.trim()}`);
      return undefined;
    }
    const line = result.lines.find((l) => l.type === 'snapshots') as { snapshots: Array<{ id: string; time: string }> } | undefined;
    return new Map((line?.snapshots ?? []).map((s) => [s.id, s.time]));
  };

  const restoreAndCompare = async (repo: Repo, id: string, context: string): Promise<void> => {
    const expected = trees.get(id);
    if (!expected) return fail(`${context}: no recorded tree for snapshot ${id} of ${repo.name}`);
    await rm(restoreDir, { recursive: true, force: true });
    const result = await runCli(['restore', id, '--target', restoreDir], repo.env);
    restoresCompared++;
    if (result.code !== 0)
      return fail(`${context}: restore ${id.slice(0, 8)} from ${repo.name} exited ${result.code}: ${result.stderr.trim()}`);
    const difference = treeDifference(expected, await describeTree(restoreDir));
    if (difference) fail(`${context}: snapshot ${id.slice(0, 8)} of ${repo.name} restored wrong: ${difference}`);
  };

  /**
   * Compares the listing with the model. `mayVanish`: ids a forget was told to remove;
   * `newTree`: the tree a snapshot new to the model must hold (undefined: none may appear),
   * `mayAppear`: ids that may appear (copies), with their trees known.
   */
  const reconcile = async (
    repo: Repo,
    context: string,
    expect: { mayVanish?: Set<string>; newTree?: Described[]; mayAppear?: Set<string>; mustVanish?: boolean; mustAppear?: boolean },
  ): Promise<string[]> => {
    const now = await listed(repo);
    if (!now) return [];
    for (const [id] of repo.kept) {
      if (now.has(id)) continue;
      if (expect.mayVanish?.has(id)) {
        repo.kept.delete(id);
        forgotten++;
        repo.garbage = true;
        continue;
      }
      fail(`${context}: committed snapshot ${id.slice(0, 8)} of ${repo.name} is no longer listed`);
      repo.kept.delete(id);
    }
    if (expect.mustVanish)
      for (const id of expect.mayVanish ?? []) if (now.has(id)) fail(`${context}: forgotten snapshot ${id.slice(0, 8)} still listed`);
    const appeared = [...now.keys()].filter((id) => !repo.kept.has(id));
    for (const id of appeared) {
      if (expect.newTree && appeared.length === 1 && !trees.has(id)) {
        trees.set(id, expect.newTree);
        committed++;
      } else if (!(expect.mayAppear?.has(id) && trees.has(id))) {
        fail(`${context}: snapshot ${id.slice(0, 8)} listed in ${repo.name} was never committed (${appeared.length} appeared)`);
        continue;
      }
      repo.kept.set(id, now.get(id) ?? '');
    }
    if (expect.mustAppear && appeared.length === 0)
      fail(`${context}: the operation succeeded but no new snapshot is listed in ${repo.name}`);
    return appeared;
  };

  const fullCheck = async (context: string): Promise<void> => {
    for (const repo of [repos.A, repos.B]) {
      for (const id of repo.kept.keys()) await restoreAndCompare(repo, id, context);
      const verified = await runCli(['verify', '--read-data'], repo.env);
      verifyRuns++;
      if (verified.code !== 0)
        fail(`${context}: verify --read-data of ${repo.name} exited ${verified.code}: ${verified.stdout.slice(-2000)}`);
    }
  };

  /** After a kill: the dead process's lock goes, by `unlock --all` or by its lease running out (records aged). */
  const recover = async (repo: Repo): Promise<void> => {
    if (rnd.int(2) === 0) {
      const result = await runCli(['unlock', '--all'], repo.env);
      if (result.code !== 0) fail(`unlock --all of ${repo.name} exited ${result.code}: ${result.stderr.trim()}`);
    } else {
      // A repository whose locks/ does not exist yet (a copy killed before its target's first lock) has nothing to age.
      await mkdir(join(repo.path, 'locks'), { recursive: true });
      await ageLockRecords(repo.path, 31 * 60_000);
    }
  };

  const choosePlan = (operation: Operation): KillPlan => {
    // A few snapshots must exist for the other operations to act on: backups run unkilled until then.
    if (operation === 'backup' && repos.A.kept.size < 3 && rnd.int(2) === 0) return undefined;
    // Prunes need snapshots to forget: while A holds few, one backup in three commits unkilled.
    if (operation === 'backup' && repos.A.kept.size < 6 && rnd.int(3) === 0) return undefined;
    const phases = PHASES_OF[operation] ?? [];
    const lacking = phases.filter((p) => byPhase[p]! < options.perPhase).sort((a, b) => byPhase[a]! - byPhase[b]!);
    // Every run is aimed at a phase still short of its count: a run not killed costs as much as one killed.
    if (lacking.length > 0) return { phase: lacking[0] as Exclude<Phase, 'other'> };
    // Then every run is killed at a random moment of its usual duration, but one in ten is aimed at any of
    // its phases again (more kills in the phases than the minimum), and one in twenty runs unkilled.
    if (rnd.int(20) === 0) return undefined;
    if (phases.length > 0 && rnd.int(10) === 0) return { phase: rnd.pick([...phases]) as Exclude<Phase, 'other'> };
    return { afterMs: rnd.int(durations.get(operation) ?? 3000) };
  };

  const chooseOperation = (): Operation => {
    const lacking = PHASES.filter((p) => byPhase[p]! < options.perPhase);
    const prunable = repos.A.garbage || repos.A.kept.size > 3;
    if (lacking.includes('gc-deletes') && prunable && rnd.int(options.operations ? 2 : 3) === 0) return 'prune';
    // While a backup phase is short, most runs are backups or copies: those phases only happen there.
    const backupPhases = lacking.some((p) => p !== 'gc-deletes');
    if (backupPhases && repos.A.kept.size >= 3 && rnd.int(3) > 0) return rnd.int(3) === 0 ? 'copy' : 'backup';
    const weights: Array<[Operation, number]> = [
      ['backup', repos.A.kept.size < 3 ? 60 : 30],
      ['copy', 14],
      ['prune', prunable ? 12 : 0],
      ['forget', 12 + 4 * Math.max(0, repos.A.kept.size - 5)],
      ['restore', 8],
      ['key-add', 6],
      ['key-remove', extraKeys.size > 0 ? 6 : 0],
    ];
    for (const entry of weights) if (options.operations && !options.operations.includes(entry[0])) entry[1] = 0;
    const total = weights.reduce((a, [, w]) => a + w, 0);
    let at = rnd.int(total);
    for (const [operation, weight] of weights) {
      if (at < weight) return operation;
      at -= weight;
    }
    return 'backup';
  };

  const done = (): boolean => kills >= options.kills && PHASES.every((p) => byPhase[p]! >= options.perPhase);

  const stopAt = started + (options.minutes ?? Infinity) * 60_000;
  while (!done() && operations < options.maxOps && Date.now() < stopAt) {
    const operation = chooseOperation();
    const plan = choosePlan(operation);
    operations++;
    const context = `op ${operations} (${operation}, ${plan ? JSON.stringify(plan) : 'no kill'})`;
    const stats = (byOperation[operation] ??= { runs: 0, kills: 0 });
    stats.runs++;
    let run: { result: CliResult; phase: Phase | undefined; ms: number } | undefined;
    let touched: Repo[] = [repos.A];

    if (operation === 'backup') {
      await tree.change();
      const description = await tree.describe();
      run = await runWithKill(['--concurrency', String(1 + rnd.int(2)), 'backup', tree.root], repos.A.env, repos.A.path, 'backup', plan);
      if (run.phase) await recover(repos.A);
      await reconcile(repos.A, context, { newTree: description, mustAppear: run.result.code === 0 });
    } else if (operation === 'copy') {
      touched = [repos.B];
      const source = new Set(repos.A.kept.keys());
      run = await runWithKill(
        ['copy', '--to-repo', repos.B.path],
        { ...repos.A.env, CAIRN_TO_PASSWORD: PASSWORD_B },
        repos.B.path,
        'copy',
        plan,
      );
      if (run.phase) {
        await recover(repos.A);
        await recover(repos.B);
      }
      await reconcile(repos.B, context, { mayAppear: source });
      if (run.result.code === 0)
        for (const id of source) if (!repos.B.kept.has(id)) fail(`${context}: copy exited 0 but ${id.slice(0, 8)} is not in B`);
    } else if (operation === 'forget' || operation === 'prune' || operation === 'restore') {
      const repo = rnd.int(3) === 0 && (operation !== 'prune' || repos.B.garbage || repos.B.kept.size > 3) ? repos.B : repos.A;
      touched = [repo];
      if (operation === 'forget' || (operation === 'prune' && !repo.garbage && repo.kept.size > 2)) {
        // Forget one to three of the oldest (keep at least two); prune gets garbage this way.
        const ids = [...repo.kept].sort((a, b) => a[1].localeCompare(b[1])).map(([id]) => id);
        const doomed = new Set(ids.slice(0, Math.min(1 + rnd.int(3), Math.max(0, ids.length - 2))));
        if (doomed.size > 0) {
          const args = ['forget', ...doomed];
          if (operation === 'forget') {
            run = await runWithKill(args, repo.env, repo.path, 'forget', plan);
            if (run.phase) await recover(repo);
          } else {
            const result = await runCli(args, repo.env);
            if (result.code !== 0) fail(`${context}: forget before prune exited ${result.code}: ${result.stderr.trim()}`);
          }
          await reconcile(repo, context, { mayVanish: doomed, mustVanish: operation === 'prune' || run?.result.code === 0 });
        }
      }
      if (operation === 'prune') {
        run = await runWithKill(['prune'], repo.env, repo.path, 'prune', plan);
        if (run.phase) {
          await recover(repo);
          if (run.phase === 'gc-deletes') {
            // "During" the deletes only if the doomed objects were not all gone yet: a pack of a generation
            // not yet swept still exists (read from the generation records), or a dry run still finds some.
            const left = await doomedPacksLeft(repo.path, repo.env.CAIRN_PASSWORD ?? '');
            const dry = left > 0 ? undefined : await runCli(['prune', '--dry-run'], repo.env);
            const report = dry?.lines.find((l) => l.type === 'prune') as { packsDeleted?: number } | undefined;
            if (left === 0 && (report?.packsDeleted ?? 0) === 0) run.phase = 'other';
            options.log(
              `${context}: after the kill, ${left} doomed packs left, dry run ${dry ? `exit ${dry.code}, ${report?.packsDeleted ?? '?'} to delete` : 'not needed'}`,
            );
          }
        } else if (run.result.code === 0) repo.garbage = false;
        await reconcile(repo, context, {});
        if (run.phase) {
          // A prune killed anywhere must leave every kept snapshot whole: the newest and one other are restored now.
          const ids = [...repo.kept.keys()];
          for (const id of new Set([ids.at(-1), rnd.pick(ids)])) if (id) await restoreAndCompare(repo, id, `${context} after the kill`);
        }
      }
      if (operation === 'restore' && repo.kept.size > 0) {
        const id = rnd.pick([...repo.kept.keys()]);
        await rm(restoreDir, { recursive: true, force: true });
        run = await runWithKill(['restore', id, '--target', restoreDir], repo.env, repo.path, 'restore', plan);
        if (run.phase) await recover(repo);
        else if (run.result.code === 0) {
          restoresCompared++;
          const difference = treeDifference(trees.get(id) ?? [], await describeTree(restoreDir));
          if (difference) fail(`${context}: restored ${id.slice(0, 8)} wrong: ${difference}`);
        }
        await reconcile(repo, context, {});
      }
    } else if (operation === 'key-add') {
      const password = `soak extra key ${++keyCounter}`;
      const before = await keyIds(repos.A.env);
      run = await runWithKill(['key', 'add'], { ...repos.A.env, CAIRN_NEW_PASSWORD: password }, repos.A.path, 'key-add', plan);
      if (run.phase) await recover(repos.A);
      const after = await keyIds(repos.A.env);
      const fresh = [...after].filter((id) => !before.has(id));
      if (run.result.code === 0 && fresh.length !== 1) fail(`${context}: key add exited 0 but ${fresh.length} new key files are listed`);
      for (const id of fresh) {
        // A listed key must open the repository with its passphrase.
        const opened = await runCli(['snapshots'], { ...repos.A.env, CAIRN_PASSWORD: password });
        if (opened.code !== 0) fail(`${context}: the added key ${id} is listed but its passphrase fails (exit ${opened.code})`);
        else extraKeys.set(id, password);
      }
    } else if (operation === 'key-remove' && extraKeys.size > 0) {
      const [id, password] = rnd.pick([...extraKeys]);
      run = await runWithKill(['key', 'remove', id], repos.A.env, repos.A.path, 'key-remove', plan);
      if (run.phase) await recover(repos.A);
      const after = await keyIds(repos.A.env);
      const opened = await runCli(['snapshots'], { ...repos.A.env, CAIRN_PASSWORD: password });
      if (after.has(id) && opened.code !== 0) fail(`${context}: key ${id} is still listed but its passphrase fails (exit ${opened.code})`);
      if (!after.has(id)) {
        extraKeys.delete(id);
        if (opened.code !== 12) fail(`${context}: key ${id} was removed but its passphrase still opens (exit ${opened.code})`);
      } else if (run.result.code === 0) fail(`${context}: key remove exited 0 but ${id} is still listed`);
    }

    if (run) {
      if (run.phase) {
        kills++;
        stats.kills++;
        byPhase[run.phase] = (byPhase[run.phase] ?? 0) + 1;
      } else if (run.result.code !== 0) {
        fail(`${context}: exited ${run.result.code ?? run.result.signal} without being killed: ${run.result.stderr.trim().slice(-500)}`);
      } else {
        const previous = durations.get(operation) ?? run.ms;
        durations.set(operation, Math.round((previous + run.ms) / 2));
      }
      options.log(
        `${context}: ${run.phase ? `killed in ${run.phase}` : `exit ${run.result.code}`} after ${run.ms} ms; kept A ${repos.A.kept.size}, B ${repos.B.kept.size}; kills ${kills} ${JSON.stringify(byPhase)}`,
      );
    }
    // The main passphrase opens the repository whatever happened to the key files.
    if (operation.startsWith('key') && (await runCli(['snapshots'], repos.A.env)).code !== 0)
      fail(`${context}: the main passphrase no longer opens A`);
    if (operations % options.fullCheckEvery === 0) await fullCheck(`full check after op ${operations}`);
    // After a kill, the structure of what it wrote must hold (a full restore and verify run every few operations).
    if (run?.phase)
      for (const repo of touched) {
        const checked = await runCli(['check'], repo.env);
        if (checked.code !== 0) fail(`${context}: check of ${repo.name} exited ${checked.code}: ${checked.stdout.slice(-1000)}`);
      }
  }
  await fullCheck('final check');
  await rm(restoreDir, { recursive: true, force: true });
  await mkdir(options.work, { recursive: true });
  return {
    seed: options.seed,
    operations,
    kills,
    byPhase,
    byOperation,
    committed,
    forgotten,
    restoresCompared,
    verifyRuns,
    failures,
    seconds: Math.round((Date.now() - started) / 1000),
  };
}

/** Packs named by GC generation records whose sweep has not finished and that still exist. */
async function doomedPacksLeft(path: string, password: string): Promise<number> {
  const storage = new FileStorage(path);
  const repo = await Repository.open(storage, password);
  let left = 0;
  for (const generation of await listGenerations(repo, () => undefined)) {
    if (generation.swept !== undefined) continue;
    for (const pack of generation.packs) if (await storage.stat(packKey(pack))) left++;
  }
  return left;
}

async function keyIds(env: Record<string, string>): Promise<Set<string>> {
  const result = await runCli(['key', 'list'], env);
  const line = result.lines.find((l) => l.type === 'keys') as { keys: Array<{ id: string }> } | undefined;
  return new Set((line?.keys ?? []).map((k) => k.id));
}
