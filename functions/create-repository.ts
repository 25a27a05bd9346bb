import { CallBuilder, KEY_TEMPLATES, REPOSITORY_CONTEXT_KEY, type AwsCall, type CallScope } from '../agent/core/aws-calls.ts';
import { CairnError } from '../agent/core/errors.ts';
import { parseRepositoryConfig } from '../agent/core/config.ts';
import { recordEvent } from '../agent/core/history.ts';
import { wrapMasterKey, type KeyFile } from '../agent/core/keyfile.ts';
import { CONFIG_KEY, KEY_CHECK_KEY } from '../agent/core/layout.ts';
import { PLAN_CONTEXT_KEY } from '../agent/core/orchestration.ts';
import type { Plan } from '../agent/core/plan.ts';
import { Repository } from '../agent/core/repository.ts';
import type { Storage } from '../agent/core/storage.ts';
import { TOOL } from '../agent/core/version.ts';
import { kmsWrapMasterKey } from '../agent/keys/kms.ts';
import { controlPlaneWho, handlerOf, loadPlan, logger, planSecret, planStorage } from './runtime.ts';

export interface CreateRepositoryEvent {
  planId?: unknown;
}

export interface RepositoryEnsured {
  planId: string;
  /** True when this call made the repository; false when it was there already (or another call made it first). */
  created: boolean;
  repositoryId: string;
  /** How the master key is wrapped: the plan's key source. */
  keySource: 'passphrase' | 'kms';
}

/**
 * First state of the Backup machine (docs/orchestration.md, "Repository creation"): makes the
 * plan's repository when its prefix holds none, with the plan's key source, so a fresh
 * deployment's first scheduled backup needs no manual `cairn init`. Hosts never create
 * repositories: wrapping a master key under a KMS key needs kms:Encrypt, which only this
 * function's role has (docs/keys.md). Idempotent: an existing repository is left as it is
 * (its config is only read), and two calls racing are settled by the config's create-if-absent.
 */
export async function createRepository(event: CreateRepositoryEvent): Promise<RepositoryEnsured> {
  const plan = await loadPlan(event.planId);
  return ensureRepository(plan, await planStorage(plan));
}

/** The plan's repository in `storage`, made if absent; `secret` reads the passphrase parameter (Parameter Store in Lambda). */
export async function ensureRepository(
  plan: Plan,
  storage: Storage,
  secret: (name: string) => Promise<string> = planSecret,
): Promise<RepositoryEnsured> {
  const keySource = 'kmsKeyArn' in plan.keySource ? 'kms' : 'passphrase';
  const existing = await existingRepositoryId(storage);
  if (existing !== undefined) return { planId: plan.id, created: false, repositoryId: existing, keySource };

  const who = controlPlaneWho('create-repository');
  let repo: Repository;
  try {
    repo = await Repository.init(storage, await keyFilesFor(plan, who, secret), who);
  } catch (error) {
    // Another execution (a Backup and a Retention run of a new plan) got to an object init creates if absent
    // first; its config, the last object written, follows within moments.
    if (error instanceof CairnError && error.code === 'Cairn.AlreadyExists') {
      const raced = await awaitConfig(storage);
      if (raced !== undefined) return { planId: plan.id, created: false, repositoryId: raced, keySource };
      throw new CairnError('Cairn.Locked', `another run is creating the repository of plan ${plan.id} at ${storage.location}`, {
        hint: 'the next run finds it; if this repeats, look for a half-made repository (key files and no config) under the prefix',
        cause: error,
      });
    }
    throw error;
  }
  await recordEvent(repo, who, TOOL, 'orchestration.repository.created', { planId: plan.id, keySource, location: storage.location });
  logger.info('created the plan repository', { planId: plan.id, repositoryId: repo.id, keySource });
  return { planId: plan.id, created: true, repositoryId: repo.id, keySource };
}

/** The id in the repository's config, or undefined when the prefix holds no repository. A damaged config is an error, never overwritten. */
async function existingRepositoryId(storage: Storage): Promise<string | undefined> {
  if ((await storage.stat(CONFIG_KEY)) === undefined) return undefined;
  return parseRepositoryConfig(await storage.get(CONFIG_KEY), storage.location).id;
}

/** The config a racing creator is about to write: six looks over about twelve seconds. */
async function awaitConfig(storage: Storage): Promise<string | undefined> {
  for (let attempt = 0; attempt < 6; attempt++) {
    const id = await existingRepositoryId(storage);
    if (id !== undefined) return id;
    await new Promise((resolve) => setTimeout(resolve, 200 * 2 ** attempt));
  }
  return undefined;
}

/** The plan's key source as Repository.init's wrap: the passphrase from its SecureString, or the KMS key. */
async function keyFilesFor(
  plan: Plan,
  who: { host: string; user: string },
  secret: (name: string) => Promise<string>,
): Promise<(master: Buffer, repositoryId: string) => Promise<KeyFile[]>> {
  const source = plan.keySource;
  if ('passphraseParameter' in source) {
    const passphrase = await secret(source.passphraseParameter);
    return async (master, repositoryId) => [await wrapMasterKey(master, passphrase, repositoryId, who)];
  }
  // Two wrappings: one naming the plan (the only one a host's grant decrypts) and one without it, for an
  // operator's `cairn` run, which does not know the plan (docs/cdk.md, "Repository creation").
  return async (master, repositoryId) => [
    await kmsWrapMasterKey(master, source.kmsKeyArn, repositoryId, who, plan.id),
    await kmsWrapMasterKey(master, source.kmsKeyArn, repositoryId, who),
  ];
}

/**
 * The AWS calls this function makes for one plan (the inventory agent/core/aws-calls.ts keeps for
 * the other functions; test/cdk/iam-evaluation.test.ts evaluates these against its role): the plan
 * and its passphrase, the config's stat and read, and for a new repository the KMS wrappings and
 * the create-if-absent writes of key files, key check, config and the first history record.
 */
export function createRepositoryCalls(scope: CallScope, planId: string): AwsCall[] {
  const b = new CallBuilder(scope, 'control');
  const key = scope.repositoryKeyArn;
  const encrypt = (context: Record<string, string>): AwsCall => ({ api: 'Encrypt', action: 'kms:Encrypt', resource: key ?? '', context });
  const repository = { [`kms:EncryptionContext:${REPOSITORY_CONTEXT_KEY}`]: scope.repositoryId };
  return [
    ...b.planAndSecrets(),
    ...b.stat(CONFIG_KEY),
    ...b.headBucket(),
    ...b.read(CONFIG_KEY),
    ...(key === undefined ? [] : [encrypt({ ...repository, [`kms:EncryptionContext:${PLAN_CONTEXT_KEY}`]: planId }), encrypt(repository)]),
    ...b.create(KEY_TEMPLATES.keyFile),
    ...b.create(KEY_CHECK_KEY),
    ...b.create(CONFIG_KEY),
    ...b.create(KEY_TEMPLATES.history),
  ];
}

export const handler = handlerOf('create-repository', createRepository);
