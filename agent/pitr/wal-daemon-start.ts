import { createWriteStream, type WriteStream } from 'node:fs';
import { readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { CairnError } from '../core/errors.ts';
import { processAlive, type SpoolPaths } from './wal-spool.ts';

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

/** The start lock: a file holding the starter's pid, created exclusively. 'running' when a daemon already answers. */
export async function acquireStartLock(spool: SpoolPaths, signal: AbortSignal): Promise<{ release: () => Promise<void> } | 'running'> {
  const deadline = Date.now() + STALE_LOCK_MS + 10_000;
  for (;;) {
    signal.throwIfAborted();
    if (await answers(spool.socket)) return 'running';
    try {
      await writeFile(spool.lock, String(process.pid), { flag: 'wx', mode: 0o600 });
      return {
        release: async () => {
          if ((await readFile(spool.lock, 'utf8').catch(() => '')) === String(process.pid)) await unlink(spool.lock).catch(() => undefined);
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const text = await readFile(spool.lock, 'utf8').catch(() => '');
    const age = Date.now() - ((await stat(spool.lock).catch(() => undefined))?.mtimeMs ?? Date.now());
    // A starter that died (killed while opening the repository) leaves its lock: take it over. An empty lock is one
    // whose holder has created it and not yet written its pid.
    const dead = text === '' ? age > 5000 : !processAlive(Number(text));
    if (dead || age > STALE_LOCK_MS) await unlink(spool.lock).catch(() => undefined);
    else await sleep(50);
    if (Date.now() > deadline)
      throw new CairnError('Cairn.Locked', `another WAL daemon has been starting for too long (lock ${spool.lock})`, {
        hint: `remove ${spool.lock} if no cairn wal-daemon is running`,
      });
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
