import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { splitXbstream } from '../../../agent/engines/xbstream.ts';
import { CairnError } from '../../../agent/core/errors.ts';
import { CollectingSink } from '../../fuzz/sink.ts';
import { runCli, runCliProcess, lastOfType } from '../../helpers/cli.ts';
import { tempDir, PASSPHRASE } from '../../helpers/repo.ts';
import { missingMariadb, startMariadb, type MariadbServer } from '../../helpers/mariadb.ts';

/** One xbstream chunk as mariabackup writes it: the payload's checksum is zlib's CRC-32 (as mariabackup 10.11 writes it). */
function chunk(type: 'P' | 'E', path: string, offset = 0, payload: Buffer = Buffer.alloc(0)): Buffer {
  const name = Buffer.from(path, 'utf8');
  const head = Buffer.alloc(14);
  head.write('XBSTCK01', 0, 'latin1');
  head.write(type, 9, 'latin1');
  head.writeUInt32LE(name.length, 10);
  if (type === 'E') return Buffer.concat([head, name]);
  const meta = Buffer.alloc(20);
  meta.writeBigUInt64LE(BigInt(payload.length), 0);
  meta.writeBigUInt64LE(BigInt(offset), 8);
  meta.writeUInt32LE(crc32(payload), 16);
  return Buffer.concat([head, name, meta, payload]);
}

/** A small seeded generator (mulberry32): the same "random" cuts on every run, so a failure reproduces. */
function random(seed: number): (below: number) => number {
  let a = seed >>> 0;
  return (below) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * below;
  };
}

interface Built {
  stream: Buffer;
  files: Map<string, Buffer>;
  /** Where each payload chunk's bytes sit in the stream: for corrupting one of them. */
  payloads: Array<{ path: string; offset: number; start: number; length: number }>;
}

/** Files cut into chunks of random sizes, the chunks of different files interleaved (as --parallel does), each file ended. */
function buildStream(next: (below: number) => number, sizes: Record<string, number>, maxChunk: number): Built {
  const files = new Map<string, Buffer>();
  const pending: Array<{ path: string; data: Buffer; at: number }> = [];
  for (const [path, size] of Object.entries(sizes)) {
    const data = Buffer.alloc(size);
    for (let i = 0; i < size; i++) data[i] = Math.floor(next(256));
    files.set(path, data);
    pending.push({ path, data, at: 0 });
  }
  const parts: Buffer[] = [];
  const payloads: Built['payloads'] = [];
  let position = 0;
  const push = (part: Buffer): void => {
    parts.push(part);
    position += part.length;
  };
  while (pending.length > 0) {
    const index = Math.floor(next(pending.length));
    const file = pending[index]!;
    const length = Math.min(file.data.length - file.at, 1 + Math.floor(next(maxChunk)));
    const part = chunk('P', file.path, file.at, file.data.subarray(file.at, file.at + length));
    payloads.push({ path: file.path, offset: file.at, start: position + part.length - length, length });
    push(part);
    file.at += length;
    if (file.at >= file.data.length) {
      push(chunk('E', file.path));
      pending.splice(index, 1);
    }
  }
  return { stream: Buffer.concat(parts), files, payloads };
}

/** The stream as a pipe might deliver it: reads of random sizes between 1 and `maxRead` bytes, each a fresh buffer. */
async function* reads(data: Buffer, next: (below: number) => number, maxRead: number): AsyncIterable<Buffer> {
  for (let at = 0; at < data.length;) {
    const size = Math.min(data.length - at, 1 + Math.floor(next(maxRead)));
    yield Buffer.from(data.subarray(at, at + size));
    at += size;
    await Promise.resolve();
  }
}

