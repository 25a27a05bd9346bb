import { CairnError } from '../agent/core/errors.ts';
import { LEASE_KEY, ORCHESTRATION_PREFIX } from '../agent/core/layout.ts';
import type { RecordSeal } from '../agent/core/run-lease.ts';
import type { DeletableStorage, ObjectInfo, PutOptions } from '../agent/core/storage.ts';

/**
 * The run lease and run records of one host of an `each` plan (docs/orchestration.md, "Plans
 * with several hosts"): the same sealed records as a plan's (agent/core/run-lease.ts), kept
 * under `orchestration/hosts/<instanceId>/`, so a host whose backup is still running skips
 * only its own next run, never the other hosts'. A view of the plan's storage that moves
 * `orchestration/…` there, and a seal over the moved name, so a record sealed for one host
 * does not verify in another host's place.
 */

const INSTANCE = /^(?:i-[0-9a-f]{8,17}|mi-[0-9a-f]{17})$/;

export function isInstanceId(value: string): boolean {
  return INSTANCE.test(value);
}

/** `orchestration/hosts/<instanceId>/`. */
export function hostRecordsPrefix(instanceId: string): string {
  if (!isInstanceId(instanceId))
    throw new CairnError('Cairn.InvalidInput', `instanceId: ${JSON.stringify(instanceId)} is not an instance id`);
  return `${ORCHESTRATION_PREFIX}hosts/${instanceId}/`;
}

/** Where one host's run lease lives. */
export function hostLeaseKey(instanceId: string): string {
  return moved(hostRecordsPrefix(instanceId), LEASE_KEY);
}

function moved(prefix: string, key: string): string {
  if (!key.startsWith(ORCHESTRATION_PREFIX))
    throw new CairnError('Cairn.Failure', `a host's run records live under ${ORCHESTRATION_PREFIX}, not at ${key}`);
  return `${prefix}${key.slice(ORCHESTRATION_PREFIX.length)}`;
}

/** The plan's storage as the run lease code sees it for one host: its records under the host's prefix. */
export function hostRecordsStorage(storage: DeletableStorage, instanceId: string): DeletableStorage {
  const prefix = hostRecordsPrefix(instanceId);
  const at = (key: string): string => moved(prefix, key);
  return {
    location: `${storage.location} (${prefix})`,
    atomicCreate: storage.atomicCreate,
    transform: storage.transform,
    get: (key: string) => storage.get(at(key)),
    getRange: (key: string, offset: number, length: number) => storage.getRange(at(key), offset, length),
    put: (key: string, data: Buffer, options?: PutOptions) => storage.put(at(key), data, options),
    stat: (key: string) => storage.stat(at(key)),
    delete: (key: string) => storage.delete(at(key)),
    async *list(listPrefix: string): AsyncIterable<ObjectInfo> {
      for await (const info of storage.list(at(listPrefix)))
        yield { ...info, key: `${ORCHESTRATION_PREFIX}${info.key.slice(prefix.length)}` };
    },
  };
}

/** The control plane's seal over the name the record really has (the host's), not the name the lease code uses. */
export function hostRecordsSeal(seal: RecordSeal, instanceId: string): RecordSeal {
  const prefix = hostRecordsPrefix(instanceId);
  return {
    sign: (name, json) => seal.sign(moved(prefix, name), json),
    verify: (name, json, given) => seal.verify(moved(prefix, name), json, given),
  };
}
