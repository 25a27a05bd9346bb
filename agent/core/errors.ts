/**
 * Every failure a user can act on is a CairnError: a stable `code` (also the
 * `Cairn.*` error name sent to Step Functions), the process exit code from the
 * table in docs/exit-codes.md, and a `hint` that says what to do about it.
 * The original error is always kept as `cause`.
 */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  partial: 3,
  repositoryNotFound: 10,
  locked: 11,
  wrongKey: 12,
  notFound: 13,
  damaged: 14,
  targetNotEmpty: 15,
  storage: 16,
  alreadyExists: 17,
  cancelled: 130,
  /** The output's reader went away (`| head`): as a program killed by SIGPIPE (cli/stdout-closed.ts). */
  outputClosed: 141,
  /**
   * `wal-fetch`, every failure but "never archived" (exit 1): PostgreSQL takes any status from 1 to
   * 125 of restore_command as "not archived" (at promotion it would then reuse a timeline already
   * archived, and without a recovery target end recovery early) and stops on one above 125.
   */
  walFetchFailed: 200,
} as const;

export type ErrorCode =
  | 'Cairn.Failure'
  | 'Cairn.Usage'
  | 'Cairn.Config'
  | 'Cairn.InvalidInput'
  | 'Cairn.AgentCrashed'
  | 'Cairn.PartialFailure'
  | 'Cairn.RepositoryNotFound'
  | 'Cairn.WrongKey'
  | 'Cairn.Locked'
  | 'Cairn.NotFound'
  | 'Cairn.Damaged'
  | 'Cairn.TargetNotEmpty'
  | 'Cairn.Storage'
  | 'Cairn.AlreadyExists'
  | 'Cairn.Cancelled';

const exitCodes: Record<ErrorCode, number> = {
  'Cairn.Failure': ExitCode.failure,
  'Cairn.Usage': ExitCode.usage,
  'Cairn.Config': ExitCode.usage,
  'Cairn.InvalidInput': ExitCode.usage,
  'Cairn.AgentCrashed': ExitCode.failure,
  'Cairn.PartialFailure': ExitCode.partial,
  'Cairn.RepositoryNotFound': ExitCode.repositoryNotFound,
  'Cairn.WrongKey': ExitCode.wrongKey,
  'Cairn.Locked': ExitCode.locked,
  'Cairn.NotFound': ExitCode.notFound,
  'Cairn.Damaged': ExitCode.damaged,
  'Cairn.TargetNotEmpty': ExitCode.targetNotEmpty,
  'Cairn.Storage': ExitCode.storage,
  'Cairn.AlreadyExists': ExitCode.alreadyExists,
  'Cairn.Cancelled': ExitCode.cancelled,
};

export class CairnError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CairnError';
    this.code = code;
    this.hint = options.hint;
  }

  get exitCode(): number {
    return exitCodes[this.code];
  }
}

/** A storage object that does not exist (distinct from "could not be read"). */
export class NotFoundError extends CairnError {
  readonly key: string;
  constructor(key: string, options: { cause?: unknown } = {}) {
    super('Cairn.NotFound', `object not found: ${key}`, options);
    this.name = 'NotFoundError';
    this.key = key;
  }
}

/** A create-if-absent write found the object already there. */
export class AlreadyExistsError extends CairnError {
  readonly key: string;
  constructor(key: string, options: { cause?: unknown } = {}) {
    super('Cairn.AlreadyExists', `object already exists: ${key}`, options);
    this.name = 'AlreadyExistsError';
    this.key = key;
  }
}

/** Stored bytes failed authentication or decoding: tampering, bit rot or a truncated write. */
export class DamagedError extends CairnError {
  constructor(message: string, options: { hint?: string; cause?: unknown } = {}) {
    super('Cairn.Damaged', message, {
      hint: options.hint ?? 'run `cairn verify --read-data` to list every damaged object and the files it affects',
      cause: options.cause,
    });
    this.name = 'DamagedError';
  }
}

export function exitCodeOf(error: unknown): number {
  return error instanceof CairnError ? error.exitCode : ExitCode.failure;
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
