import { readDamage } from '../core/damage.ts';
import { CairnError } from '../core/errors.ts';
import { PINS_PREFIX, snapshotKey } from '../core/layout.ts';
import { pinnedIds } from '../core/pins.ts';
import type { Repository, Who } from '../core/repository.ts';
import {
  applyPolicy,
  isEmptyPolicy,
  keepAllIfUnsure,
  retentionCandidate,
  type RetentionDecision,
  type RetentionPolicy,
} from '../core/retention.ts';
import type { Snapshot } from '../core/snapshot.ts';
import type { DeletableStorage } from '../core/storage.ts';
import type { ProgressListener } from '../progress/progress.ts';
import { record, underLock, operationContext, type OperationContext } from './operation.ts';
import { groupKey, selectSnapshot, selectSnapshotList, type GroupField } from './snapshot-selector.ts';

export type { GroupField };

export interface ForgetOptions {
  policy: RetentionPolicy;
  groupBy: GroupField[];
  dryRun: boolean;
  who: Who;
  progress: ProgressListener;
  leaseMs?: number | undefined;
  lockWaitMs?: number | undefined;
}

export interface ForgetGroup {
  group: Record<string, unknown>;
  keep: RetentionDecision[];
  remove: RetentionDecision[];
}

export { pinnedIds };

/**
 * Applies the retention policy to each group of snapshots (by default one
 * group per plan, host and paths) and deletes the manifests it does not keep.
 * The data goes only with `prune`. Runs under the exclusive lock unless dry.
 * A snapshot a damage marker names, tagged `damaged` or partial is never
 * counted as good; while a damage marker cannot be read nothing is removed.
 */
export async function forget(repo: Repository, storage: DeletableStorage, options: ForgetOptions): Promise<ForgetGroup[]> {
  if (isEmptyPolicy(options.policy)) {
    throw new CairnError('Cairn.Usage', 'no retention rule given: forget would keep only the newest snapshot of each group', {
      hint: 'give at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-within, --keep-tag',
    });
  }
  const ctx = operationContext(repo, options);
  return underLock(ctx, 'forget', !options.dryRun, async (lease) => {
    const { snapshots, unreadable } = await repo.listSnapshots();
    for (const u of unreadable) options.progress.warn(`snapshot ${u.id} cannot be read and is left alone: ${u.error}`);
    const pins = await pinnedIds(repo);
    const damage = await readDamage(repo, (message) => options.progress.warn(message));
    const groups = new Map<string, Snapshot[]>();
    for (const s of snapshots) {
      const key = JSON.stringify(groupKey(s, options.groupBy));
      groups.set(key, [...(groups.get(key) ?? []), s]);
    }
    const result: ForgetGroup[] = [];
    for (const [key, members] of groups) {
      const decision = applyPolicy(
        members.map((s) => retentionCandidate(s, pins, damage)),
        options.policy,
      );
      result.push({ group: JSON.parse(key) as Record<string, unknown>, ...keepAllIfUnsure(decision, damage) });
    }
    if (!options.dryRun) {
      for (const group of result) {
        for (const d of group.remove) {
          lease.assertHeld();
          await storage.delete(snapshotKey(d.id));
        }
      }
      await record(ctx, 'forget', {
        policy: options.policy,
        removed: result.flatMap((g) => g.remove.map((d) => ({ id: d.id, time: d.time, reasons: d.reasons }))),
        kept: result.flatMap((g) => g.keep.map((d) => ({ id: d.id, reasons: d.reasons }))),
      });
    }
    return result;
  });
}

export async function setPin(
  repo: Repository,
  storage: DeletableStorage,
  ref: string,
  pinned: boolean,
  ctx: OperationContext,
): Promise<Snapshot> {
  const snapshot = await selectSnapshot(repo, ref);
  const name = `${PINS_PREFIX}${snapshot.id}`;
  if (pinned) {
    if (!(await storage.stat(name))) {
      await storage.put(
        name,
        repo.seal('pin', name, Buffer.from(JSON.stringify({ snapshot: snapshot.id, time: new Date().toISOString(), by: ctx.who }))),
        { ifAbsent: true },
      );
    }
  } else {
    await storage.delete(name);
  }
  await record(ctx, pinned ? 'pin' : 'unpin', { snapshotId: snapshot.id });
  return snapshot;
}

