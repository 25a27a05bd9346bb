import { z } from 'zod';
import { CairnError } from './errors.ts';

/**
 * The access key of an S3-compatible endpoint (MinIO, Ceph RGW) a plan's repository is at: the
 * JSON its SecureString parameter holds (docs/cdk.md, "S3-compatible endpoints"):
 *
 *   {"accessKeyId": "…", "secretAccessKey": "…"}        (and "sessionToken" for temporary keys)
 *
 * The hosts and the functions read it from Parameter Store and hand it to their S3 client as
 * explicit credentials: never an argument, an environment variable or a log line. Pure.
 */
export interface EndpointCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export const ENDPOINT_CREDENTIALS_SHAPE = '{"accessKeyId": "…", "secretAccessKey": "…"} (and "sessionToken" for temporary keys)';

const token = z.string().min(1).max(4096).regex(/^\S+$/);
const schema = z.strictObject({ accessKeyId: token, secretAccessKey: token, sessionToken: token.optional() });

/**
 * Parses the parameter's value. A failure names the parameter and the shape it must have, and
 * never repeats the value (it may be a secret written the wrong way).
 */
export function parseEndpointCredentials(value: string, parameter: string): EndpointCredentials {
  const problem = (what: string): CairnError =>
    new CairnError('Cairn.Config', `parameter ${parameter} ${what}, so the repository's S3-compatible endpoint cannot be signed for`, {
      hint: `put ${ENDPOINT_CREDENTIALS_SHAPE} in it, as a SecureString with Cairn's parameter key (docs/cdk.md, "S3-compatible endpoints")`,
    });
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch {
    throw problem('does not hold JSON');
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    // Field names only: an issue's message could quote the value.
    const fields = [...new Set(parsed.error.issues.map((i) => (i.path.length > 0 ? String(i.path[0]) : 'the object')))];
    throw problem(`does not hold an access key (check ${fields.join(', ')})`);
  }
  const { accessKeyId, secretAccessKey, sessionToken } = parsed.data;
  return sessionToken === undefined ? { accessKeyId, secretAccessKey } : { accessKeyId, secretAccessKey, sessionToken };
}
