import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The scheme of a repository URL (`s3`, `gs`, `file`, …, lower case), or undefined for a plain path. */
export function repositoryScheme(url: string): string | undefined {
  return /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
}

/** The directory a local repository URL names (a plain path or file://), or undefined for any other scheme. */
export function localRepositoryPath(url: string): string | undefined {
  const scheme = repositoryScheme(url);
  if (scheme === undefined) return resolve(url);
  return scheme === 'file' ? fileURLToPath(url) : undefined;
}
