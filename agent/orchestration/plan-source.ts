import type { SSMClient } from '@aws-sdk/client-ssm';
import { recordAwsCalls } from '../core/aws-call-record.ts';
import { parseEndpointCredentials, type EndpointCredentials } from '../core/endpoint-credentials.ts';
import { CairnError, errorMessage } from '../core/errors.ts';
import type { Unlocker } from '../core/keyfile.ts';
import { endpointKeyParameter, parsePlan, type EndpointSide, type Plan } from '../core/plan.ts';
import { Repository } from '../core/repository.ts';
import type { Storage } from '../core/storage.ts';
import { kmsUnwrapMasterKey } from '../keys/kms.ts';

/**
 * The agent reads its plan and its secrets from Parameter Store itself
 * (docs/contracts.md, "Orchestration protocol"): nothing secret ever travels in the SSM command. The plan's
 * parameter prefix comes from the SSM document (CAIRN_PLAN_PARAMETER_PREFIX).
 * The control plane's functions read plans and passphrases through it too.
 */
export class PlanSource {
  private client: SSMClient | undefined;
  private readonly prefix: string;

  constructor(env: NodeJS.ProcessEnv, client?: SSMClient) {
    const prefix = env.CAIRN_PLAN_PARAMETER_PREFIX;
    if (!prefix || !/^\/[A-Za-z0-9_.\-/]+\/$/.test(prefix)) {
      throw new CairnError('Cairn.Config', 'CAIRN_PLAN_PARAMETER_PREFIX is not set (or not a parameter path ending in /)', {
        hint: 'the Cairn SSM document sets it; on a host by hand: export CAIRN_PLAN_PARAMETER_PREFIX=/cairn/<env>/plans/',
      });
    }
    this.prefix = prefix;
    this.client = client;
  }

  async plan(planId: string): Promise<Plan> {
    const name = `${this.prefix}${planId}`;
    const raw = await this.get(name, false);
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch (cause) {
      throw new CairnError('Cairn.Config', `parameter ${name} does not hold JSON`, { cause });
    }
    return parsePlan(json, `parameter ${name}`);
  }

  secret(name: string): Promise<string> {
    return this.get(name, true);
  }

  /**
   * The access key `side` signs with at the plan's S3-compatible endpoint (the hosts' or the control
   * plane's), from the SecureString parameter the plan names for it (docs/cdk.md, "S3-compatible
   * endpoints"), with the parameter's name for messages;
   * undefined when the repository is in AWS S3 (the caller's own role signs). The storage that
   * uses it is opened by the caller (agent/storage/s3-endpoint.ts): this layer opens no storage.
   */
  async endpointCredentials(plan: Plan, side: EndpointSide): Promise<{ value: EndpointCredentials; parameter: string } | undefined> {
    const parameter = endpointKeyParameter(plan.repository, side);
    if (parameter === undefined) return undefined;
    return { value: parseEndpointCredentials(await this.secret(parameter), parameter), parameter };
  }

  /**
   * Opens the plan's repository with its key source: the passphrase its SecureString parameter holds,
   * or its KMS key, asked with the plan in the encryption context (the host's grant is conditioned
   * on it: agent/keys/kms.ts). Key files the control plane wrapped without the plan (for operators'
   * `cairn` runs) are tried only after those, so a host refused them still opens its repository.
   */
  async openRepository(plan: Plan, storage: Storage): Promise<Repository> {
    if ('passphraseParameter' in plan.keySource) return Repository.open(storage, await this.secret(plan.keySource.passphraseParameter));
    return Repository.openWith(storage, planKmsUnlocker(plan.id));
  }

  private async get(name: string, decrypt: boolean): Promise<string> {
    let value: string | undefined;
    try {
      // The SDK loads on first use, not at every `cairn` start.
      const ssm = await import('@aws-sdk/client-ssm');
      this.client ??= recordAwsCalls(new ssm.SSMClient({}));
      value = (await this.client.send(new ssm.GetParameterCommand({ Name: name, WithDecryption: decrypt }))).Parameter?.Value;
    } catch (error) {
      const code = error instanceof Error ? error.name : '';
      if (code === 'ParameterNotFound')
        throw new CairnError('Cairn.Config', `parameter ${name} does not exist`, {
          hint: 'deploy the plan with the CDK app, or check the plan id',
          cause: error,
        });
      if (code === 'AccessDeniedException')
        throw new CairnError('Cairn.Config', `this host may not read parameter ${name}`, {
          hint: 'attach the Cairn host policy to the instance role',
          cause: error,
        });
      throw new CairnError('Cairn.Failure', `cannot read parameter ${name}: ${errorMessage(error)}`, { cause: error });
    }
    if (!value) throw new CairnError('Cairn.Config', `parameter ${name} is empty`);
    return value;
  }
}

/** Each KMS key file, newest first, with the plan in the context; then without it. The first that decrypts wins. */
export function planKmsUnlocker(planId: string): Unlocker {
  return async ({ config, keys, location }) => {
    const kms = keys.flatMap((k) => (k.file.kind === 'kms' ? [{ id: k.id, file: k.file }] : []));
    kms.sort((a, b) => b.file.created.localeCompare(a.file.created));
    if (kms.length === 0) {
      throw new CairnError('Cairn.WrongKey', `the repository at ${location} has no KMS key file, and plan ${planId} names only a KMS key`, {
        hint: 'add a KMS wrapping (`cairn key add --kms-key-id ARN`), or name a passphrase parameter in the plan',
      });
    }
    const failures: CairnError[] = [];
    for (const context of [planId, undefined]) {
      for (const key of kms) {
        try {
          return { master: await kmsUnwrapMasterKey(key.file, config.id, context), keyId: key.id };
        } catch (error) {
          failures.push(error instanceof CairnError ? error : new CairnError('Cairn.Failure', errorMessage(error), { cause: error }));
        }
      }
    }
    const first = failures[0] as CairnError;
    throw new CairnError(first.code, `no KMS key file opened the repository of plan ${planId}: ${first.message}`, {
      ...(first.hint ? { hint: first.hint } : {}),
      cause: first,
    });
  };
}
