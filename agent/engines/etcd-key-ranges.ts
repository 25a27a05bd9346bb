import { CairnError } from '../core/errors.ts';

/** Key prefixes and ranges of the etcd-keys engine, in etcd's byte order. Pure. */

/** Sorted in etcd's (byte) order, duplicates and prefixes covered by a shorter one dropped. */
export function normalizePrefixes(prefixes: string[]): string[] {
  const sorted = [...new Set(prefixes)].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const kept: string[] = [];
  for (const p of sorted) if (!kept.some((k) => p.startsWith(k))) kept.push(p);
  return kept;
}

/** The part of a snapshot (taken with `backedUp`) that a restore limited to `chosen` covers. */
export function restoreScope(backedUp: string[], chosen: string[]): string[] {
  if (chosen.length === 0) return normalizePrefixes(backedUp);
  const scope: string[] = [];
  for (const c of chosen) {
    for (const b of backedUp) {
      if (c.startsWith(b)) scope.push(c);
      else if (b.startsWith(c)) scope.push(b);
    }
  }
  if (scope.length === 0) {
    throw new CairnError(
      'Cairn.Usage',
      `the snapshot holds no keys under ${chosen.map((c) => JSON.stringify(c)).join(', ')} (it was taken with --etcd-prefix ${backedUp.map((b) => JSON.stringify(b)).join(', ')})`,
    );
  }
  return normalizePrefixes(scope);
}

export function parseRename(spec: string): { from: string; to: string; fromBytes: Buffer; toBytes: Buffer } {
  const colon = spec.indexOf(':');
  if (colon < 0)
    throw new CairnError('Cairn.Usage', `--rename-prefix ${JSON.stringify(spec)}: expected OLD:NEW`, {
      hint: 'e.g. --rename-prefix /app/:/app-restored/ (OLD cannot contain a colon)',
    });
  const from = spec.slice(0, colon);
  const to = spec.slice(colon + 1);
  return { from, to, fromBytes: Buffer.from(from), toBytes: Buffer.from(to) };
}

/** etcd's range for a prefix: [prefix, prefix with its last byte below 0xff incremented); the empty prefix is every key. */
export function prefixRange(prefix: string): { key: Buffer; end: Buffer } {
  const key = Buffer.from(prefix);
  for (let i = key.length - 1; i >= 0; i--) {
    if (key[i]! < 0xff) {
      const end = Buffer.from(key.subarray(0, i + 1));
      end[i] = key[i]! + 1;
      return { key, end };
    }
  }
  return { key: key.length ? key : Buffer.from([0]), end: Buffer.from([0]) };
}

export function startsWith(key: Buffer, prefix: Buffer): boolean {
  return key.length >= prefix.length && key.subarray(0, prefix.length).equals(prefix);
}

export function b64(data: Buffer): string {
  return data.toString('base64');
}

/** A key for messages: UTF-8 when it is, else hex. */
export function printable(key: Buffer): string {
  const text = key.toString('utf8');
  return Buffer.from(text).equals(key) && !/[\p{Cc}]/u.test(text) ? text : `0x${key.toString('hex')}`;
}
