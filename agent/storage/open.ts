import { CairnError } from '../core/errors.ts';
import type { DeletableStorage } from '../core/storage.ts';
import { FileStorage } from './file.ts';
import { localRepositoryPath, repositoryScheme } from './repository-url.ts';

/**
 * Opens the backend a repository URL names: `file:///path` or a plain path,
 * `s3://bucket/prefix[?region=&endpoint=&path-style=true]`,
 * `gs://bucket/prefix[?key-file=|key-ssm=&endpoint=&project=]`. Cloud SDKs are
 * loaded only when their scheme is used, so a local repository starts fast.
 */
export async function openStorage(url: string, env: NodeJS.ProcessEnv = process.env): Promise<DeletableStorage> {
  const local = localRepositoryPath(url);
  if (local !== undefined) return new FileStorage(local);
  const scheme = repositoryScheme(url);
  if (scheme === 's3') {
    const { S3Storage, parseS3Url } = await import('./s3.ts');
    return new S3Storage({ ...parseS3Url(url, env), env });
  }
  if (scheme === 'gs') {
    const { GcsStorage, parseGcsUrl } = await import('./gcs.ts');
    return new GcsStorage(parseGcsUrl(url, env));
  }
  throw new CairnError('Cairn.Usage', `unsupported repository URL scheme ${scheme}://`, {
    hint: 'use a directory path, file:///path, s3://bucket/prefix or gs://bucket/prefix',
  });
}
