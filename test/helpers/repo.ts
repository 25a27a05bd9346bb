import { mkdtemp, readdir, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Repository } from '../../agent/core/repository.ts';
import type { Storage } from '../../agent/core/storage.ts';
import { FileStorage } from '../../agent/storage/file.ts';
import { silentProgress } from '../../agent/progress/progress.ts';
import { backup } from '../../agent/commands/backup.ts';
import { restore } from '../../agent/commands/restore.ts';

export const PASSPHRASE = 'correct horse battery staple';

/** Small chunks so that test files of a few hundred KB span many pieces, frames and packs. */
export const SMALL = {
  chunker: { algorithm: 'fastcdc-gear32' as const, min: 4096, avg: 16384, max: 65536 },
  packSize: 1 << 20,
};

export async function tempDir(prefix: string): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `cairn-${prefix}-`));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

export async function initSmallRepo(storage: Storage): Promise<Repository> {
  return Repository.init(storage, PASSPHRASE, { host: 'test-host', user: 'tester' }, SMALL);
}

export function fileRepo(path: string): FileStorage {
  return new FileStorage(path);
}

export async function backupDir(repo: Repository, path: string, extra: Partial<Parameters<typeof backup>[1]> = {}) {
  return backup(repo, {
    paths: [path],
    excludes: [],
    tags: [],
    who: { host: 'test-host', user: 'tester' },
    concurrency: 3,
    progress: silentProgress,
    ...extra,
  });
}

export async function restoreTo(repo: Repository, snapshot: string, target: string, extra: Partial<Parameters<typeof restore>[1]> = {}) {
  return restore(repo, {
    snapshot,
    target,
    includes: [],
    force: false,
    ignoreErrors: false,
    concurrency: 3,
    progress: silentProgress,
    who: { host: 'test-host', user: 'tester' },
    ...extra,
  });
}

/**
 * Makes every lock record of a file repository look `ageMs` old to the storage's clock (the
 * records' modification times), which is how a lease's passing looks to the lock code: it
 * judges age by the storage's clock, never by the reader's (docs/locks-and-gc.md).
 */
export async function ageLockRecords(repoPath: string, ageMs: number): Promise<void> {
  await ageRecords(repoPath, 'locks', ageMs);
}

/** Ages every object under `dir` of a file repository by `ageMs` (their modification times: the storage's clock). */
export async function ageRecords(repoPath: string, dir: string, ageMs: number): Promise<void> {
  const past = new Date(Date.now() - ageMs);
  for (const entry of await readdir(join(repoPath, dir), { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) await utimes(join(entry.parentPath, entry.name), past, past);
  }
}

/**
 * prune's `wait` for a file repository: instead of sleeping through the GC grace, the marks it
 * waits on (gc/) are aged by the storage's clock, which is what the grace is measured by.
 */
export function graceWaiter(repoPath: string): (ms: number) => Promise<void> {
  return (ms) => ageRecords(repoPath, 'gc', ms + 1_000);
}
