import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';

export interface S3Server {
  endpoint: string;
  bucket: string;
  /** An s3:// repository URL on this server. */
  url(prefix: string, endpoint?: string): string;
  stop(): Promise<void>;
}

/** Credentials s3rver accepts; the real SDK signs with them. */
export const S3RVER_ENV = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };

/**
 * Starts s3rver (a real S3-compatible HTTP server from npm) as a child process
 * on a free port. It runs under --openssl-legacy-provider: without it every
 * truncated ListObjectsV2 answers 500 (TOOLCHAIN.md).
 */
export async function startS3rver(bucket = 'cairn-test'): Promise<S3Server> {
  Object.assign(process.env, S3RVER_ENV);
  const directory = await mkdtemp(join(tmpdir(), 'cairn-s3rver-'));
  const s3rverPath = createRequire(import.meta.url).resolve('s3rver');
  const script = `
    const S3rver = require(${JSON.stringify(s3rverPath)});
    new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: ${JSON.stringify(directory)}, configureBuckets: [{ name: ${JSON.stringify(bucket)} }] })
      .run().then((address) => process.stdout.write(JSON.stringify({ port: address.port ?? address[1] }) + '\\n'));`;
  const child: ChildProcess = spawn(process.execPath, ['--openssl-legacy-provider', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.on('exit', (code) => reject(new Error(`s3rver exited with ${code}`)));
    setTimeout(() => reject(new Error('s3rver did not start within 20 s')), 20_000).unref();
  });
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    bucket,
    url: (prefix, via = endpoint) => `s3://${bucket}/${prefix}?endpoint=${encodeURIComponent(via)}&path-style=true&region=us-east-1`,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      await rm(directory, { recursive: true, force: true });
    },
  };
}
