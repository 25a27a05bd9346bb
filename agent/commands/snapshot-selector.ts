import { readDamage } from '../core/damage.ts';
import { CairnError, DamagedError } from '../core/errors.ts';
import { snapshotKey } from '../core/layout.ts';
import type { Repository } from '../core/repository.ts';
import { chooseLatest, noLatestError, passedOverWarning } from '../core/snapshot-choice.ts';
import { isPartial, shortId, type Snapshot } from '../core/snapshot.ts';
import type { ProgressListener } from '../progress/progress.ts';

/**
 * How every command turns what the user typed into snapshots: one reference
 * ("latest", a full id or a unique prefix of at least 4 hex digits), several
 * of them, or a selection narrowed by host, tag and plan. Commands never call
 * the repository's lookup themselves, so the rules are the same everywhere.
 */

export interface SelectOptions {
  /** Told which damaged snapshots `latest` passed over (stderr `warning:` lines unless given). */
  warn?: ((message: string) => void) | undefined;
}

const stderrWarn = (message: string): void => void process.stderr.write(`warning: ${message}\n`);

/** One snapshot: "latest" (of those `filter` accepts), a full id or a unique prefix. */
export function selectSnapshot(
  repo: Repository,
  ref: string,
  filter: (s: Snapshot) => boolean = () => true,
  options: SelectOptions = {},
): Promise<Snapshot> {
  if (ref === 'latest') return selectLatest(repo, filter, options.warn ?? stderrWarn);
  return repo.findSnapshot(ref, filter);
}

/**
 * `latest`: the newest good snapshot `filter` accepts. A snapshot a damage marker names or
 * tagged `damaged` is passed over with a warning naming it (restoring it needs its id). A
 * manifest that cannot be read and is not older (by the storage's clock) than the one chosen
 * may be the newest: `latest` then fails (Cairn.Damaged) naming it and the newest good
 * snapshot to restore by id, rather than silently meaning an older snapshot.
 */
async function selectLatest(repo: Repository, filter: (s: Snapshot) => boolean, warn: (message: string) => void): Promise<Snapshot> {
  const { snapshots, unreadable } = await repo.listSnapshots();
  const damage = await readDamage(repo, warn);
  const matching = snapshots.filter(filter);
  const choice = chooseLatest(
    matching.map((snapshot) => ({ id: snapshot.id, time: snapshot.time, damaged: damage.damagedReason(snapshot), snapshot })),
  );
  const chosen = choice.chosen?.snapshot;
  const blocking = await unreadableNotOlder(repo, unreadable, chosen);
  if (blocking.length > 0) {
    const names = blocking.map((u) => `${u.id} (${u.error})`).join('; ');
    throw new DamagedError(
      `the newest snapshot cannot be read, so "latest" cannot be resolved: ${blocking.length === 1 ? 'snapshot' : 'snapshots'} ${names}`,
      {
        hint: chosen
          ? `the newest good snapshot is ${chosen.id} (${chosen.time}, ${chosen.host}): restore it by that id; run \`cairn verify\` about the unreadable manifest`
          : 'no readable good snapshot remains; run `cairn verify` and `cairn snapshots`',
      },
    );
  }
  for (const { snapshot, why } of choice.passedOver) warn(passedOverWarning(snapshot, why));
  if (!chosen)
    throw noLatestError(choice, `in ${repo.storage.location}`, {
      by: '--host, --path and --tag',
      others: matching.length === 0 && snapshots.length > 0,
    });
  if (isPartial(chosen)) warn(`latest is snapshot ${shortId(chosen.id)}, a partial backup: some files could not be read when it was taken`);
  return chosen;
}

/**
 * The unreadable manifests that may be newer than `chosen`: those stored (by the storage's clock)
 * no earlier than it. Its own `time` is unknown, and a manifest is written last, so storage time
 * is the best order a reader has. Without a chosen snapshot, every unreadable one counts.
 */
async function unreadableNotOlder(
  repo: Repository,
  unreadable: Array<{ id: string; error: string }>,
  chosen: Snapshot | undefined,
): Promise<Array<{ id: string; error: string }>> {
  if (unreadable.length === 0) return [];
  const chosenInfo = chosen ? await repo.storage.stat(snapshotKey(chosen.id)) : undefined;
  const blocking: Array<{ id: string; error: string }> = [];
  for (const u of unreadable) {
    const info = await repo.storage.stat(snapshotKey(u.id));
    if (!info) continue; // forgotten meanwhile
    if (!chosenInfo || info.modified >= chosenInfo.modified) blocking.push(u);
  }
  return blocking;
}

/** Several references, each resolved (an ambiguous prefix is refused); a snapshot named twice comes once, in the order first named. */
export async function selectSnapshotList(repo: Repository, refs: string[]): Promise<Snapshot[]> {
  const byId = new Map<string, Snapshot>();
  for (const ref of refs) {
    const snapshot = await selectSnapshot(repo, ref);
    byId.set(snapshot.id, snapshot);
  }
  return [...byId.values()];
}

