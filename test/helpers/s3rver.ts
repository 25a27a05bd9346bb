import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { get, type IncomingMessage } from 'node:http';
import { get as httpsGet } from 'node:https';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

/**
 * s3rver (a real S3-compatible HTTP server from npm) in a child process, on a
 * free port of 127.0.0.1, storing into a temporary directory. The child runs
 * with --openssl-legacy-provider: without it s3rver answers 500 to every
 * truncated ListObjectsV2.
 * Only that process gets the flag, never the test process.
 */
export interface S3rver {
  /** `http://127.0.0.1:<port>` of s3rver itself. */
  endpoint: string;
  bucket: string;
  /** An s3:// repository URL for parseS3Url, path-style, at this server or at `via` (a proxy in front of it). */
  url(prefix: string, via?: string): string;
  stop(): Promise<void>;
}

/** The only credentials s3rver accepts. The SDK signs with them through its standard chain (environment). */
export function s3rverEnv(): { AWS_ACCESS_KEY_ID: string; AWS_SECRET_ACCESS_KEY: string } {
  return { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };
}

const BUCKET = 'cairn-test';
const STARTUP_TIMEOUT_MS = 20_000;

/**
 * `tls`: serve HTTPS with this key and certificate (PEM files). The bench uses it for restic,
 * whose S3 client signs plain-HTTP uploads in aws-chunked form, which s3rver stores verbatim.
 * `bucket` replaces the default bucket name.
 */
export async function startS3rver(options: { tls?: { key: string; cert: string }; bucket?: string } = {}): Promise<S3rver> {
  const directory = await mkdtemp(join(tmpdir(), 'cairn-s3rver-'));
  const bucket = options.bucket ?? BUCKET;
  const cli = join(dirname(createRequire(import.meta.url).resolve('s3rver/package.json')), 'bin', 's3rver.js');
  const args = [
    '--openssl-legacy-provider',
    cli,
    '--directory',
    directory,
    '--port',
    '0',
    '--address',
    '127.0.0.1',
    '--silent',
    '--configure-bucket',
    bucket,
    ...(options.tls ? ['--key', options.tls.key, '--cert', options.tls.cert] : []),
  ];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  try {
    // The CLI prints "S3rver listening on <address>:<port>" (even with --silent) once the bucket exists.
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`s3rver did not start within ${STARTUP_TIMEOUT_MS} ms:\n${output}`)),
        STARTUP_TIMEOUT_MS,
      );
      const onData = (chunk: Buffer): void => {
        output += chunk.toString();
        const match = /listening on [^\s:]+:(\d+)/.exec(output);
        if (match?.[1]) {
          clearTimeout(timer);
          resolve(Number(match[1]));
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`s3rver exited (${signal ?? `code ${code}`}) before listening:\n${output}`));
      });
    });
    const endpoint = `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
    await waitUntilAnswering(endpoint, bucket, options.tls?.cert);
    return {
      endpoint,
      bucket,
      url: (prefix, via = endpoint) => `s3://${bucket}/${prefix}?endpoint=${encodeURIComponent(via)}&path-style=true&region=us-east-1`,
      stop: async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        await exited;
        await rm(directory, { recursive: true, force: true });
      },
    };
  } catch (error) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    await rm(directory, { recursive: true, force: true });
    throw error;
  }
}

/** Any HTTP answer (s3rver says 403 to an unsigned request) means it serves requests. */
async function waitUntilAnswering(endpoint: string, bucket: string, ca: string | undefined): Promise<void> {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  for (;;) {
    try {
      await new Promise<void>((resolve, reject) => {
        // agent: false, so no kept-alive socket outlives the check.
        const url = `${endpoint}/${bucket}?list-type=2&max-keys=1`;
        const answer = (response: IncomingMessage): void => {
          response.resume();
          response.once('end', resolve);
        };
        (ca ? httpsGet(url, { agent: false, ca: readFileSync(ca) }, answer) : get(url, { agent: false }, answer)).once('error', reject);
      });
      return;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`s3rver at ${endpoint} does not answer`, { cause: error });
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}
