import { CairnError } from './errors.ts';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "500ms", "30s", "5m", "1h30m", "2d" → milliseconds. */
export function parseDurationMs(text: string): number {
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== text.trim()) {
    throw new CairnError('Cairn.Usage', `invalid duration ${JSON.stringify(text)}`, {
      hint: 'use a number with a unit: ms, s, m, h or d, e.g. 30s or 1h30m',
    });
  }
  return parts.reduce((total, [, n, unit]) => total + Number(n) * (UNITS[unit as string] as number), 0);
}