describe('xbstream reader', () => {
  it('splits a stream of several interleaved files, delivered in many small reads of random sizes, into the right files and bytes', async () => {
    for (const [seed, maxRead] of [
      [1, 7],
      [2, 100],
      [3, 4096],
      [4, 70_000],
    ] as const) {
      const next = random(seed);
      const built = buildStream(
        next,
        { ibdata1: 200_000, 'shop/items.ibd': 150_000, 'shop/events.ibd': 90_001, ib_logfile0: 33_000, xtrabackup_info: 300 },
        40_000,
      );
      const sink = new CollectingSink();
      const count = await splitXbstream(reads(built.stream, next, maxRead), sink);
      assert.equal(count, built.files.size, `seed ${seed}`);
      assert.deepEqual([...sink.files.keys()].sort(), [...built.files.keys()].sort(), `seed ${seed}`);
      for (const [path, data] of built.files)
        assert.ok(sink.files.get(path)?.equals(data), `${path} (seed ${seed}, reads up to ${maxRead} bytes)`);
    }
  });

  it('passes on a 10 MiB chunk (the largest mariabackup writes) arriving in 64 KiB pipe reads, byte for byte', async () => {
    const next = random(5);
    const built = buildStream(next, { ibdata1: 10 << 20, 'mysql/db.ibd': 70_000 }, 10 << 20);
    assert.ok(
      built.payloads.some((p) => p.length > 8 << 20),
      'the stream holds a chunk of more than 8 MiB',
    );
    const sink = new CollectingSink();
    assert.equal(await splitXbstream(reads(built.stream, next, 65_536), sink), 2);
    for (const [path, data] of built.files) assert.ok(sink.files.get(path)?.equals(data), path);
  });

  it('one corrupt payload byte fails the split with Cairn.Failure naming the file and the chunk offset, and that file is never stored whole', async () => {
    const next = random(6);
    const built = buildStream(next, { ibdata1: 120_000, 'shop/items.ibd': 80_000, ib_logfile0: 5_000 }, 30_000);
    const target = built.payloads.find((p) => p.path === 'shop/items.ibd' && p.offset > 0 && p.length > 10)!;
    const damaged = Buffer.from(built.stream);
    damaged[target.start + Math.floor(target.length / 2)]! ^= 0x10;
    for (const maxRead of [13, 65_536]) {
      const sink = new CollectingSink();
      await assert.rejects(splitXbstream(reads(damaged, next, maxRead), sink), (error: unknown) => {
        assert.ok(error instanceof CairnError);
        assert.equal(error.code, 'Cairn.Failure');
        assert.match(error.message, /shop\/items\.ibd/);
        assert.match(error.message, new RegExp(`offset ${target.offset} .*checksum`));
        return true;
      });
      assert.equal(sink.files.has('shop/items.ibd'), false, 'the damaged file did not reach the sink as a finished file');
    }
    // The undamaged stream still splits: the failure is the flipped byte, not the stream.
    assert.equal(await splitXbstream(reads(built.stream, next, 13), new CollectingSink()), 3);
  });

  it('a wrong checksum field (payload intact) fails the same way', async () => {
    const part = chunk('P', 'ibdata1', 0, Buffer.from('page bytes'));
    part[14 + 'ibdata1'.length + 16]! ^= 0x01;
    await assert.rejects(
      splitXbstream(reads(Buffer.concat([part, chunk('E', 'ibdata1')]), random(7), 5), new CollectingSink()),
      /ibdata1 at offset 0 .*checksum/,
    );
  });
});

const skip =
  missingMariadb() ??
  (spawnSync('sh', ['-c', 'command -v mariabackup']).status === 0 ? undefined : 'needs mariabackup: apt-get install mariadb-backup');

/**
 * A stand-in for a damaged pipe between mariabackup and Cairn: run as
 * `corrupt.mjs REPORT`, it copies stdin to stdout, flipping one byte in the
 * first payload chunk that starts past a file's beginning, and writes that
 * chunk's path and offset to REPORT. Without REPORT it copies unchanged.
 */
