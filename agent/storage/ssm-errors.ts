/**
 * What an SSM GetParameter failure means, for every reader of Parameter Store
 * (the GCS key of `key-ssm`; the orchestration's plan and passphrase
 * parameters can use it too): the parameter is missing, this identity may not
 * read it (or decrypt it), or something else (region, credentials, network).
 */
export type SsmFailure = 'missing' | 'denied' | 'other';

export function ssmFailure(error: unknown): SsmFailure {
  const name = typeof error === 'object' && error !== null ? (error as { name?: unknown }).name : undefined;
  if (name === 'ParameterNotFound') return 'missing';
  if (name === 'AccessDeniedException') return 'denied';
  return 'other';
}
