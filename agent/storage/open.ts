import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CairnError } from '../core/errors.ts';
import type { DeletableStorage } from '../core/storage.ts';
import { FileStorage } from './file.ts';

/**
 * Opens the backend a repository URL names: `file:///path` or a plain path,
 * `s3://bucket/prefix[?region=&endpoint=&path-style=true]`. Cloud SDKs are
 * loaded only when their scheme is used, so a local repository starts fast.
 */
export async function openStorage(url: string, env: NodeJS.ProcessEnv = process.env): Promise<DeletableStorage> {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
  if (scheme === undefined) return new FileStorage(resolve(url));
  if (scheme === 'file') return new FileStorage(fileURLToPath(url));
  if (scheme === 's3') {
    const { S3Storage, parseS3Url } = await import('./s3.ts');
    return new S3Storage(parseS3Url(url, env));
  }
  throw new CairnError('Cairn.Usage', `unsupported repository URL scheme ${scheme}://`, {
    hint: 'use a directory path, file:///path or s3://bucket/prefix',
  });
}