export interface ForgetIdsOptions {
  /** Snapshot ids, unique prefixes (at least 4 hex digits) or "latest". */
  ids: string[];
  dryRun: boolean;
  /** Forget pinned snapshots too (their pins go with them). */
  force: boolean;
  who: Who;
  progress: ProgressListener;
  leaseMs?: number | undefined;
  lockWaitMs?: number | undefined;
}

export interface ForgottenSnapshot {
  id: string;
  /** Empty for a manifest that could not be read. */
  time: string;
  host: string;
  pinned: boolean;
  /** The manifest could not be read: forgetting it by id is how garbage collection runs again. */
  unreadable?: true;
}

/**
 * Deletes the manifests of the snapshots named, under the same exclusive lock
 * and delete path as the policy: every reference is resolved (an ambiguous
 * prefix is refused) and pins are checked before anything is deleted.
 */
export async function forgetIds(repo: Repository, storage: DeletableStorage, options: ForgetIdsOptions): Promise<ForgottenSnapshot[]> {
  if (options.ids.length === 0)
    throw new CairnError('Cairn.Usage', 'no snapshot given', {
      hint: 'name snapshots by id or prefix, or give a retention policy (--keep-*)',
    });
  const ctx = operationContext(repo, options);
  return underLock(ctx, 'forget', !options.dryRun, async (lease) => {
    const { readable, unreadable } = await splitUnreadable(repo, options.ids);
    const targets = await selectSnapshotList(repo, readable);
    const pins = await pinnedIds(repo);
    const result: ForgottenSnapshot[] = [
      ...targets.map((s) => ({ id: s.id, time: s.time, host: s.host, pinned: pins.has(s.id) })),
      ...unreadable.map((id) => ({ id, time: '', host: '', pinned: pins.has(id), unreadable: true as const })),
    ];
    const pinned = result.filter((s) => s.pinned);
    if (pinned.length > 0 && !options.force) {
      throw new CairnError(
        'Cairn.Usage',
        `snapshot(s) ${pinned.map((s) => s.id.slice(0, 8)).join(', ')} are pinned; nothing was forgotten`,
        {
          hint: 'unpin them first (`cairn unpin ID`), or pass --force',
        },
      );
    }
    if (!options.dryRun) {
      for (const s of result) {
        lease.assertHeld();
        await storage.delete(snapshotKey(s.id));
        if (s.pinned) await storage.delete(`${PINS_PREFIX}${s.id}`);
      }
      await record(ctx, 'forget', { ids: options.ids, removed: result, forced: options.force });
    }
    return result;
  });
}

/**
 * The references that name exactly one manifest which cannot be read (junk under snapshots/, or a
 * damaged manifest): they cannot be resolved like the others, yet forgetting them is what garbage
 * collection asks for before it runs again. Everything else is resolved as usual.
 */
async function splitUnreadable(repo: Repository, refs: string[]): Promise<{ readable: string[]; unreadable: string[] }> {
  const ids = await repo.listSnapshotIds();
  const readable: string[] = [];
  const unreadable = new Set<string>();
  for (const ref of refs) {
    const matches = /^[0-9a-f]{4,64}$/i.test(ref) ? ids.filter((id) => id.startsWith(ref.toLowerCase())) : [];
    const only = matches.length === 1 ? matches[0] : undefined;
    if (only !== undefined) {
      try {
        await repo.readSnapshot(only);
      } catch (error) {
        if (error instanceof CairnError && error.code === 'Cairn.Damaged') {
          unreadable.add(only);
          continue;
        }
        throw error;
      }
    }
    readable.push(ref);
  }
  return { readable, unreadable: [...unreadable] };
}
