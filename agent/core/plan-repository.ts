import { z } from 'zod';
import { parameterName, repositoryUrl } from './plan-fields.ts';

/**
 * A plan's repository: an AWS S3 prefix (the environment's bucket by default, reached with the
 * hosts' and functions' own roles), or a bucket at an S3-compatible endpoint (MinIO, Ceph RGW),
 * named in the URL form `--repo` takes (`s3://bucket/prefix?endpoint=https://…&path-style=true`)
 * and signed with access keys the plan names: SecureString parameters holding
 * `{"accessKeyId": …, "secretAccessKey": …}` (endpoint-credentials.ts; docs/cdk.md,
 * "S3-compatible endpoints"), one for the hosts (read, list, create: no delete) and one for the
 * control plane (which deletes, for retention and garbage collection): a host holding a key that
 * may delete could delete backups. Pure: the URL's options are read here, never opened.
 */

/** The URL options a deployed plan may give, all about an S3-compatible endpoint. */
export const ENDPOINT_OPTIONS: readonly string[] = ['endpoint', 'path-style', 'region'];

export interface RepositoryEndpoint {
  /** The endpoint's http(s) URL, as the URL's `endpoint=` gives it. */
  endpoint: string;
  /** The SecureString parameter holding the hosts' access key (no delete rights at the endpoint). */
  credentialsParameter: string;
  /** The SecureString parameter holding the control plane's access key (may delete). */
  controlCredentialsParameter: string;
}

type RepositoryFields = { url: string; credentialsParameter?: string | undefined; controlCredentialsParameter?: string | undefined };

const ENDPOINT_DOC = 'docs/cdk.md, "S3-compatible endpoints"';

/** The options after "?" of a repository URL, or undefined without any. */
function urlOptions(url: string): URLSearchParams | undefined {
  const at = url.indexOf('?');
  return at < 0 ? undefined : new URLSearchParams(url.slice(at + 1));
}

function checkRepository(repository: RepositoryFields, ctx: z.RefinementCtx): void {
  const issue = (path: string, message: string): void => ctx.addIssue({ code: 'custom', path: [path], message });
  const options = urlOptions(repository.url);
  if (options === undefined) {
    if (repository.credentialsParameter !== undefined)
      issue(
        'credentialsParameter',
        `is only for an S3-compatible endpoint (s3://bucket/prefix?endpoint=https://…): an AWS S3 repository is reached with the hosts' and functions' own roles (${ENDPOINT_DOC})`,
      );
    if (repository.controlCredentialsParameter !== undefined)
      issue(
        'controlCredentialsParameter',
        `is only for an S3-compatible endpoint (s3://bucket/prefix?endpoint=https://…): an AWS S3 repository is reached with the functions' own roles (${ENDPOINT_DOC})`,
      );
    return;
  }
  if (!repository.url.startsWith('s3://')) {
    issue('url', 'options after "?" are accepted only for an s3:// repository at an S3-compatible endpoint');
    return;
  }
  for (const name of options.keys()) {
    if (!ENDPOINT_OPTIONS.includes(name))
      issue('url', `option ${JSON.stringify(name)} is not accepted for a deployed plan (only ${ENDPOINT_OPTIONS.join(', ')})`);
  }
  const endpoint = options.get('endpoint');
  if (!endpoint) {
    issue('url', 'options after "?" are accepted only with endpoint=…: an AWS S3 bucket needs none (the SDK follows its region)');
    return;
  }
  let parsed: URL | undefined;
  try {
    parsed = new URL(endpoint);
  } catch {
    parsed = undefined;
  }
  if (parsed === undefined || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:'))
    issue('url', `endpoint must be an http:// or https:// URL, not ${JSON.stringify(endpoint)}`);
  else if (parsed.username || parsed.password)
    issue('url', 'the endpoint must not carry credentials: name a SecureString parameter in credentialsParameter');
  const pathStyle = options.get('path-style');
  if (pathStyle !== null && pathStyle !== 'true' && pathStyle !== 'false')
    issue('url', `path-style must be true or false, not ${JSON.stringify(pathStyle)}`);
  if (repository.credentialsParameter === undefined)
    issue(
      'credentialsParameter',
      `an S3-compatible endpoint needs its own access key, which the hosts' and functions' AWS roles cannot give: name the SecureString parameter holding the hosts' key, {"accessKeyId": "…", "secretAccessKey": "…"}, one the endpoint lets read, list and create but not delete (${ENDPOINT_DOC})`,
    );
  if (repository.controlCredentialsParameter === undefined)
    issue(
      'controlCredentialsParameter',
      `an S3-compatible endpoint needs a second access key for the control plane, which deletes for retention and garbage collection: name the SecureString parameter holding it; the hosts' key (credentialsParameter) must not be able to delete (${ENDPOINT_DOC})`,
    );
  else if (repository.controlCredentialsParameter === repository.credentialsParameter)
    issue(
      'controlCredentialsParameter',
      `must name another parameter than credentialsParameter: the hosts' key must not be the control plane's, which may delete backups (${ENDPOINT_DOC})`,
    );
}

export const planRepositorySchema = z
  .strictObject({
    url: repositoryUrl,
    /** Only with an S3-compatible endpoint: the SecureString parameter holding the hosts' access key (no delete). */
    credentialsParameter: parameterName.optional(),
    /** Only with an S3-compatible endpoint: the SecureString parameter holding the control plane's access key (deletes). */
    controlCredentialsParameter: parameterName.optional(),
  })
  .superRefine(checkRepository);
export type PlanRepository = z.infer<typeof planRepositorySchema>;

/** The plan's S3-compatible endpoint and its two key parameters; undefined for an AWS S3 or GCS repository. */
export function repositoryEndpoint(repository: RepositoryFields): RepositoryEndpoint | undefined {
  const endpoint = urlOptions(repository.url)?.get('endpoint');
  const { credentialsParameter, controlCredentialsParameter } = repository;
  if (!endpoint || credentialsParameter === undefined || controlCredentialsParameter === undefined) return undefined;
  return { endpoint, credentialsParameter, controlCredentialsParameter };
}

/** Who reads an endpoint plan's key: the hosts (the agent) or the control plane (the functions). */
export type EndpointSide = 'host' | 'control';

/** The parameter holding the endpoint key `side` signs with; undefined for an AWS S3 or GCS repository. */
export function endpointKeyParameter(repository: RepositoryFields, side: EndpointSide): string | undefined {
  const endpoint = repositoryEndpoint(repository);
  if (endpoint === undefined) return undefined;
  return side === 'host' ? endpoint.credentialsParameter : endpoint.controlCredentialsParameter;
}
