import type { KMSClient } from '@aws-sdk/client-kms';
import { recordAwsCalls } from '../core/aws-call-record.ts';
import { KEY_BYTES } from '../core/crypto.ts';
import { CairnError, errorMessage, type ErrorCode } from '../core/errors.ts';
import { kmsEncryptionContext, kmsKeyFile, kmsRegion, type KmsKeyFile } from '../core/keyfile.ts';
import { PLAN_CONTEXT_KEY } from '../core/orchestration.ts';

/**
 * The master key wrapped by AWS KMS (docs/keys.md). The real KMSClient: the
 * region comes from the key ARN, credentials from the SDK's standard chain,
 * and the endpoint from AWS_ENDPOINT_URL_KMS / AWS_ENDPOINT_URL when set
 * (the SDK reads those itself). Every call carries the encryption context
 * `{ "cairn:repository": <id> }`, so a key file copied to another repository
 * does not decrypt there, and CloudTrail names the repository. A key file the
 * control plane wraps for a plan also carries `{ "cairn:plan": <plan id> }`,
 * the value a host's kms:Decrypt grant is conditioned on; the agent sends it
 * when it opens its plan's repository (agent/orchestration/plan-source.ts).
 */
function contextOf(repositoryId: string, planId: string | undefined): Record<string, string> {
  return { ...kmsEncryptionContext(repositoryId), ...(planId === undefined ? {} : { [PLAN_CONTEXT_KEY]: planId }) };
}

const clients = new Map<string, KMSClient>();

/** The SDK loads on first use, not at every `cairn` start (most commands never touch KMS). */
async function sdk(): Promise<typeof import('@aws-sdk/client-kms')> {
  return import('@aws-sdk/client-kms');
}

async function client(region: string): Promise<KMSClient> {
  let kms = clients.get(region);
  if (!kms) {
    const [{ KMSClient: Client }, { NodeHttpHandler }] = await Promise.all([sdk(), import('@smithy/node-http-handler')]);
    kms = recordAwsCalls(
      new Client({
        region,
        maxAttempts: 3,
        requestHandler: new NodeHttpHandler({ connectionTimeout: 5_000, requestTimeout: 20_000 }),
      }),
    );
    clients.set(region, kms);
  }
  return kms;
}

/** KMS Encrypt of the master key: needs kms:Encrypt on the key. */
export async function kmsWrapMasterKey(
  master: Buffer,
  keyArn: string,
  repositoryId: string,
  owner: { host: string; user: string },
  planId?: string,
): Promise<KmsKeyFile> {
  const region = kmsRegion(keyArn);
  let out;
  try {
    const { EncryptCommand } = await sdk();
    out = await (
      await client(region)
    ).send(new EncryptCommand({ KeyId: keyArn, Plaintext: master, EncryptionContext: contextOf(repositoryId, planId) }));
  } catch (error) {
    throw kmsError(error, keyArn, 'kms:Encrypt', repositoryId, planId);
  }
  if (!out.CiphertextBlob) throw new CairnError('Cairn.Failure', `KMS Encrypt with ${keyArn} returned no ciphertext`);
  // KMS reports the key's ARN even when an alias was given: store that, so Decrypt names the key itself.
  const resolved = out.KeyId && /^arn:/.test(out.KeyId) ? out.KeyId : keyArn;
  return kmsKeyFile(resolved, Buffer.from(out.CiphertextBlob), owner);
}

/** KMS Decrypt of one key file: needs kms:Decrypt on its key. Throws a CairnError naming the key. */
export async function kmsUnwrapMasterKey(file: KmsKeyFile, repositoryId: string, planId?: string): Promise<Buffer> {
  const region = kmsRegion(file.keyArn);
  let out;
  try {
    const { DecryptCommand } = await sdk();
    out = await (
      await client(region)
    ).send(
      new DecryptCommand({
        KeyId: file.keyArn,
        CiphertextBlob: Buffer.from(file.ciphertext, 'base64'),
        EncryptionContext: contextOf(repositoryId, planId),
      }),
    );
  } catch (error) {
    throw kmsError(error, file.keyArn, 'kms:Decrypt', repositoryId, planId);
  }
  const master = out.Plaintext ? Buffer.from(out.Plaintext) : undefined;
  if (!master || master.length !== KEY_BYTES) {
    throw new CairnError(
      'Cairn.Damaged',
      `KMS key ${file.keyArn} decrypted the key file to ${master?.length ?? 0} bytes, not a ${KEY_BYTES}-byte master key`,
    );
  }
  return master;
}

