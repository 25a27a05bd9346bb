import { CairnError } from '../core/errors.ts';

/**
 * The shapes of the Storage contract's errors that both cloud backends give;
 * each backend's one translation function decides which applies (from its
 * SDK's error names and statuses) and adds its provider's hint.
 */

export type Operation = 'read' | 'write' | 'stat' | 'list' | 'delete';

/** `read packs/… in s3://bucket/prefix`: how every message names what failed. */
export function describeOperation(operation: Operation, key: string, location: string): string {
  return `${operation} ${key} in ${location}`;
}

export function missingBucketError(bucket: string, where: string, hint: string, cause?: unknown): CairnError {
  return new CairnError('Cairn.Storage', `the bucket ${bucket} does not exist (${where})`, { hint, cause });
}

export function credentialsError(where: string, what: string, hint: string, cause: unknown): CairnError {
  return new CairnError('Cairn.Storage', `${where}: ${what}`, { hint, cause });
}

/** `object` names the object as the provider calls it: "key cairn/packs/…" on S3, "object cairn/packs/…" on GCS. */
export function accessDeniedError(where: string, bucket: string, object: string, hint: string, cause: unknown): CairnError {
  return new CairnError('Cairn.Storage', `access denied: ${where} (bucket ${bucket}, ${object})`, { hint, cause });
}

/**
 * Any other failure, after the retries: the provider's message and details
 * (status, attempts); `transient` (5xx, throttling, network) adds the advice
 * to run again, since a failed write leaves no object.
 */
export function serviceFailure(
  where: string,
  message: string,
  details: Array<string | undefined>,
  transient: { service: string } | undefined,
  cause: unknown,
): CairnError {
  const shown = details.filter((detail): detail is string => detail !== undefined && detail !== '');
  return new CairnError('Cairn.Storage', `${where}: ${message}${shown.length > 0 ? ` (${shown.join(', ')})` : ''}`, {
    ...(transient
      ? {
          hint: `${transient.service} or the network kept failing through the retries; run the command again later (a failed write leaves no object)`,
        }
      : {}),
    cause,
  });
}
