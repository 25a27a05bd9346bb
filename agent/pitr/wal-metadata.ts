import { spawn } from 'node:child_process';
import { access, constants, readdir } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { childEnvironment } from '../core/child-env.ts';
import { CairnError } from '../core/errors.ts';
import type { LogFileRecord } from '../core/log-archive.ts';
import { parseWalName } from '../core/log-chain.ts';

/**
 * What the archive records about a file PostgreSQL hands to archive_command.
 *
 * Kinds: a WAL segment (24 hex digits) is `wal`, with its timeline and segment
 * number, and the segment size taken from the file's own size. Everything else
 * PostgreSQL archives is stored as `history` with only its timeline: timeline
 * history files (`00000002.history`), backup history files
 * (`…0003.00000028.backup`) and the partial last segment of an old timeline
 * (`…0005.partial`, archived at a promotion). A `.partial` file is not a whole
 * segment, and another server on the same stream may archive the complete
 * segment of that name, so it must never take part in chain analysis; it is
 * kept, under its own name, for an operator who wants it.
 *
 * Times and transaction ids come from pg_waldump's Transaction records (commit
 * and abort times). A commit record that straddles two segments is readable
 * from neither alone and is not counted: a window's edge can then be one
 * commit early, never later than the archive really reaches.
 */

const SEGMENT_NAME = /^[0-9A-F]{24}$/;
const OTHER_NAME = /^([0-9A-F]{8})(?:\.history|[0-9A-F]{16}(?:\.partial|\.[0-9A-F]{8}\.backup))$/;

export type WalFileKind = { kind: 'wal'; timeline: number } | { kind: 'history'; timeline: number };

/** The kind of a file PostgreSQL archives, by name; undefined for anything else. */
export function classifyWalFile(name: string): WalFileKind | undefined {
  if (SEGMENT_NAME.test(name)) return { kind: 'wal', timeline: parseInt(name.slice(0, 8), 16) };
  const m = OTHER_NAME.exec(name);
  return m ? { kind: 'history', timeline: parseInt(m[1] as string, 16) } : undefined;
}

export function requireWalFileName(name: string): WalFileKind {
  const kind = classifyWalFile(name);
  if (!kind) {
    throw new CairnError('Cairn.Usage', `${JSON.stringify(name)} is not the name of a file PostgreSQL archives`, {
      hint: 'wal-push takes %p and wal-fetch takes %f %p: a WAL segment (24 hex digits), a .history, .backup or .partial file',
    });
  }
  return kind;
}

export interface TransactionSummary {
  firstEventTime: string | null;
  lastEventTime: string | null;
  xids?: [number, number];
}

