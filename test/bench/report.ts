/**
 * Turns measurements into the printed table and the ratios PERFORMANCE.md's targets
 * speak of. Targets are aims: a "not met" is information, never a failure.
 */

export const SCENARIOS = ['first backup', 'unchanged re-backup', 're-backup after changes', 'restore', 'verify --read-data'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export interface Measurement {
  run: number;
  scenario: Scenario;
  tool: string;
  seconds: number;
  peakRssMiB: number | undefined;
  cpuSeconds: number | undefined;
  /** CPU time other processes used meanwhile (see measure.ts): large values mean a noisy figure. */
  otherCpuSeconds: number | undefined;
  /** Repository size after the step (sum of file sizes); for tar|zstd, the archive's size. */
  storedBytes: number | undefined;
  /** Growth of the repository during the step (backups only). */
  addedBytes: number | undefined;
  /** What the tool itself reported as added (backups only). */
  reportedAddedBytes: number | undefined;
}

/** One table cell group: medians over runs (peak RSS: the largest, since memory limits are about the worst case). */
export interface Row {
  scenario: Scenario;
  tool: string;
  runs: number;
  seconds: number;
  mbPerSecond: number;
  storedBytes: number | undefined;
  addedBytes: number | undefined;
  reportedAddedBytes: number | undefined;
  peakRssMiB: number | undefined;
}

export interface Ratio {
  check: string;
  value: number;
  shown: string;
  aim: string;
  met: boolean | undefined; // undefined: for information
}

const MB = 1e6;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function medianOf(values: Array<number | undefined>): number | undefined {
  const present = values.filter((v): v is number => v !== undefined);
  return present.length ? median(present) : undefined;
}

export function summarize(measurements: Measurement[], datasetBytes: number): Row[] {
  const rows: Row[] = [];
  for (const scenario of SCENARIOS) {
    const tools = [...new Set(measurements.filter((m) => m.scenario === scenario).map((m) => m.tool))];
    for (const tool of tools) {
      const group = measurements.filter((m) => m.scenario === scenario && m.tool === tool);
      const seconds = median(group.map((m) => m.seconds));
      const rss = group.map((m) => m.peakRssMiB).filter((v): v is number => v !== undefined);
      rows.push({
        scenario,
        tool,
        runs: group.length,
        seconds,
        mbPerSecond: datasetBytes / MB / seconds,
        storedBytes: medianOf(group.map((m) => m.storedBytes)),
        addedBytes: medianOf(group.map((m) => m.addedBytes)),
        reportedAddedBytes: medianOf(group.map((m) => m.reportedAddedBytes)),
        peakRssMiB: rss.length ? Math.max(...rss) : undefined,
      });
    }
  }
  return rows;
}

export function ratios(rows: Row[], changedBytes: number): Ratio[] {
  const find = (scenario: Scenario, tool: string): Row | undefined => rows.find((r) => r.scenario === scenario && r.tool === tool);
  const out: Ratio[] = [];
  const times = (check: string, value: number, aim: number): void => {
    out.push({ check, value, shown: `${value.toFixed(2)}×`, aim: `≥ ${aim}×`, met: value >= aim });
  };

  // Throughput ratios: the peer's seconds over Cairn's (same bytes), so >1 means Cairn is faster.
  const first = find('first backup', 'cairn');
  const tar = find('first backup', 'tar|zstd');
  const resticFirst = find('first backup', 'restic');
  if (first && tar) times('first backup throughput, cairn vs tar|zstd -T2 -3', tar.seconds / first.seconds, 0.9);
  if (first && resticFirst) times('first backup throughput, cairn vs restic', resticFirst.seconds / first.seconds, 1.5);

  const unchanged = find('unchanged re-backup', 'cairn');
  if (first && unchanged) {
    const share = unchanged.seconds / first.seconds;
    out.push({
      check: 'unchanged re-backup time / first backup time (cairn)',
      value: share,
      shown: `${(share * 100).toFixed(1)}%`,
      aim: '< 5%',
      met: share < 0.05,
    });
  }

  // Dataset C's aim (PERFORMANCE.md: small files), which the 20,000 small files here stand for:
  // the share of the first backup above is dominated by per-run costs on a dataset this size.
  const resticUnchanged = find('unchanged re-backup', 'restic');
  if (unchanged && resticUnchanged) {
    const v = unchanged.seconds / resticUnchanged.seconds;
    out.push({ check: 'unchanged re-backup time, cairn / restic', value: v, shown: `${v.toFixed(2)}×`, aim: '≤ 0.5×', met: v <= 0.5 });
  }

  const restore = find('restore', 'cairn');
  const resticRestore = find('restore', 'restic');
  if (restore && resticRestore) times('restore throughput, cairn vs restic', resticRestore.seconds / restore.seconds, 1.5);

  const cairnRss = rows.filter((r) => r.tool === 'cairn' && r.peakRssMiB !== undefined).map((r) => r.peakRssMiB!);
  const peak = cairnRss.length ? Math.max(...cairnRss) : undefined;
  if (peak !== undefined)
    out.push({ check: 'cairn peak RSS, any scenario', value: peak, shown: `${peak.toFixed(0)} MiB`, aim: '< 256 MiB', met: peak < 256 });

  // Further aims from PERFORMANCE.md, on this synthetic data (its own caveat: real
  // database writes, not these, decide the incremental figures).
  if (first?.storedBytes && resticFirst?.storedBytes) {
    const v = first.storedBytes / resticFirst.storedBytes;
    out.push({ check: 'bytes stored after first backup, cairn / restic', value: v, shown: `${v.toFixed(2)}×`, aim: '≤ 1×', met: v <= 1 });
  }
  const changed = find('re-backup after changes', 'cairn');
  const resticChanged = find('re-backup after changes', 'restic');
  if (changed?.addedBytes !== undefined && resticChanged?.addedBytes) {
    const v = changed.addedBytes / resticChanged.addedBytes;
    out.push({ check: 'bytes added after changes, cairn / restic', value: v, shown: `${v.toFixed(2)}×`, aim: '≤ 0.5×', met: v <= 0.5 });
  }
  if (changed?.addedBytes !== undefined && changedBytes > 0) {
    const v = changed.addedBytes / changedBytes;
    out.push({
      check: 'bytes added after changes / bytes changed (cairn)',
      value: v,
      shown: `${v.toFixed(2)}×`,
      aim: 'information',
      met: undefined,
    });
  }
  const resticRss = rows.filter((r) => r.tool === 'restic' && r.peakRssMiB !== undefined).map((r) => r.peakRssMiB!);
  if (peak !== undefined && resticRss.length) {
    const v = peak / Math.max(...resticRss);
    out.push({ check: 'cairn peak RSS / restic peak RSS', value: v, shown: `${v.toFixed(2)}×`, aim: '≤ 1×', met: v <= 1 });
  }
  return out;
}

const mb = (bytes: number | undefined): string => (bytes === undefined ? '' : (bytes / MB).toFixed(1));

/** A plain-text table with aligned columns; numbers right-aligned. */
function table(header: string[], body: string[][], rightAligned: boolean[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    `| ${cells.map((c, i) => (rightAligned[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (rightAligned[i] ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [line(header), rule, ...body.map(line)].join('\n');
}

export function formatResults(rows: Row[], list: Ratio[]): string {
  const header = ['scenario', 'tool', 'seconds', 'MB/s', 'stored MB', 'added MB', 'peak RSS MiB'];
  const body = rows.map((r) => [
    r.scenario,
    r.tool,
    r.seconds.toFixed(2),
    r.mbPerSecond.toFixed(0),
    mb(r.storedBytes),
    mb(r.addedBytes),
    r.peakRssMiB === undefined ? '?' : r.peakRssMiB.toFixed(0),
  ]);
  const ratioBody = list.map((r) => [r.check, r.shown, r.aim, r.met === undefined ? '' : r.met ? 'met' : 'not met']);
  return [
    table(header, body, [false, false, true, true, true, true, true]),
    '',
    table(['ratio', 'value', 'aim', ''], ratioBody, [false, true, false, false]),
  ].join('\n');
}
