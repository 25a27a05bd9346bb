import { CairnError } from '../core/errors.ts';
import { withoutCredentials } from '../core/url-credentials.ts';
import { normalizePrefix } from './object-keys.ts';

/** What tells one cloud's repository URLs apart: its scheme, bucket rule, known options and advice. */
export interface CloudUrlRules {
  scheme: 's3' | 'gs';
  /** The service as messages name it: "S3", "GCS". */
  service: string;
  /** The full URL form, shown as the hint of every usage error. */
  form: string;
  bucketPattern: RegExp;
  /** What a valid bucket name is, for the error when the pattern fails. */
  bucketRule: string;
  /** Where credentials come from instead of the URL. */
  credentials: string;
  options: ReadonlySet<string>;
}

export interface ParsedCloudUrl {
  bucket: string;
  /** Normalized: no leading, trailing or doubled slashes; may be empty. */
  prefix: string;
  query: URLSearchParams;
  /** A Cairn.Usage error about this URL (credentials masked), for the backend's own option checks. */
  usage: (problem: string) => CairnError;
}

/**
 * The part of `s3://` and `gs://` URL parsing both clouds share: the scheme,
 * no credentials in the URL, a valid bucket, only known options, and a
 * percent-decoded, normalized prefix. The backend reads its own options from
 * `query`.
 */
export function parseCloudUrl(url: string, rules: CloudUrlRules): ParsedCloudUrl {
  // Never repeat what sits before an '@': it may be a secret.
  const shown = withoutCredentials(url);
  const what = `invalid ${rules.service} repository URL ${shown}`;
  const usage = (problem: string): CairnError => new CairnError('Cairn.Usage', `${what}: ${problem}`, { hint: `use ${rules.form}` });
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (cause) {
    throw new CairnError('Cairn.Usage', what, { hint: `use ${rules.scheme}://bucket/prefix`, cause });
  }
  if (parsed.protocol !== `${rules.scheme}:`) throw usage(`the scheme is not ${rules.scheme}://`);
  if (parsed.username || parsed.password) throw usage(`credentials do not belong in the URL; ${rules.credentials}`);
  const bucket = parsed.hostname;
  if (!rules.bucketPattern.test(bucket)) throw usage(`no valid bucket name (${rules.bucketRule})`);
  for (const name of parsed.searchParams.keys()) {
    if (!rules.options.has(name)) throw usage(`unknown option ${JSON.stringify(name)} (known: ${[...rules.options].join(', ')})`);
  }
  let prefix: string;
  try {
    prefix = normalizePrefix(decodeURIComponent(parsed.pathname));
  } catch (cause) {
    throw new CairnError('Cairn.Usage', `${what}: the prefix is not valid percent-encoding`, { cause });
  }
  return { bucket, prefix, query: parsed.searchParams, usage };
}

/** Checks a custom endpoint: an http:// or https:// URL without credentials. */
export function checkEndpoint(endpoint: string, usage: (problem: string) => CairnError): void {
  let endpointUrl: URL | undefined;
  try {
    endpointUrl = new URL(endpoint);
  } catch {
    endpointUrl = undefined;
  }
  if (!endpointUrl || (endpointUrl.protocol !== 'http:' && endpointUrl.protocol !== 'https:'))
    throw usage('the endpoint must be an http:// or https:// URL');
  if (endpointUrl.username || endpointUrl.password) throw usage('the endpoint must not carry credentials');
}

/** "true"/"1"/"yes" and "false"/"0"/"no", any case; undefined for anything else. */
export function parseBoolean(text: string | undefined): boolean | undefined {
  const value = text?.trim().toLowerCase();
  if (value === 'true' || value === '1' || value === 'yes') return true;
  if (value === 'false' || value === '0' || value === 'no') return false;
  return undefined;
}

/** A count or size option: a whole number of at least 1, else the default. */
export function positiveOption(value: number | undefined, fallback: number): number {
  return value !== undefined && Number.isFinite(value) && value >= 1 ? Math.floor(value) : fallback;
}
