import { readFile } from 'node:fs/promises';
import { warnIfExposed } from '../core/secret-file.ts';
import { recordAwsCalls } from '../core/aws-call-record.ts';
import { CairnError, errorMessage } from '../core/errors.ts';
import { httpHandlerOptions } from './proxy.ts';
import { ssmFailure } from './ssm-errors.ts';

/**
 * Where a GCS repository's service-account key comes from when the URL names
 * one: a JSON file (`key-file`) or an SSM Parameter Store SecureString
 * (`key-ssm`, for hosts on AWS that back up to GCS). Only service-account keys
 * are accepted; other credential kinds go through Application Default
 * Credentials.
 */

/** What reads the SSM parameter holding a key: the real SSMClient, or a stand-in with its interface in tests. */
export interface ParameterReader {
  send(command: { input: { Name?: string; WithDecryption?: boolean } }): Promise<{ Parameter?: { Value?: string } }>;
}

export async function readKeyFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    throw new CairnError('Cairn.Storage', `cannot read the GCS key file ${path}: ${errorMessage(cause)}`, {
      hint: 'fix key-file in the repository URL; the file holds a service-account key JSON',
      cause,
    });
  }
  await warnIfExposed(path, 'the GCS key file');
  return parseCredentials(text, `the key file ${path}`);
}

export async function readKeyFromSsm(name: string, reader: ParameterReader | undefined): Promise<Record<string, unknown>> {
  let value: string | undefined;
  try {
    let ssm = reader;
    if (!ssm) {
      const { SSMClient } = await import('@aws-sdk/client-ssm');
      ssm = recordAwsCalls(new SSMClient({ requestHandler: httpHandlerOptions(process.env) }));
    }
    const { GetParameterCommand } = await import('@aws-sdk/client-ssm');
    const out = await ssm.send(new GetParameterCommand({ Name: name, WithDecryption: true }));
    value = out.Parameter?.Value;
  } catch (cause) {
    const hint = {
      missing: `create the SecureString parameter ${name} holding the service-account key JSON, or fix key-ssm in the repository URL`,
      denied: `the AWS identity in use needs ssm:GetParameter on the parameter ${name} (and kms:Decrypt on its key)`,
      other: 'check AWS_REGION and the AWS credentials; the agent reads the parameter with ssm:GetParameter',
    }[ssmFailure(cause)];
    throw new CairnError('Cairn.Storage', `cannot read the GCS key from the SSM parameter ${name}: ${errorMessage(cause)}`, {
      hint,
      cause,
    });
  }
  if (value === undefined)
    throw new CairnError('Cairn.Storage', `the SSM parameter ${name} has no value`, { hint: 'store the service-account key JSON in it' });
  return parseCredentials(value, `the SSM parameter ${name}`);
}

function parseCredentials(text: string, where: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    // Never repeat the text: it is a secret.
    throw new CairnError('Cairn.Storage', `${where} is not JSON`, {
      hint: 'it must hold a service-account key JSON as downloaded from the console',
      cause,
    });
  }
  const key = json as { type?: unknown; client_email?: unknown; private_key?: unknown } | null;
  if (
    typeof key !== 'object' ||
    key === null ||
    key.type !== 'service_account' ||
    typeof key.client_email !== 'string' ||
    typeof key.private_key !== 'string'
  ) {
    throw new CairnError(
      'Cairn.Storage',
      `${where} is not a service-account key (type "service_account" with client_email and private_key)`,
      {
        hint: 'store the service-account key JSON as downloaded from the console; for other credential kinds use GOOGLE_APPLICATION_CREDENTIALS (Application Default Credentials)',
      },
    );
  }
  return json as Record<string, unknown>;
}

/**
 * google-auth-library prints a deprecation notice for the `credentials` option
 * on stderr (it concerns unvalidated external configs; we accept only
 * service-account keys). Building its JWT client ourselves would need
 * google-auth-library as a direct dependency; until then, that one line is
 * kept off the CLI's stderr.
 */
export function withoutCredentialsNotice<T>(make: () => T): T {
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].startsWith('The `credentials` option is deprecated')) return;
    warn.apply(console, args);
  };
  try {
    return make();
  } finally {
    console.warn = warn;
  }
}
