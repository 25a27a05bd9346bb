import type { Writable } from 'node:stream';
import type { ProgressEvent, ProgressListener } from '../progress/progress.ts';

/** At most one JSON progress event this often. */
const JSON_EVERY_MS = 10_000;

/** Where the CLI writes: the process's streams, or a test's (main's third argument). */
export interface CliStreams {
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable & { isTTY?: boolean; columns?: number };
}

export const processStreams = (): CliStreams => ({ stdout: process.stdout, stderr: process.stderr });

/**
 * Where a command's words go. On a terminal: a progress line on stderr and
 * readable text on stdout. Otherwise (or with --json): one JSON object per
 * line on stdout — what SSM Run Command and scripts capture.
 */
export class Output implements ProgressListener {
  readonly json: boolean;
  private readonly quiet: boolean;
  private readonly tty: boolean;
  private lastLine = 0;
  private lastJson = 0;
  private lineShown = false;
  private rate: { at: number; bytes: number } | undefined;
  private readonly streams: CliStreams;

  constructor(options: { json: boolean; quiet: boolean; streams?: CliStreams | undefined }) {
    this.streams = options.streams ?? processStreams();
    this.tty = Boolean(this.streams.stderr.isTTY) && !options.json;
    this.json = options.json;
    this.quiet = options.quiet;
  }

  /** Totals (and so a scan beside the backup) for a progress line someone sees, and for JSON progress events, which carry them. */
  get wantsTotals(): boolean {
    return this.json || (this.tty && !this.quiet);
  }

  /** JSON progress comes every JSON_EVERY_MS: totals are needed from its second event on, and a scan started 2 s in has 8 s to count. */
  get totalsAfterMs(): number {
    return this.json ? 2_000 : 0;
  }

  progress(event: ProgressEvent): void {
    const now = Date.now();
    if (this.json) {
      if (now - this.lastJson < JSON_EVERY_MS) return;
      this.lastJson = now;
      this.emit({ type: 'progress', ...event });
      return;
    }
    if (!this.tty || this.quiet || now - this.lastLine < 250) return;
    this.lastLine = now;
    this.rate ??= { at: now, bytes: event.bytes };
    const seconds = (now - this.rate.at) / 1000;
    const speed = seconds > 0.5 ? (event.bytes - this.rate.bytes) / seconds : 0;
    const parts = [
      `${event.phase}: ${event.files}${event.totalFiles ? `/${event.totalFiles}` : ''} files`,
      formatBytes(event.bytes) + (event.totalBytes ? `/${formatBytes(event.totalBytes)}` : ''),
    ];
    if (speed > 0) parts.push(`${formatBytes(speed)}/s`);
    if (speed > 0 && event.totalBytes && event.totalBytes > event.bytes)
      parts.push(`ETA ${formatDuration(((event.totalBytes - event.bytes) / speed) * 1000)}`);
    if (event.bytesAdded !== undefined) parts.push(`added ${formatBytes(event.bytesAdded)}`);
    const line = parts.join(', ');
    this.streams.stderr.write(`\r\x1b[K${line.slice(0, (this.streams.stderr.columns || 100) - 1)}`);
    this.lineShown = true;
  }

  warn(message: string, details: Record<string, unknown> = {}): void {
    if (this.json) this.emit({ type: 'warning', message, ...details });
    else {
      this.clearLine();
      this.streams.stderr.write(`warning: ${message}\n`);
    }
  }

  /** A result: JSON mode prints `data`, text mode prints `text`. */
  result(data: Record<string, unknown>, text: string): void {
    this.clearLine();
    if (this.json) this.emit(data);
    else if (text.length > 0) this.streams.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  error(data: { code: string; message: string; hint?: string | undefined; exitCode: number }): void {
    this.clearLine();
    if (this.json) this.emit({ type: 'error', ...data });
    this.streams.stderr.write(`cairn: ${data.message}\n${data.hint ? `hint: ${data.hint}\n` : ''}`);
  }

  private clearLine(): void {
    if (this.lineShown) {
      this.streams.stderr.write('\r\x1b[K');
      this.lineShown = false;
    }
  }

  private emit(data: Record<string, unknown>): void {
    this.streams.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...data })}\n`);
  }
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value.toFixed(0) : value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60)
    return `${m}m${Math.round(s % 60)
      .toString()
      .padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${(m % 60).toString().padStart(2, '0')}m`;
}
