import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { main } from '../../../agent/cli/main.ts';
import { Output, formatBytes } from '../../../agent/cli/output.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { PASSPHRASE, SMALL, tempDir } from '../../helpers/repo.ts';

/** Keeps what is written to it; says it is a terminal when asked to, with a width. */
class Captured extends Writable {
  text = '';
  readonly isTTY: boolean;
  readonly columns = 160;
  constructor(tty: boolean) {
    super();
    this.isTTY = tty;
  }
  override _write(chunk: Buffer | string, _encoding: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

const UNITS: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };
const bytesOf = (shown: string): number => {
  const [value, unit] = shown.split(' ');
  return Number(value) * (UNITS[unit as string] as number);
};

/**
 * The progress line an operator watches on a terminal (issue 19): once the scan beside the
 * backup has counted the sources, done/total files and bytes, a rate and an ETA; and `added`,
 * the bytes stored in the repository so far, moving while data is stored.
 */
describe('the backup progress line on a terminal', () => {
  const dirs: Array<Awaited<ReturnType<typeof tempDir>>> = [];
  after(async () => {
    for (const dir of dirs) await dir.remove();
  });

  it('shows done/total files and bytes, a rate, an ETA, and an added that follows what is stored to the end', async () => {
    const repoDir = await tempDir('progress-line-repo');
    const src = await tempDir('progress-line-src');
    dirs.push(repoDir, src);
    // 1 MiB packs, so data is stored pack after pack while the walk still reads.
    await Repository.init(new FileStorage(repoDir.path), PASSPHRASE, { host: 'test-host', user: 'tester' }, SMALL);
    await mkdir(join(src.path, 'small'));
    for (let i = 0; i < 200; i++) await writeFile(join(src.path, 'small', `f${i}`), randomBytes(10_000));
    for (let i = 0; i < 8; i++) await writeFile(join(src.path, `large${i}`), randomBytes(1_000_000));
    const totalBytes = 200 * 10_000 + 8 * 1_000_000;

    const stdout = new Captured(false);
    const stderr = new Captured(true);
    // Uploads capped at 2 MB/s (a second's worth at once): the 10 MB take about 5 s and the walk,
    // held back by the full pipeline, reads for about 2 s of them, so the line (redrawn at most
    // every 250 ms, the rate and ETA from its second half-second on) shows them whatever the machine's speed.
    const env = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      CAIRN_REPOSITORY: repoDir.path,
      CAIRN_PASSWORD: PASSPHRASE,
    };
    const code = await main(['node', 'cairn', 'backup', '--limit-upload', '2', '--concurrency', '1', src.path], env, { stdout, stderr });
    assert.equal(code, 0, stderr.text);
    const stored = /added to the repository: (\S+ \S+) stored/.exec(stdout.text)?.[1];
    assert.ok(stored, stdout.text);

    const lines = stderr.text
      .split('\r\x1b[K')
      .map((l) => l.trim())
      .filter((l) => l.startsWith('backup:'));
    const full = new RegExp(`^backup: \\d+/208 files, (\\S+ \\S+)/${formatBytes(totalBytes)}, \\S+ \\S+/s, ETA [^,]+, added (\\S+ \\S+)$`);
    const complete = lines.map((l) => full.exec(l)).filter((m) => m !== null);
    assert.ok(complete.length > 0, `a line with totals, a rate and an ETA among:\n${lines.join('\n')}`);
    const added = lines.map((l) => /added (\S+ \S+)$/.exec(l)?.[1]).filter((a): a is string => a !== undefined);
    assert.ok(
      added.some((a) => bytesOf(a) > 0),
      `added moves while data is stored:\n${lines.join('\n')}`,
    );
    for (const a of added) assert.ok(bytesOf(a) <= bytesOf(stored), `added ${a} is at most the ${stored} stored`);
    // The line goes on while the last packs are stored after the walk: the last one drawn is at most
    // one pack (1 MiB, and the rounding of three digits) behind the summary.
    const last = added.at(-1) as string;
    assert.ok(bytesOf(last) >= bytesOf(stored) - 1.05 * 2 ** 20, `the last line's added ${last} is within a pack of the ${stored} stored`);
  });

  it('asks for totals for a terminal someone watches and for JSON progress, not for a quiet or piped run', () => {
    const want = (json: boolean, quiet: boolean, tty: boolean): boolean =>
      new Output({ json, quiet, streams: { stdout: new Captured(false), stderr: new Captured(tty) } }).wantsTotals;
    assert.equal(want(false, false, true), true);
    assert.equal(want(true, false, false), true, 'JSON progress events carry the totals');
    assert.equal(want(false, true, true), false);
    assert.equal(want(false, false, false), false);
  });
});