const refused: Record<string, string> = {
  AccessDeniedException: 'denied',
  DisabledException: 'is disabled',
  KMSInvalidStateException: 'is not usable (pending deletion or import)',
  NotFoundException: 'does not exist (deleted, or another account or region)',
  KeyUnavailableException: 'is unavailable',
  InvalidCiphertextException: 'cannot decrypt this key file with its encryption context',
  IncorrectKeyException: 'is not the key this key file was encrypted with',
  InvalidKeyUsageException: 'is not a symmetric ENCRYPT_DECRYPT key',
  UnrecognizedClientException: 'does not recognise the credentials (the security token is invalid)',
  InvalidSignatureException: 'rejected the request signature (check the secret key and the clock)',
  ExpiredTokenException: 'refused expired credentials',
};
const transient = new Set([
  'ThrottlingException',
  'KMSInternalException',
  'DependencyTimeoutException',
  'LimitExceededException',
  'TimeoutError',
  'RequestTimeout',
]);

/**
 * A KMS failure as a CairnError that names the key and the permission:
 * a refusal (access denied, disabled key, wrong context) is Cairn.WrongKey
 * (exit 12, retrying will not help); KMS that cannot be reached or answers
 * with a server fault after the SDK's retries is Cairn.Storage (exit 16, may
 * pass on a later try); missing credentials is Cairn.Usage (exit 2).
 */
export function kmsError(
  error: unknown,
  keyArn: string,
  permission: 'kms:Decrypt' | 'kms:Encrypt',
  repositoryId: string,
  planId?: string,
): CairnError {
  const name = error instanceof Error ? error.name : '';
  const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  const detail = errorMessage(error);
  const context = `encryption context ${JSON.stringify(contextOf(repositoryId, planId))}`;
  if (name === 'CredentialsProviderError' || /Could not load credentials/i.test(detail)) {
    return new CairnError('Cairn.Usage', `no AWS credentials to call KMS for key ${keyArn}: ${detail}`, {
      hint: `run with an instance role, AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY allowed ${permission} on ${keyArn}`,
      cause: error,
    });
  }
  const what = refused[name];
  if (what) {
    const code: ErrorCode = 'Cairn.WrongKey';
    return new CairnError(
      code,
      `KMS key ${keyArn} ${what}: ${permission} ${name === 'AccessDeniedException' ? 'was refused' : 'failed'} (${name}: ${detail})`,
      {
        hint:
          name === 'InvalidCiphertextException' || name === 'IncorrectKeyException'
            ? `the key file was made for another repository or key, or was altered; it needs ${permission} on ${keyArn} with the ${context}`
            : `allow ${permission} on ${keyArn} (key policy or IAM) for these credentials, with the ${context}; and check that the key is enabled`,
        cause: error,
      },
    );
  }
  if (transient.has(name) || status === undefined || status >= 500) {
    return new CairnError('Cairn.Storage', `KMS could not be reached for key ${keyArn} (${name || 'network error'}: ${detail})`, {
      hint: `check the network path to KMS in the key's region (or AWS_ENDPOINT_URL_KMS); the call needs ${permission} on ${keyArn}`,
      cause: error,
    });
  }
  return new CairnError('Cairn.Failure', `KMS ${permission} with key ${keyArn} failed: ${name}: ${detail}`, {
    hint: `the call needs ${permission} on ${keyArn} with the ${context}`,
    cause: error,
  });
}
