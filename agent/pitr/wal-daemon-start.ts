import { createWriteStream, type WriteStream } from 'node:fs';
import { rename, stat } from 'node:fs/promises';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { CairnError } from '../core/errors.ts';
import { tryLockFile, type HeldLockFile } from '../core/lock-file.ts';
import type { SpoolPaths } from './wal-spool.ts';

/**
 * Starting the WAL daemon: its log file in the spool (rotated past 10 MiB)
 * and the start lock that keeps it to one daemon per repository and stream.
 */

const LOG_ROTATE_BYTES = 10 * 1024 * 1024;
const STALE_LOCK_MS = 120_000;

export class DaemonLog {
  private readonly out: WriteStream;

  private constructor(out: WriteStream) {
    this.out = out;
  }

  static async open(path: string): Promise<DaemonLog> {
    const size = (await stat(path).catch(() => undefined))?.size ?? 0;
    if (size > LOG_ROTATE_BYTES) await rename(path, `${path}.1`).catch(() => undefined);
    const out = createWriteStream(path, { flags: 'a', mode: 0o600 });
    out.on('error', () => undefined);
    return new DaemonLog(out);
  }

  info(message: string): void {
    this.write('info', message);
  }

  warn(message: string): void {
    this.write('warning', message);
  }

  error(message: string): void {
    this.write('error', message);
  }

  private write(level: string, message: string): void {
    this.out.write(`${new Date().toISOString()} ${level} ${message}\n`);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.out.end(resolve));
  }
}

/**
 * The start lock (lock-file.ts): one starter at a time opens the repository
 * and takes the socket. 'running' when a daemon already answers. A starter
 * that died (killed while opening the repository) leaves its lock, taken
 * over at once since its pid is gone.
 */
export async function acquireStartLock(spool: SpoolPaths, signal: AbortSignal): Promise<HeldLockFile | 'running'> {
  const deadline = Date.now() + STALE_LOCK_MS + 10_000;
  for (;;) {
    signal.throwIfAborted();
    if (await answers(spool.socket)) return 'running';
    const held = await tryLockFile(spool.lock, { staleMs: STALE_LOCK_MS, mode: 0o600 });
    if (held) {
      // Checked again under the lock: the starter before may have brought its daemon up and let go of the lock
      // between the check above and this one's taking it (a CI run caught two starters listening one after the other).
      if (!(await answers(spool.socket))) return held;
      await held.release();
      return 'running';
    }
    if (Date.now() > deadline)
      throw new CairnError('Cairn.Locked', `another WAL daemon has been starting for too long (lock ${spool.lock})`, {
        hint: `remove ${spool.lock} if no cairn wal-daemon is running`,
      });
    await sleep(50);
  }
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.on('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}
