import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { lstatSync } from 'node:fs';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Repository } from '../../../agent/core/repository.ts';
import { microsecondTime } from '../../../agent/files/restore-metadata.ts';
import { tempDir, initSmallRepo, fileRepo, backupDir, restoreTo } from '../../helpers/repo.ts';

/**
 * Restored mtimes are exact to the microsecond, the finest Node's fs calls set (libuv truncates
 * what it is given to microseconds). Passing the nearest double to the recorded nanoseconds lost a
 * microsecond whenever that double fell just below it: a file stamped 12:00:00.123456000 came back
 * as 12:00:00.123455, for about one file in ten with random nanoseconds and half of those stamped
 * in whole microseconds (tar, touch -d, rsync on file systems without nanoseconds).
 */

/** `touch` sets the nanoseconds exactly (Node's utimes cannot: it is the limit tested here). */
function stamp(path: string, time: string): void {
  execFileSync('touch', ['-h', '-m', '-d', `@${time}`, path]);
}

const floorMicros = (ns: bigint): bigint => (ns >= 0n ? ns / 1000n : -((-ns + 999n) / 1000n));

function micros(path: string): bigint {
  return floorMicros(lstatSync(path, { bigint: true }).mtimeNs);
}

/** Deterministic times: whole microseconds, and nanoseconds just above and below a microsecond, around 2023 and before 1970. */
function times(count: number): string[] {
  let seed = 0x2545f491;
  const next = (): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed;
  };
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const negative = i % 7 === 6;
    const seconds = negative ? -(1 + (next() % 300_000_000)) : 1_600_000_000 + (next() % 200_000_000);
    const micro = next() % 1_000_000;
    const nano = [0, 1, 999, 500, next() % 1000][i % 5] as number;
    out.push(`${seconds}.${String(micro).padStart(6, '0')}${String(nano).padStart(3, '0')}`);
  }
  return out;
}

describe('restored mtimes', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  let src: string;
  const paths: string[] = [];
  before(async () => {
    work = await tempDir('mtime-fidelity');
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
    src = join(work.path, 'src');
    await mkdir(join(src, 'dirs'), { recursive: true });
    const stamps = times(240);
    for (let i = 0; i < 200; i++) {
      const path = join(src, `f${i}`);
      // Mostly small files (the restore's writer thread), some past the small-file size (the main thread).
      await writeFile(path, i % 25 === 0 ? Buffer.alloc(300 << 10, i) : `file ${i}\n`);
      paths.push(path);
    }
    for (let i = 0; i < 20; i++) {
      const path = join(src, 'dirs', `d${i}`);
      await mkdir(path);
      paths.push(path);
    }
    for (let i = 0; i < 20; i++) {
      const path = join(src, `l${i}`);
      await symlink(`f${i}`, path);
      paths.push(path);
    }
    paths.forEach((path, i) => stamp(path, stamps[i] as string));
    stamp(join(src, 'dirs'), '1234567890.000001000');
    stamp(src, '-86400.999999999');
    paths.push(join(src, 'dirs'), src);
  });
  after(async () => {
    await work.remove();
  });

  it('come back exact to the microsecond: files, large files, directories, symlinks, times before 1970', async () => {
    const snapshot = await backupDir(repo, src);
    const target = join(work.path, 'target');
    const { result } = await restoreTo(repo, snapshot.id, target);
    assert.deepEqual(result.errors, []);
    const wrong = paths
      .map((path) => ({ path: path.slice(src.length), want: micros(path), got: micros(target + path.slice(src.length)) }))
      .filter(({ want, got }) => want !== got)
      .map(({ path, want, got }) => `${path || '/'}: ${want} µs, restored ${got} µs`);
    assert.deepEqual(wrong, []);
  });

  it('the time handed to utimes lands on the recorded microsecond, whatever the nanoseconds', () => {
    // What libuv does with the number (uv__fs_to_timespec): whole seconds toward zero, then the
    // fraction's nanoseconds toward zero, cut to microseconds, and a negative remainder borrowed.
    const landed = (time: number): bigint => {
      const seconds = Math.trunc(time);
      let nanos = Math.trunc((time - seconds) * 1e9);
      nanos -= nanos % 1000;
      return BigInt(seconds) * 1_000_000n + BigInt(nanos / 1000);
    };
    for (const time of [...times(5_000), '0.000000000', '-0.000000001', '-1.000000000', '4102444800.999999999']) {
      const [whole, fraction = ''] = time.split('.');
      const ns = BigInt(whole as string) * 1_000_000_000n + (time.startsWith('-') ? -1n : 1n) * BigInt(fraction.padEnd(9, '0'));
      assert.equal(landed(Number(microsecondTime(String(ns)))), floorMicros(ns), time);
    }
  });
});
