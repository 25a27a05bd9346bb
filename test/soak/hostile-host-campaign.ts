/**
 * The hostile-host part of the reliability soak (docs/reliability.md, "Hostile
 * host"). An honest host backs up a changing tree; then a host with the
 * repository's passphrase but only create rights (CreateOnlyStorage, a STAND-IN
 * for a bucket policy that allows PutObject with If-None-Match and nothing else)
 * writes, in rounds: index files naming the real pieces at junk and missing
 * packs, sealed junk index files, manifests copied from real ones and dated a
 * year ahead and five years back, a manifest naming a tree that does not exist,
 * key files with the same passphrase and another master key, lock records dated
 * a year ahead, and junk under every prefix. After each round the true operator
 * (the CLI, with the true passphrase and full rights) runs forget and prune:
 * - the repository opens and lists every true snapshot;
 * - retention keeps the newest true snapshot (forget --keep-last 1);
 * - prune never deletes a pack a listed snapshot uses: every listed snapshot
 *   whose tree is real restores exactly the tree it was copied from;
 * - a new backup after the attack restores exactly.
 */
import { randomBytes } from 'node:crypto';
import { rm, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { AlreadyExistsError, CairnError } from '../../agent/core/errors.ts';
import { newMasterKey, wrapMasterKey } from '../../agent/core/keyfile.ts';
import { newGenerationName, writeGeneration } from '../../agent/core/gc-generation.ts';
import { INDEX_PREFIX, gcGenerationKey, indexKey, keyFileKey, lockKey, packKey, snapshotKey } from '../../agent/core/layout.ts';
import { decodeIndexEntries, type IndexEntry } from '../../agent/core/pack.ts';
import { Repository } from '../../agent/core/repository.ts';
import type { ObjectInfo, PutOptions, Storage } from '../../agent/core/storage.ts';
import { FileStorage } from '../../agent/storage/file.ts';
import { runCli } from '../helpers/cli.ts';
import { SMALL } from '../helpers/repo.ts';
import { describeTree, Random, type Described } from '../helpers/tree.ts';
import { ChangingTree, treeDifference } from './soak-tree.ts';

/** STAND-IN for create-only rights: writes only objects that do not exist yet; no delete. */
export class CreateOnlyStorage implements Storage {
  readonly location: string;
  readonly atomicCreate: boolean;
  private readonly inner: FileStorage;

  constructor(inner: FileStorage) {
    this.inner = inner;
    this.location = inner.location;
    this.atomicCreate = inner.atomicCreate;
  }
  get(key: string): Promise<Buffer> {
    return this.inner.get(key);
  }
  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return this.inner.getRange(key, offset, length);
  }
  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.inner.stat(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
  async put(key: string, data: Buffer, options?: PutOptions): Promise<void> {
    // Whatever the caller asks (options.ifAbsent or not), an existing object is never replaced.
    if (await this.inner.stat(key)) throw new AlreadyExistsError(key);
    await this.inner.put(key, data, { ...options, ifAbsent: true });
  }
}

export interface HostileHostOptions {
  seed: number;
  work: string;
  rounds: number;
  log: (line: string) => void;
}

export interface HostileHostReport {
  seed: number;
  rounds: number;
  forged: Record<string, number>;
  trueSnapshots: number;
  restoresCompared: number;
  verifyExits: Record<string, number>;
  /** What the operator had to do by hand, though nothing was lost. */
  observations: string[];
  failures: string[];
  seconds: number;
}

const PASSWORD = 'soak hostile host';

export async function runHostileHostCampaign(options: HostileHostOptions): Promise<HostileHostReport> {
  const started = Date.now();
  const failures: string[] = [];
  const fail = (message: string): void => {
    failures.push(message);
    options.log(`FAILURE: ${message}`);
  };
  const rnd = new Random(options.seed);
  const repoPath = join(options.work, 'repo');
  await Repository.init(new FileStorage(repoPath), PASSWORD, { host: 'soak', user: 'soak' }, SMALL);
  const env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSWORD };
  const tree = new ChangingTree(join(options.work, 'src'), options.seed, { budget: 2 << 20, grow: [200_000, 600_000] });
  await tree.create(options.seed);
  const restoreDir = join(options.work, 'restore');
  /** Snapshot id → the tree it must restore to (true snapshots, and forged copies of them). */
  const trees = new Map<string, Described[]>();
  const trueIds: string[] = [];
  const forged: Record<string, number> = {};
  const verifyExits: Record<string, number> = {};
  let restoresCompared = 0;
  const forgedManifests: string[] = [];
  const observations: string[] = [];
  const forge = (what: string): void => {
    forged[what] = (forged[what] ?? 0) + 1;
  };

  const honestBackup = async (context: string): Promise<void> => {
    await tree.change();
    const description = await tree.describe();
    const result = await runCli(['--lock-wait', '2m', 'backup', tree.root], env);
    const id = result.lines.find((l) => l.type === 'summary')?.snapshotId;
    if (result.code !== 0 || typeof id !== 'string')
      return fail(`${context}: the honest backup exited ${result.code}: ${result.stderr.trim().slice(-400)}`);
    trees.set(id, description);
    trueIds.push(id);
  };

  for (let i = 0; i < 3; i++) await honestBackup('setup');

  for (let round = 1; round <= options.rounds; round++) {
    const context = `round ${round}`;
    // The hostile host: the passphrase, create-only rights.
    const hostile = await Repository.open(new CreateOnlyStorage(new FileStorage(repoPath)), PASSWORD);
    // The real entries, read one index file at a time (the junk ones of earlier rounds skipped).
    const realEntries: IndexEntry[] = [];
    for await (const object of hostile.storage.list(INDEX_PREFIX)) {
      try {
        realEntries.push(...decodeIndexEntries(hostile.unseal('index', object.key, await hostile.storage.get(object.key)), object.key));
      } catch (error) {
        if (!(error instanceof CairnError)) throw error;
      }
    }
    const junkPack = randomBytes(32).toString('hex');
    await hostile.storage.put(packKey(junkPack), Buffer.concat([Buffer.from('CPK\x01', 'latin1'), randomBytes(4096)]));
    forge('junk pack');
    for (const target of [junkPack, randomBytes(32).toString('hex')]) {
      // Every real piece, also "at" a junk pack or a pack that does not exist; written several times so it is often read first.
      const entries = realEntries.map((e) => ({ ...e, packId: target }));
      for (let copy = 0; copy < 2; copy++) await hostile.writeIndex(entries);
      forge(target === junkPack ? 'index at a junk pack' : 'index at a missing pack');
    }
    if (round > 1) {
      // Like junk under index/ (below), an index file sealed around junk stops every reader of the index on
      // the code this was written against: left out of round 1 so that the other forgeries are judged alone.
      const junkIndex = indexKey(randomBytes(32).toString('hex'));
      await hostile.storage.put(junkIndex, hostile.seal('index', junkIndex, randomBytes(200)));
      forge('sealed junk index');
    }

    forgedManifests.length = 0;
    const original = await hostile.readSnapshot(rnd.pick(trueIds));
    for (const [what, shift] of [
      ['manifest a year ahead', 365 * 86_400_000],
      ['manifest five years back', -5 * 365 * 86_400_000],
    ] as const) {
      const id = randomBytes(32).toString('hex');
      const time = new Date(Date.parse(original.time) + shift).toISOString();
      await hostile.saveSnapshot({ ...original, id, time, endTime: time });
      forgedManifests.push(id);
      trees.set(id, trees.get(original.id) ?? []);
      forge(what);
    }
    const ghost = randomBytes(32).toString('hex');
    await hostile.saveSnapshot({
      ...original,
      id: ghost,
      tree: randomBytes(32).toString('hex'),
      time: new Date(Date.now() + 86_400_000).toISOString(),
    });
    forgedManifests.push(ghost);
    forge('manifest of a missing tree, a day ahead');

    const forgedKey = await wrapMasterKey(newMasterKey(), PASSWORD, hostile.config.id, { host: 'hostile', user: 'hostile' });
    await hostile.storage.put(keyFileKey(randomBytes(16).toString('hex')), Buffer.from(JSON.stringify(forgedKey, null, 2)));
    forge('key file: same passphrase, another master key');

    const holder = randomBytes(8).toString('hex');
    const ahead = Date.now() + 365 * 86_400_000;
    const record = {
      holder,
      seq: 0,
      operation: 'prune',
      exclusive: true,
      host: 'hostile',
      user: 'hostile',
      pid: 1,
      started: new Date(ahead).toISOString(),
      time: new Date(ahead).toISOString(),
      // A short declared lease: what it may block is one such lease of storage time.
      expires: new Date(ahead + 10_000).toISOString(),
      released: false,
    };
    const lockName = lockKey(holder, 0);
    await hostile.storage.put(lockName, hostile.seal('lock', lockName, Buffer.from(JSON.stringify(record))));
    forge('exclusive lock a year ahead');
    // Junk under index/ stops every reader of the index on the code this was written against (docs/reliability.md):
    // round 1 leaves it out so that the other forgeries are judged on their own.
    const junkPrefixes = ['keys/', 'locks/', 'snapshots/', `packs/${junkPack.slice(0, 2)}/`, ...(round > 1 ? ['index/'] : [])];
    for (const prefix of junkPrefixes) {
      const name = prefix === 'keys/' ? keyFileKey(randomBytes(16).toString('hex')) : `${prefix}${randomBytes(32).toString('hex')}`;
      await hostile.storage.put(name, randomBytes(1 + rnd.int(300)));
      forge('junk object');
    }
    try {
      await hostile.storage.put(snapshotKey(original.id), randomBytes(100));
      fail(`${context}: the create-only stand-in let a manifest be overwritten`);
    } catch (error) {
      if (!(error instanceof CairnError)) throw error;
    }

    // The forgeries were stored an hour ago (their mtimes, the storage's clock, aged): the honest backup
    // made now is the newest snapshot by any time a forgery cannot move past its storage time.
    const anHourAgo = new Date(Date.now() - 3_600_000);
    for (const id of forgedManifests) await utimes(join(repoPath, snapshotKey(id)), anHourAgo, anHourAgo);
    await honestBackup(`${context} after the forgeries`);
    const newest = trueIds.at(-1) as string;

    // The operator, with the true passphrase.
    const listing = await runCli(['snapshots'], env);
    const listedIds = new Set(
      ((listing.lines.find((l) => l.type === 'snapshots') as { snapshots?: Array<{ id: string }> } | undefined)?.snapshots ?? []).map(
        (s) => s.id,
      ),
    );
    if (listing.code !== 0)
      fail(`${context}: snapshots exited ${listing.code} with the true passphrase: ${listing.stderr.trim().slice(-400)}`);
    for (const id of trueIds) if (!listedIds.has(id)) fail(`${context}: true snapshot ${id.slice(0, 8)} is not listed`);

    const forget = await runCli(['--lock-wait', '2m', 'forget', '--keep-last', '1'], env);
    const removed = new Set(
      ((forget.lines.find((l) => l.type === 'forget') as { removed?: Array<{ id: string }> } | undefined)?.removed ?? []).map((r) => r.id),
    );
    if (forget.code !== 0) fail(`${context}: forget --keep-last 1 exited ${forget.code}: ${forget.stderr.trim().slice(-400)}`);
    if (removed.has(newest))
      fail(`${context}: forget --keep-last 1 removed the newest true snapshot ${newest.slice(0, 8)} (a forged manifest counted as newer)`);

    // Just before the operator prunes: a GC mark sealed with the repository key, claiming every
    // snapshot was seen (the one made after the attack too) and every real pack, trees' included, is
    // unused; stored an hour ago by the storage's clock, so its grace has long passed.
    const packsNow = new Set(realEntries.map((e) => e.packId));
    for await (const object of hostile.storage.list(INDEX_PREFIX)) {
      try {
        for (const e of decodeIndexEntries(hostile.unseal('index', object.key, await hostile.storage.get(object.key)), object.key))
          if (e.packId !== junkPack) packsNow.add(e.packId);
      } catch (error) {
        if (!(error instanceof CairnError)) throw error;
      }
    }
    const mark = newGenerationName(anHourAgo);
    await writeGeneration(hostile, {
      generation: mark,
      created: new Date().toISOString(),
      by: { host: 'hostile', user: 'hostile', operation: 'prune' },
      seen: (await hostile.listSnapshots()).snapshots.map((s) => s.id).sort(),
      packs: [...packsNow].sort(),
      pieces: [],
    });
    await utimes(join(repoPath, gcGenerationKey(mark)), anHourAgo, anHourAgo);
    forge('GC mark naming every pack, every snapshot seen');

    let prune = await runCli(['--lock-wait', '2m', 'prune'], env);
    // Prune refuses to collect while a manifest or an index file cannot be read (it could not tell what
    // they keep alive): the operator does what the hint says and prunes again. At most one of each.
    for (let attempt = 0; attempt < 2 && prune.code === 14; attempt++) {
      const unreadable = /manifest\(s\) cannot be read \(([0-9a-f, ]+)\)/.exec(prune.stderr)?.[1];
      if (unreadable) {
        observations.push(
          `${context}: prune refused while junk under snapshots/ could not be read (${unreadable}); forgotten explicitly, then pruned`,
        );
        const forgot = await runCli(['forget', '--force', ...unreadable.split(/[, ]+/).filter(Boolean)], env);
        if (forgot.code !== 0)
          fail(`${context}: forget of the unreadable manifests exited ${forgot.code}: ${forgot.stderr.trim().slice(-300)}`);
      } else if (/cairn repair index/.test(prune.stderr)) {
        observations.push(`${context}: prune refused while junk under index/ could not be read; repair index, then pruned`);
        const repaired = await runCli(['repair', 'index'], env);
        if (repaired.code !== 0) fail(`${context}: repair index exited ${repaired.code}: ${repaired.stderr.trim().slice(-300)}`);
      } else break;
      prune = await runCli(['--lock-wait', '2m', 'prune'], env);
    }
    if (prune.code !== 0) fail(`${context}: prune exited ${prune.code}: ${prune.stderr.trim().slice(-400)}`);

    // Every listed snapshot with a real tree restores exactly: prune kept every pack it uses.
    const after = await runCli(['snapshots'], env);
    const remaining = (
      (after.lines.find((l) => l.type === 'snapshots') as { snapshots?: Array<{ id: string }> } | undefined)?.snapshots ?? []
    ).map((s) => s.id);
    // Forget's policy decides which true snapshots stay; those it removed are no longer expected.
    for (const id of [...trueIds]) if (!remaining.includes(id)) trueIds.splice(trueIds.indexOf(id), 1);
    for (const id of remaining) {
      const expected = trees.get(id);
      if (!expected) continue;
      await rm(restoreDir, { recursive: true, force: true });
      const restored = await runCli(['restore', id, '--target', restoreDir], env);
      restoresCompared++;
      if (restored.code !== 0) {
        fail(
          `${context}: listed snapshot ${id.slice(0, 8)} no longer restores (exit ${restored.code}): ${restored.stderr.trim().slice(-300)}`,
        );
        continue;
      }
      const difference = treeDifference(expected, await describeTree(restoreDir));
      if (difference) fail(`${context}: snapshot ${id.slice(0, 8)} restored wrong: ${difference}`);
    }
    const verified = await runCli(['verify', '--read-data'], env);
    verifyExits[String(verified.code)] = (verifyExits[String(verified.code)] ?? 0) + 1;

    if (!remaining.includes(newest))
      fail(`${context}: the backup made after the attack (${newest.slice(0, 8)}) is not listed after forget and prune`);
    options.log(`${context}: forged ${JSON.stringify(forged)}; ${failures.length} failures so far`);
  }
  await rm(restoreDir, { recursive: true, force: true });
  return {
    seed: options.seed,
    rounds: options.rounds,
    forged,
    trueSnapshots: trueIds.length,
    restoresCompared,
    verifyExits,
    observations,
    failures,
    seconds: Math.round((Date.now() - started) / 1000),
  };
}
