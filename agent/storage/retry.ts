import { CairnError } from '../core/errors.ts';

/**
 * What the cloud backends retry themselves, beyond their SDK's own retries
 * (which end once response headers arrived): a connection that breaks while a
 * body streams. One list of network faults, one backoff.
 */

const NETWORK_ERROR_CODES = new Set([
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ECONNREFUSED',
  'ECONNABORTED',
  'ERR_STREAM_PREMATURE_CLOSE',
  // @google-cloud/storage: the body's checksum did not match (a body cut or damaged in transit).
  'CONTENT_DOWNLOAD_MISMATCH',
]);

/** Whether an error (or one of its causes, a few levels deep) is a connection fault rather than an answer. */
export function isNetworkError(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > 4) return false;
  const { code, name, cause, message } = error as { code?: unknown; name?: unknown; cause?: unknown; message?: unknown };
  if (typeof code === 'string' && NETWORK_ERROR_CODES.has(code)) return true;
  if (name === 'TimeoutError' || name === 'AbortError') return true;
  if (typeof message === 'string' && /premature close|socket hang up|ECONNRESET|aborted/i.test(message)) return true;
  return cause !== undefined && cause !== error && isNetworkError(cause, depth + 1);
}

/** Full-jitter exponential backoff like the AWS SDK's: up to 100 ms, 200 ms, 400 ms … capped at 20 s. */
export function backoff(attempt: number): number {
  return Math.floor(Math.random() * Math.min(20_000, 100 * 2 ** (attempt - 1)));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Runs `attempt`, repeating it after a backoff while it fails with a network
 * error, up to `maxAttempts` runs in all. A CairnError is final at once: the
 * attempt throws one for failures its SDK already retried.
 */
export async function repeatOnNetworkError<T>(maxAttempts: number, attempt: () => Promise<T>): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (error) {
      if (n >= maxAttempts || error instanceof CairnError || !isNetworkError(error)) throw error;
      await sleep(backoff(n));
    }
  }
}
