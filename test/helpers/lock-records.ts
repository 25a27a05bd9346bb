import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { tryLockFile } from '../../agent/core/lock-file.ts';

/** The scope (boot id and PID namespace) this process writes into its lock records, read from a lock it takes. */
export async function ownScope(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-scope-'));
  try {
    const held = await tryLockFile(join(dir, 'scope.lock'), { staleMs: 10_000, mode: 0o600 });
    if (!held) throw new Error('could not take a lock in a fresh directory');
    const record = await readFile(join(dir, 'scope.lock'), 'utf8');
    await held.release();
    return record.trim().split(' ')[3] as string;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * A lock record as a holder of `pid` in `scope` writes it, with its start time (by default the
 * running process's, read from /proc; '1' for a pid that runs nothing).
 */
export function lockRecord(pid: number, scope: string, options: { nonce?: string; start?: string } = {}): string {
  return `${pid} ${hostname()} ${options.nonce ?? '0123456789abcdef'} ${scope} ${options.start ?? startOf(pid)}\n`;
}

function startOf(pid: number): string {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).split(' ')[19] ?? '1';
  } catch {
    return '1';
  }
}

/** The pid of a process that has exited and been reaped: a holder that died. */
export async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await once(child, 'exit');
  return child.pid as number;
}
