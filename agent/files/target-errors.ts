/** Why a restore target cannot be made or written, and what to do about it. */
import { lstat, mkdir, rmdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { CairnError } from '../core/errors.ts';

/**
 * The fix for a write that failed for the whole target, not for one file (its file system read-only
 * or full), or undefined: --ignore-errors would only repeat such an error for every file.
 */
export function targetWideHint(error: unknown): string | undefined {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'EROFS')
    return "the target's file system is mounted read-only: remount it read-write, or choose a target on a writable file system";
  if (code === 'ENOSPC' || code === 'EDQUOT')
    return "the target's file system is full (or the quota is used up): free space, or choose a target on another file system";
  return undefined;
}

/** A target that cannot be made or used, with the fix for the usual causes. */
export function unwritable(target: string, verb: 'create' | 'use', cause: unknown): CairnError {
  const code = (cause as NodeJS.ErrnoException).code;
  const hint =
    targetWideHint(cause) ??
    (code === 'EACCES' || code === 'EPERM'
      ? 'run the restore as a user who can write there, or choose another target'
      : 'choose another target');
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new CairnError('Cairn.Usage', `cannot ${verb} the restore target ${target}: ${reason}; nothing was written`, { hint, cause });
}

/**
 * Why a recursive mkdir failed: Node's reports ENOENT on a read-only file system, so the first
 * missing directory is made alone, which fails with the system's own reason (removed again if it
 * now succeeds: whatever blocked the first attempt, the restore still stops).
 */
export async function firstMissingCause(target: string, error: unknown): Promise<unknown> {
  let missing = resolve(target);
  while (
    dirname(missing) !== missing &&
    !(await lstat(dirname(missing)).then(
      () => true,
      () => false,
    ))
  )
    missing = dirname(missing);
  try {
    await mkdir(missing);
  } catch (cause) {
    return (cause as NodeJS.ErrnoException).code === 'EEXIST' ? error : cause;
  }
  await rmdir(missing).catch(() => undefined);
  return error;
}
