import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readdirSync, lstatSync } from 'node:fs';
import { join } from 'node:path';

const GNU_TIME = '/usr/bin/time';

/** A command that failed: the benchmark's only kind of real failure besides a wrong restore. */
export class CommandFailed extends Error {
  override name = 'CommandFailed';
}

export interface Timed {
  seconds: number;
  /** Peak resident set of the largest process of the command, MiB (undefined if it could not be measured). */
  peakRssMiB: number | undefined;
  /** CPU seconds the command used (user + system, its processes together). */
  cpuSeconds: number | undefined;
  /**
   * CPU seconds the rest of the machine used meanwhile (all busy CPU time minus the
   * command's): other people's tests on a shared machine make timings noisy, and this
   * says when. Kernel writeback for our own writes counts here too.
   */
  otherCpuSeconds: number | undefined;
  stdoutFile: string;
  stderrFile: string;
}

export interface RunOptions {
  env?: Record<string, string>;
  /** Where stdout and stderr go: `<logPrefix>.out` / `.err`. Files, not pipes, so a chatty tool is never slowed by us. */
  logPrefix: string;
}

/**
 * Runs a command as a whole subprocess and measures its wall time and peak RSS.
 * The peak comes from GNU time's %M (the kernel's ru_maxrss: for a pipeline, the
 * largest process), or, without GNU time, from polling VmHWM in /proc.
 */
export async function runTimed(command: string, args: string[], options: RunOptions): Promise<Timed> {
  const stdoutFile = `${options.logPrefix}.out`;
  const stderrFile = `${options.logPrefix}.err`;
  const rssFile = `${options.logPrefix}.rss`;
  const useTime = existsSync(GNU_TIME);
  const [file, argv] = useTime ? [GNU_TIME, ['-f', '%U %S %M', '-o', rssFile, command, ...args]] : [command, args];
  const out = openSync(stdoutFile, 'w');
  const err = openSync(stderrFile, 'w');
  const busyBefore = busyCpuSeconds();
  const started = process.hrtime.bigint();
  const child = spawn(file, argv, { env: { ...process.env, ...options.env }, stdio: ['ignore', out, err] });
  const poller = useTime ? undefined : pollPeakRss(child.pid);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  }).finally(() => {
    closeSync(out);
    closeSync(err);
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const busy = busyCpuSeconds() - busyBefore;
  const [user, system, peakFromTime] = poller ? [] : lastLineNumbers(readFileSync(rssFile, 'utf8'));
  const peakKiB = poller ? poller.stop() : peakFromTime;
  const cpuSeconds = user !== undefined && system !== undefined ? user + system : undefined;
  if (code !== 0) {
    const tail = readFileSync(stderrFile, 'utf8').trim().split('\n').slice(-15).join('\n');
    throw new CommandFailed(`${command} ${args.join(' ')} exited with ${code}\n${tail}`);
  }
  return {
    seconds,
    peakRssMiB: peakKiB === undefined ? undefined : peakKiB / 1024,
    cpuSeconds,
    otherCpuSeconds: cpuSeconds === undefined ? undefined : Math.max(0, busy - cpuSeconds),
    stdoutFile,
    stderrFile,
  };
}

function lastLineNumbers(text: string): Array<number | undefined> {
  // GNU time puts "Command exited with non-zero status N" before the figures when the command fails.
  return (text.trim().split('\n').at(-1) ?? '').split(' ').map((v) => (v !== '' && Number.isFinite(Number(v)) ? Number(v) : undefined));
}

/** Busy CPU time of the whole machine so far, from /proc/stat (user, nice, system, irq, softirq, steal; USER_HZ = 100). */
function busyCpuSeconds(): number {
  const fields = (readOr('/proc/stat').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return (user + nice + system + irq + softirq + steal) / 100;
}

/** The largest VmHWM among the process and its descendants, sampled every 50 ms. */
function pollPeakRss(pid: number | undefined): { stop: () => number | undefined } {
  let peak: number | undefined;
  const sample = (): void => {
    if (pid === undefined) return;
    for (const p of processTree(pid)) {
      const match = /VmHWM:\s+(\d+) kB/.exec(readOr(`/proc/${p}/status`));
      if (match) peak = Math.max(peak ?? 0, Number(match[1]));
    }
  };
  const timer = setInterval(sample, 50);
  sample();
  return {
    stop: () => {
      clearInterval(timer);
      return peak;
    },
  };
}

function processTree(pid: number): number[] {
  const children = readdirOr(`/proc/${pid}/task`).flatMap((task) =>
    readOr(`/proc/${pid}/task/${task}/children`).split(' ').filter(Boolean).map(Number),
  );
  return [pid, ...children.flatMap(processTree)];
}

const readOr = (path: string): string => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
};
const readdirOr = (path: string): string[] => {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
};

/** Sum of the sizes of the regular files under `path` ("bytes stored"; not blocks, so sparse or small files count as they are). */
export function treeBytes(path: string): number {
  if (!existsSync(path)) return 0;
  const stat = lstatSync(path);
  if (!stat.isDirectory()) return stat.size;
  let total = 0;
  for (const entry of readdirSync(path, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += lstatSync(join(entry.parentPath, entry.name)).size;
  }
  return total;
}

/**
 * Before each timed command: flush dirty pages (so the previous step's writeback does
 * not compete with the measured one) and read the data once (so every tool starts
 * with a warm page cache, not just the second one to run).
 */
export function settle(dataDir?: string): void {
  spawnSync('sync');
  if (dataDir) spawnSync('bash', ['-c', 'find "$1" -type f -print0 | xargs -0 cat > /dev/null', 'warm', dataDir]);
}

/** Byte-for-byte comparison of two trees (contents and the set of paths). Returns the differences, empty when identical. */
export function compareTrees(expected: string, actual: string): string {
  const diff = spawnSync('diff', ['-r', '-q', expected, actual], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (diff.status === 0) return '';
  return (diff.stdout + diff.stderr).trim() || `diff exited with ${diff.status}`;
}

/** Installs a Debian package when a command is missing and we are root; true if the command is there afterwards. */
export function ensureCommand(command: string, debianPackage: string): boolean {
  // An absolute path is checked as a file: `command -v time` finds bash's keyword, not GNU time.
  const present = (): boolean =>
    command.startsWith('/') ? existsSync(command) : spawnSync('bash', ['-c', 'command -v "$1"', 'which', command]).status === 0;
  if (present()) return true;
  if (process.getuid?.() !== 0) return false;
  console.log(`${command} is missing: apt-get install -y ${debianPackage}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = (): boolean => spawnSync('apt-get', ['install', '-y', '-q', debianPackage], { stdio: 'ignore', env }).status === 0;
  // A fresh machine may have no package lists yet.
  if (!install()) {
    spawnSync('apt-get', ['update', '-q'], { stdio: 'ignore', env });
    install();
  }
  return present();
}

/** The first line a command prints, for the record (versions). */
export function firstLine(command: string, args: string[]): string {
  const run = spawnSync(command, args, { encoding: 'utf8' });
  return (run.stdout || run.stderr || '').split('\n')[0]?.trim() ?? '';
}