const CORRUPTER = `
const report = process.argv[2];
const parts = [];
for await (const part of process.stdin) parts.push(part);
const data = Buffer.concat(parts);
if (report) {
  const { writeFileSync } = await import('node:fs');
  for (let at = 0; at < data.length; ) {
    const type = String.fromCharCode(data[at + 9]);
    const pathLength = data.readUInt32LE(at + 10);
    const path = data.subarray(at + 14, at + 14 + pathLength).toString('utf8');
    at += 14 + pathLength;
    if (type !== 'P') continue;
    const length = Number(data.readBigUInt64LE(at));
    const offset = Number(data.readBigUInt64LE(at + 8));
    at += 20;
    if (offset > 0 && length > 0) {
      data[at + Math.floor(length / 2)] ^= 0x04;
      writeFileSync(report, JSON.stringify({ path, offset }));
      break;
    }
    at += length;
  }
}
process.stdout.write(data);
`;

describe('a mariadb physical backup whose xbstream is damaged on the way commits nothing', { skip }, () => {
  let server: MariadbServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  before(async () => {
    server = await startMariadb();
    work = await tempDir('xbstream-damaged');
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE, CAIRN_DB_PASSWORD: server.password };
    assert.equal((await runCli(['init'], env)).code, 0);
    server.sql('CREATE DATABASE shop');
    server.sql('CREATE TABLE t (id INT PRIMARY KEY, body BLOB) ENGINE=InnoDB', 'shop');
    server.sql('INSERT INTO t SELECT seq, RANDOM_BYTES(1000) FROM seq_1_to_5000', 'shop');
  });
  after(async () => {
    await server?.stop();
    await work?.remove();
  });

  /** A directory holding a `mariabackup` that runs the real one through the corrupter (reporting to `report`, or clean). */
  async function wrapper(name: string, report: string | undefined): Promise<string> {
    const dir = join(work.path, name);
    await mkdir(dir);
    const real = spawnSync('sh', ['-c', 'command -v mariabackup'], { encoding: 'utf8' }).stdout.trim();
    await writeFile(join(dir, 'corrupt.mjs'), CORRUPTER);
    const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
    await writeFile(
      join(dir, 'mariabackup'),
      `#!/bin/bash\nset -o pipefail\n${quote(real)} "$@" | ${quote(process.execPath)} ${quote(join(dir, 'corrupt.mjs'))}${report ? ` ${quote(report)}` : ''}\n`,
    );
    await chmod(join(dir, 'mariabackup'), 0o755);
    return dir;
  }

  async function snapshotCount(): Promise<number> {
    const r = await runCli(['snapshots', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const listed = lastOfType(r, 'snapshots') as { snapshots?: unknown[] } | undefined;
    assert.ok(listed, `snapshots printed a list: ${r.stdout}`);
    return listed.snapshots?.length ?? 0;
  }

  it('the backup fails naming the damaged file and offset, and the repository lists no snapshot; the same path undamaged backs up', async () => {
    const conn = ['backup', '--engine', 'mariadb', '--db-host', '127.0.0.1', '--db-port', String(server.port), '--db-user', server.user];
    const report = join(work.path, 'corrupted.json');
    const damagedPath = await wrapper('damaged', report);
    const failed = await runCliProcess(conn, { ...env, PATH: `${damagedPath}:${process.env.PATH ?? ''}` });
    const corrupted = JSON.parse(await readFile(report, 'utf8')) as { path: string; offset: number };
    assert.notEqual(failed.code, 0, 'the backup failed');
    const output = failed.stdout + failed.stderr;
    assert.ok(
      output.includes(`${corrupted.path} at offset ${corrupted.offset}`),
      `the error names ${corrupted.path} at ${corrupted.offset}: ${output.slice(-2000)}`,
    );
    assert.match(output, /checksum/);
    assert.equal(await snapshotCount(), 0, 'nothing was committed');

    const cleanPath = await wrapper('clean', undefined);
    const ok = await runCliProcess(conn, { ...env, PATH: `${cleanPath}:${process.env.PATH ?? ''}` });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(await snapshotCount(), 1, 'the same pipe without the flipped byte commits a snapshot');
  });
});