// desc: COMMIT 2026-11-23 17:52:56.238207 UTC; …   desc: COMMIT_PREPARED 742: 2026-…
const TRANSACTION_LINE = /\btx:\s+(\d+),.*\bdesc: (?:COMMIT|ABORT)(?:_PREPARED \d+:)? (\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(\.\d+)? UTC\b/;

/** Commit/abort times and transaction ids from `pg_waldump -r Transaction` run with TZ=UTC. */
export function parseWaldump(output: string): TransactionSummary {
  let first: string | null = null;
  let last: string | null = null;
  let low = Infinity;
  let high = -Infinity;
  for (const line of output.split('\n')) {
    const m = TRANSACTION_LINE.exec(line);
    if (!m) continue;
    const time = `${m[2]}T${m[3]}${(m[4] ?? '.000').slice(0, 4).padEnd(4, '0')}Z`;
    if (first === null || time < first) first = time;
    if (last === null || time > last) last = time;
    const xid = Number(m[1]);
    // Transaction id 0 marks records written outside a transaction; it names nothing one could recover to.
    if (xid > 0) {
      low = Math.min(low, xid);
      high = Math.max(high, xid);
    }
  }
  return { firstEventTime: first, lastEventTime: last, ...(low <= high ? { xids: [low, high] as [number, number] } : {}) };
}

/**
 * Finds pg_waldump for a server version ("15"): the Debian layout first, then
 * `pg_config --bindir`, then PATH, then any /usr/lib/postgresql/<v>/bin. A
 * pg_waldump of another major version cannot read the WAL, so one of the
 * server's own version wins when the version is known.
 */
export async function findPgWaldump(env: NodeJS.ProcessEnv, version: string | undefined): Promise<string | undefined> {
  const candidates: string[] = [];
  if (version) candidates.push(`/usr/lib/postgresql/${version}/bin/pg_waldump`);
  const bindir = await output(['pg_config', '--bindir'], env).catch(() => undefined);
  if (bindir?.trim()) candidates.push(join(bindir.trim(), 'pg_waldump'));
  for (const dir of (env.PATH ?? '').split(delimiter).filter(Boolean)) candidates.push(join(dir, 'pg_waldump'));
  const versions = await readdir('/usr/lib/postgresql').catch(() => [] as string[]);
  for (const v of versions.sort((a, b) => Number(b) - Number(a))) candidates.push(`/usr/lib/postgresql/${v}/bin/pg_waldump`);
  let fallback: string | undefined;
  for (const candidate of [...new Set(candidates)]) {
    if (
      !(await access(candidate, constants.X_OK).then(
        () => true,
        () => false,
      ))
    )
      continue;
    if (!version) return candidate;
    const reported = await output([candidate, '--version'], env).catch(() => '');
    if (new RegExp(`\\b${version}(?:\\.|\\b)`).test(reported)) return candidate;
    fallback ??= candidate;
  }
  return fallback;
}

/** Runs pg_waldump over one segment (start and end both that file, so it never reads on into the next one). */
export async function summarizeSegment(
  pgWaldump: string,
  path: string,
  env: NodeJS.ProcessEnv,
): Promise<TransactionSummary & { error?: string }> {
  const { stdout, stderr, code } = await capture([pgWaldump, '--rmgr=Transaction', path, path], { ...env, TZ: 'UTC' });
  const summary = parseWaldump(stdout);
  // A segment PostgreSQL is still writing, or whose last record continues in the next one, ends pg_waldump with an error after the records it could read.
  return code === 0 || summary.firstEventTime !== null
    ? summary
    : { ...summary, error: stderr.trim().split('\n').at(-1) ?? `exit code ${code}` };
}

export interface DescribeInput {
  name: string;
  size: number;
  hash: string;
  host: string;
  archivedAt: string;
  transactions: TransactionSummary | undefined;
}

/** The archive's record of one file. */
export function describeWalFile(input: DescribeInput): LogFileRecord {
  const kind = requireWalFileName(input.name);
  const base = {
    name: input.name,
    key: input.name,
    size: input.size,
    hash: input.hash,
    archivedAt: input.archivedAt,
    host: input.host,
    firstEventTime: input.transactions?.firstEventTime ?? null,
    lastEventTime: input.transactions?.lastEventTime ?? null,
  };
  if (kind.kind === 'history') return { ...base, kind: 'history', wal: { timeline: kind.timeline } };
  if (!isSegmentSize(input.size)) {
    throw new CairnError(
      'Cairn.InvalidInput',
      `${input.name} is ${input.size} bytes: not a WAL segment (a power of two from 1 MiB to 1 GiB)`,
      {
        hint: 'archive_command must be given %p, the complete segment PostgreSQL asks to archive',
      },
    );
  }
  const position = parseWalName(input.name, input.size);
  if (!position) throw new CairnError('Cairn.InvalidInput', `${input.name} is not a WAL segment name`);
  const xids = input.transactions?.xids;
  return {
    ...base,
    kind: 'wal',
    wal: { timeline: position.timeline, segment: position.segment, segmentSize: input.size, ...(xids ? { xids } : {}) },
  };
}

function isSegmentSize(size: number): boolean {
  return size >= 1 << 20 && size <= 1 << 30 && (size & (size - 1)) === 0;
}

async function output(argv: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const result = await capture(argv, env);
  if (result.code !== 0) throw new Error(result.stderr);
  return result.stdout;
}

/** pg_waldump exits non-zero at the end of a segment it could still describe, so its output is wanted whatever the exit code. */
function capture(argv: string[], env: NodeJS.ProcessEnv): Promise<{ stdout: string; stderr: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0] as string, argv.slice(1), { env: childEnvironment(env, 'tool'), stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8192)));
    child.on('error', reject);
    child.on('close', (code) => resolve({ stdout: Buffer.concat(out).toString(), stderr, code }));
  });
}