/** One reference, looking again until `waitMs` has passed while there is no such snapshot yet (a replica bootstrapping while the first backup runs). */
export async function waitForSnapshot(
  repo: Repository,
  ref: string,
  options: {
    waitMs?: number | undefined;
    progress: ProgressListener;
    signal?: AbortSignal | undefined;
    latestFilter?: SnapshotFilter | undefined;
  },
): Promise<Snapshot> {
  const deadline = Date.now() + (options.waitMs ?? 0);
  for (;;) {
    try {
      return await selectSnapshot(repo, ref, latestAmong(options.latestFilter), { warn: (message) => options.progress.warn(message) });
    } catch (error) {
      if (!(error instanceof CairnError && error.code === 'Cairn.NotFound') || Date.now() >= deadline) throw error;
      options.progress.warn(`no snapshot ${ref} yet; waiting`);
      await new Promise((resolve) => setTimeout(resolve, Math.min(5000, Math.max(100, deadline - Date.now()))));
      options.signal?.throwIfAborted();
    }
  }
}

export interface SnapshotFilter {
  /** Any of these hosts (empty: any host). */
  hosts?: string[] | undefined;
  /** Any of these tag sets; each "a,b" needs both a and b (restic's rule). */
  tags?: string[] | undefined;
  /** Any of these single tags (copy's rule: a snapshot matches any of the tags). */
  anyTags?: string[] | undefined;
  /** Any of these plans. */
  plans?: string[] | undefined;
  /** Every one of these paths backed up by the snapshot (restic's --path). */
  paths?: string[] | undefined;
}

/** The filter as a predicate: every rule given must hold (an empty rule holds for all). */
export function snapshotMatcher(filter: SnapshotFilter): (s: Snapshot) => boolean {
  const hosts = filter.hosts ?? [];
  const tagSets = (filter.tags ?? []).map((t) =>
    t
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean),
  );
  const anyTags = filter.anyTags ?? [];
  const plans = filter.plans ?? [];
  const paths = filter.paths ?? [];
  return (s) =>
    (hosts.length === 0 || hosts.includes(s.host)) &&
    (plans.length === 0 || (s.plan !== undefined && plans.includes(s.plan))) &&
    (tagSets.length === 0 || tagSets.some((set) => set.every((t) => s.tags.includes(t)))) &&
    (anyTags.length === 0 || s.tags.some((t) => anyTags.includes(t))) &&
    paths.every((p) => s.paths.includes(p));
}

export function filterSnapshots(snapshots: Snapshot[], filter: SnapshotFilter): Snapshot[] {
  return snapshots.filter(snapshotMatcher(filter));
}

/** What `latest` is narrowed to (--host, --path, --tag on the commands that take one snapshot); an id is taken as it is. */
export function latestAmong(filter: SnapshotFilter | undefined): ((s: Snapshot) => boolean) | undefined {
  return filter ? snapshotMatcher(filter) : undefined;
}

export interface SnapshotSelection extends SnapshotFilter {
  /** Snapshot references; empty: every readable snapshot. */
  refs: string[];
}

/**
 * The snapshots a selection names (or all of them), narrowed by the filter,
 * oldest first. A manifest that cannot be read is reported through
 * `onUnreadable` and left out.
 */
export async function selectSnapshots(
  repo: Repository,
  selection: SnapshotSelection,
  onUnreadable: (unreadable: { id: string; error: string }) => void,
): Promise<Snapshot[]> {
  let chosen: Snapshot[];
  if (selection.refs.length > 0) {
    chosen = await selectSnapshotList(repo, selection.refs);
  } else {
    const listed = await repo.listSnapshots();
    for (const u of listed.unreadable) onUnreadable(u);
    chosen = listed.snapshots;
  }
  return filterSnapshots(chosen, selection).sort((a, b) => a.time.localeCompare(b.time) || a.id.localeCompare(b.id));
}

export type GroupField = 'host' | 'paths' | 'plan' | 'tags';

/** The fields of `fields` a snapshot is grouped by (forget's groups, `snapshots --group-by`). */
export function groupKey(snapshot: Snapshot, fields: GroupField[]): Record<string, unknown> {
  const key: Record<string, unknown> = {};
  for (const field of fields) {
    if (field === 'host') key.host = snapshot.host;
    else if (field === 'paths') key.paths = [...snapshot.paths].sort();
    else if (field === 'plan') key.plan = snapshot.plan ?? null;
    else key.tags = [...snapshot.tags].sort();
  }
  return key;
}

export interface SnapshotGroup {
  group: Record<string, unknown>;
  snapshots: Snapshot[];
}

/** Snapshots grouped by host, paths, plan and/or tags (tags as a sorted set), groups in order of their oldest snapshot. */
export function groupSnapshots(snapshots: Snapshot[], fields: GroupField[]): SnapshotGroup[] {
  const groups = new Map<string, SnapshotGroup>();
  for (const s of snapshots) {
    const group = groupKey(s, fields);
    const key = JSON.stringify(group);
    const found = groups.get(key) ?? { group, snapshots: [] };
    found.snapshots.push(s);
    groups.set(key, found);
  }
  return [...groups.values()];
}

export function parseGroupBy(text: string): GroupField[] {
  const fields = text
    .split(',')
    .map((f) => f.trim())
    .filter(Boolean);
  for (const f of fields)
    if (!['host', 'paths', 'plan', 'tags'].includes(f))
      throw new CairnError('Cairn.Usage', `cannot group by ${JSON.stringify(f)}`, { hint: 'use host, paths, plan and/or tags' });
  return fields as GroupField[];
}
