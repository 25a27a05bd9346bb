import type { ListedEntry } from '../commands/snapshot-browser.ts';

/** `ls -l`'s mode column: type, then rwx for owner, group and others with setuid, setgid and sticky. */
export function modeString(entry: Pick<ListedEntry, 'type' | 'mode'>): string {
  const m = entry.mode;
  const bit = (mask: number, c: string): string => (m & mask ? c : '-');
  const exec = (x: number, special: number, set: string, unset: string): string =>
    m & special ? (m & x ? set : unset) : m & x ? 'x' : '-';
  return (
    (entry.type === 'dir' ? 'd' : entry.type === 'symlink' ? 'l' : '-') +
    bit(0o400, 'r') +
    bit(0o200, 'w') +
    exec(0o100, 0o4000, 's', 'S') +
    bit(0o040, 'r') +
    bit(0o020, 'w') +
    exec(0o010, 0o2000, 's', 'S') +
    bit(0o004, 'r') +
    bit(0o002, 'w') +
    exec(0o001, 0o1000, 't', 'T')
  );
}

/** An ISO time as a listing shows it: a space for the T, no milliseconds. */
export function listingTime(iso: string): string {
  return iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

/**
 * A group of snapshots (`snapshots --group-by`, `forget`) as text: `host db1, paths /srv/data, plan (none)`;
 * lists joined by commas, a missing value or empty list as `(none)`.
 */
export function groupTitle(group: Record<string, unknown>): string {
  const title = Object.entries(group)
    .map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(',') || '(none)' : typeof v === 'string' ? v : '(none)'}`)
    .join(', ');
  return title || 'all snapshots';
}
