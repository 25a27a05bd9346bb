import { CairnError } from '../agent/core/errors.ts';
import { ORCHESTRATION_PREFIX } from '../agent/core/layout.ts';
import { INSTANCE_TAG_PREFIX, sourceOf } from '../agent/core/snapshot.ts';
import type { RecordSeal } from '../agent/core/run-lease.ts';
import type { Storage } from '../agent/core/storage.ts';
import { hostRecordsPrefix, isInstanceId } from './host-records.ts';

/**
 * Which instance made a snapshot of an `each` plan, by the control plane's word (docs/orchestration.md,
 * "Plans with several hosts"). Every host of the plan holds the repository key, so a manifest's
 * `instance:<id>` tag is the writer's claim: host A could write manifests tagged with B's id, and
 * retention (grouping by that tag) forgot B's real snapshots for them while a restore for B picked
 * A's. finalize-backup, which checked the manifest the run on an instance reported, writes
 * `orchestration/hosts/<instanceId>/snapshots/<snapshotId>` (sealed like the run records, over
 * that full name, so it does not verify in another instance's place; hosts are denied writing
 * under orchestration/). A tagged snapshot counts for its instance only when that
 * record names the same instance; otherwise it is kept and never counted (retention), never chosen
 * for that instance (restore planning), and no sign of its freshness.
 */

/** `<instance>/snapshots/<snapshot>` below the hosts' records; the instance id is checked by isInstanceId. */
const ATTESTATION = /^([^/]+)\/snapshots\/([0-9a-f]{64})$/;
const HOSTS_PREFIX = `${ORCHESTRATION_PREFIX}hosts/`;

export function attestationKey(instanceId: string, snapshotId: string): string {
  return `${hostRecordsPrefix(instanceId)}snapshots/${snapshotId}`;
}

/** Records that the run on `instanceId` made `snapshotId` (create-if-absent: a retried finalize finds it there). */
export async function attestSnapshot(storage: Storage, seal: RecordSeal, instanceId: string, snapshotId: string): Promise<void> {
  const name = attestationKey(instanceId, snapshotId);
  const json = JSON.stringify({ snapshotId, instanceId });
  await storage.put(name, Buffer.from(`${seal.sign(name, json)}\n${json}`), { ifAbsent: true }).catch((error: unknown) => {
    if (!(error instanceof CairnError && error.code === 'Cairn.AlreadyExists')) throw error;
  });
}

/**
 * Snapshot id → the instance whose run made it. With `seal` (functions that hold the control plane's
 * key), a record counts only if its seal verifies; without it (restore planning, freshness), its
 * place is what vouches for it: only the control plane may write under orchestration/. A snapshot
 * recorded for two instances counts for neither.
 */
export async function attestedInstances(
  storage: Storage,
  seal?: RecordSeal,
  warn?: (message: string) => void,
): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  const conflicting = new Set<string>();
  for await (const object of storage.list(HOSTS_PREFIX)) {
    const match = ATTESTATION.exec(object.key.slice(HOSTS_PREFIX.length));
    if (!match || !isInstanceId(match[1] as string)) continue;
    const [, instanceId, snapshotId] = match as unknown as [string, string, string];
    if (seal && !(await sealed(storage, seal, object.key, instanceId, snapshotId))) {
      warn?.(`${object.key} was ignored: its seal does not verify, so the control plane did not write it`);
      continue;
    }
    const earlier = found.get(snapshotId);
    if (earlier !== undefined && earlier !== instanceId) conflicting.add(snapshotId);
    found.set(snapshotId, instanceId);
  }
  for (const id of conflicting) {
    found.delete(id);
    warn?.(`snapshot ${id.slice(0, 8)} is recorded as made by more than one instance: it counts for none`);
  }
  return found;
}

async function sealed(storage: Storage, seal: RecordSeal, name: string, instanceId: string, snapshotId: string): Promise<boolean> {
  const raw = (await storage.get(name)).toString('utf8');
  const newline = raw.indexOf('\n');
  if (newline < 0) return false;
  const json = raw.slice(newline + 1);
  if (!seal.verify(name, json, raw.slice(0, newline))) return false;
  try {
    const record = JSON.parse(json) as { snapshotId?: unknown; instanceId?: unknown };
    return record.snapshotId === snapshotId && record.instanceId === instanceId;
  } catch {
    return false;
  }
}

/**
 * Where an `each` plan's snapshot counts: `instance:<id>` when its tag and the control plane's record
 * agree, `host:<name>` (as core/snapshot.ts sourceOf) when it carries no instance tag (a backup made by hand on the host), and
 * undefined (kept, never counted) when it claims an instance the record does not confirm.
 */
export function attestedSource(
  snapshot: { id: string; host: string; tags: string[] },
  attested: ReadonlyMap<string, string>,
): string | undefined {
  const claimed = snapshot.tags.find((t) => t.startsWith(INSTANCE_TAG_PREFIX));
  if (claimed === undefined) return sourceOf(snapshot);
  const instance = attested.get(snapshot.id);
  return instance !== undefined && claimed === `${INSTANCE_TAG_PREFIX}${instance}` ? claimed : undefined;
}
