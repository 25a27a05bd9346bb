import { readdirSync, readFileSync } from 'node:fs';

/**
 * The live processes (not zombies, not this one) whose command line mentions every one of `texts`:
 * a private server left behind by a drill names its data directory there. Synchronous, from /proc,
 * so it can run inside a progress callback. `cmdline` has its arguments joined by spaces.
 */
export function processesMentioning(...texts: string[]): Array<{ pid: number; cmdline: string }> {
  const found: Array<{ pid: number; cmdline: string }> = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${name}/cmdline`, 'latin1');
      if (!texts.every((text) => cmdline.includes(text))) continue;
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      if (!/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2))) found.push({ pid: Number(name), cmdline: cmdline.replaceAll('\0', ' ') });
    } catch {
      // The process ended meanwhile.
    }
  }
  return found;
}
