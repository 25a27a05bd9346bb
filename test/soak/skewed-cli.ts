import { spawn } from 'node:child_process';
import { CAIRN_BIN, type CliResult } from '../helpers/cli.ts';

/**
 * Runs the real `cairn` bin as a host whose clock is off by `skew` (libfaketime's
 * relative offsets: '-10m', '+10m', '+1y'; '' for the true clock): every clock call
 * of the process (Date.now, timers' clock) is shifted, while the storage's
 * clock (a file's mtime, set by the kernel) is not. Needs `faketime` on PATH.
 */
export function runSkewedCli(
  skew: string,
  args: string[],
  env: Record<string, string>,
  options: { onSpawn?: (pid: number) => void } = {},
): Promise<CliResult> {
  const command = skew === '' ? process.execPath : 'faketime';
  const argv = skew === '' ? [CAIRN_BIN, ...args] : ['-f', skew, process.execPath, CAIRN_BIN, ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(command, argv, {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', CAIRN_JSON: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    if (child.pid !== undefined) options.onSpawn?.(child.pid);
    child.on('close', (code, signal) => {
      const lines = stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      resolve({ code, signal, stdout, stderr, lines });
    });
  });
}

/** Whether faketime is installed and shifts Node's clock. */
export async function faketimeWorks(): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn('faketime', ['-f', '+1y', process.execPath, '-e', 'process.stdout.write(String(Date.now()))'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', () => resolve(false));
    child.on('close', () => resolve(Number(out) - Date.now() > 300 * 86_400_000));
  });
}
