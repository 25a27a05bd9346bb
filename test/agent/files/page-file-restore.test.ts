import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { main } from '../../../agent/cli/main.ts';
import { SnapshotBrowser } from '../../../agent/commands/snapshot-browser.ts';
import { RepositorySource } from '../../../agent/engines/source.ts';
import { ExitCode } from '../../../agent/core/errors.ts';
import { contentSlices } from '../../../agent/core/file-content.ts';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import { Repository } from '../../../agent/core/repository.ts';
import type { TreeEntry } from '../../../agent/core/tree.ts';
import { Restorer } from '../../../agent/files/restorer.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { lastOfType, runCli } from '../../helpers/cli.ts';
import { PASSPHRASE, fileRepo, initSmallRepo, tempDir } from '../../helpers/repo.ts';
import { OK_CONTENT, craftPageFileSnapshot } from './page-file-craft.ts';

/*
 * Every reader that rebuilds a file's bytes handles page files (repository format 2,
 * core/page-file.ts): restore (the large-file path and its read-ahead), `cairn dump` of the
 * file, a tar `dump` of its directory, an engine's byte streams (engines/source.ts), and
 * `cairn diff`. The files are a PostgreSQL-style heap (8 KiB pages) and an InnoDB-style
 * tablespace (16 KiB pages, MariaDB full_crc32 flags); the second backup changes a few
 * scattered pages, so its entries interleave the first backup's pieces with short runs.
 */

const KiB = 1024;
const MiB = 1 << 20;
const PG = 'pg/base/16384/16397';
const INNODB = 'mysql/shop/orders.ibd';
/** Exactly 256 KiB: the smallest page file, restored by the small-file writer thread. */
const SMALL_PG = 'pg/base/16384/2619';

/** A PostgreSQL page: pd_lower, pd_upper, pd_special and pd_pagesize_version (8 KiB, layout 4) over random bytes. */
function pgPage(): Buffer {
  const page = randomBytes(8 * KiB);
  page.writeUInt16LE(24 + Math.floor(Math.random() * 200), 12);
  page.writeUInt16LE(4096, 14);
  page.writeUInt16LE(8192, 16);
  page.writeUInt16LE(0x2004, 18);
  return page;
}

/** An InnoDB page; the first is FSP_HDR with full_crc32 flags (marker 0x10 | ssize 5 = 16 KiB). */
function innodbPage(first: boolean): Buffer {
  const page = randomBytes(16 * KiB);
  page.writeUInt16LE(0, 18); // never a PostgreSQL header by accident
  if (first) {
    page.writeUInt16BE(8, 24);
    page.writeUInt32BE(0x15, 54);
  }
  return page;
}

class Collected extends Writable {
  text = '';
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

/** A PieceReader that counts reads of each piece. */
class CountingReader extends PieceReader {
  readonly reads = new Map<string, number>();
  override read(id: Buffer, options?: { detach?: boolean }): Promise<Buffer> {
    const key = id.toString('hex');
    this.reads.set(key, (this.reads.get(key) ?? 0) + 1);
    return super.read(id, options);
  }
}

describe('page files read back exactly through every reader', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let src: string;
  let repoPath: string;
  let env: Record<string, string>;
  const ids: string[] = [];
  /** The source files' bytes at each backup. */
  const versions: Array<Map<string, Buffer>> = [];
  const rawAdded: number[] = [];

  async function backupNow(): Promise<void> {
    const r = await runCli(['backup', src], env);
    assert.equal(r.code, 0, r.stderr);
    const summary = lastOfType(r, 'summary') as { snapshotId: string; rawBytesAdded: number };
    ids.push(summary.snapshotId);
    rawAdded.push(summary.rawBytesAdded);
    versions.push(new Map(await Promise.all([PG, INNODB, SMALL_PG].map(async (p) => [p, await readFile(join(src, p))] as const))));
  }

  async function entryOf(snapshot: string, path: string): Promise<TreeEntry> {
    const repo = await Repository.open(fileRepo(repoPath), PASSPHRASE);
    const browser = await SnapshotBrowser.open(repo);
    return (await browser.lookup(await repo.readSnapshot(snapshot), path)).entry;
  }

  /** `cairn dump ARGS` in-process, stdout into `file`. */
  async function dumpToFile(args: string[], file: string): Promise<{ code: number; stderr: string }> {
    const stdout = createWriteStream(file);
    const stderr = new Collected();
    const code = await main(
      ['node', 'cairn', 'dump', ...args],
      { PATH: process.env.PATH ?? '', HOME: work.path, ...env },
      { stdout, stderr },
    );
    await new Promise<void>((resolve) => stdout.end(resolve));
    return { code, stderr: stderr.text };
  }

  before(async () => {
    work = await tempDir('page-file-restore');
    src = join(work.path, 'src');
    await mkdir(join(src, 'pg/base/16384'), { recursive: true });
    await mkdir(join(src, 'mysql/shop'), { recursive: true });
    // 2 MiB and 5 pages, and a short last page; 1.25 MiB of InnoDB pages.
    const pg = Array.from({ length: 261 }, () => pgPage());
    pg.push(pgPage().subarray(0, 123 + 24));
    await writeFile(join(src, PG), Buffer.concat(pg));
    await writeFile(join(src, INNODB), Buffer.concat(Array.from({ length: 80 }, (_, i) => innodbPage(i === 0))));
    await writeFile(join(src, SMALL_PG), Buffer.concat(Array.from({ length: 32 }, () => pgPage())));
    await writeFile(join(src, 'notes.txt'), 'an ordinary file beside them\n');
    repoPath = join(work.path, 'repo');
    await initSmallRepo(fileRepo(repoPath));
    env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };
    await backupNow();
    // Scattered changes: single pages, two neighbours, the short last page.
    const pgBytes = await readFile(join(src, PG));
    for (const page of [3, 70, 71, 200]) pgPage().copy(pgBytes, page * 8 * KiB);
    randomBytes(100).copy(pgBytes, pgBytes.length - 100);
    await writeFile(join(src, PG), pgBytes);
    const innodb = await readFile(join(src, INNODB));
    for (const page of [5, 40, 77]) innodbPage(false).copy(innodb, page * 16 * KiB);
    await writeFile(join(src, INNODB), innodb);
    const small = await readFile(join(src, SMALL_PG));
    pgPage().copy(small, 10 * 8 * KiB);
    await writeFile(join(src, SMALL_PG), small);
    await backupNow();
  });
  after(async () => {
    await work.remove();
  });

  it('restoring either snapshot gives back its bytes exactly (both store the files as page files, the second few new bytes)', async () => {
    // The premises (the archiver's part): page files in both snapshots, and a small incremental.
    for (const [path, pageSize] of [
      [PG, 8192],
      [INNODB, 16384],
      [SMALL_PG, 8192],
    ] as const) {
      for (const [i, id] of ids.entries()) {
        const entry = await entryOf(id, path);
        assert.equal(entry.pageSize, pageSize, `${path} is a page file of ${pageSize}-byte pages`);
        assert.ok(entry.extentLists && entry.extentLists.length > 0, `${path} has extent lists`);
        assert.equal(entry.content, undefined);
        assert.equal(entry.size, versions[i]?.get(path)?.length);
      }
    }
    const total = (versions[1]?.get(PG)?.length ?? 0) + (versions[1]?.get(INNODB)?.length ?? 0);
    assert.ok(total > 3 * MiB);
    assert.ok((rawAdded[1] ?? Infinity) < total / 10, `the second backup added ${rawAdded[1]} bytes of ${total}`);
    for (const [i, id] of ids.entries()) {
      const target = join(work.path, `restored-${i}`);
      const r = await runCli(['restore', id, '--target', target], env);
      assert.equal(r.code, 0, r.stderr);
      for (const [path, bytes] of versions[i] ?? [])
        assert.ok((await readFile(join(target, path))).equals(bytes), `${path} of snapshot ${i}`);
      assert.equal(await readFile(join(target, 'notes.txt'), 'utf8'), 'an ordinary file beside them\n');
    }
  });

  it("a restore reads each of the second snapshot's pieces once, though its extents return to them", async () => {
    const repo = await Repository.open(fileRepo(repoPath), PASSPHRASE);
    const reader = new CountingReader(repo, await repo.loadIndex());
    const target = join(work.path, 'counted');
    await mkdir(target);
    // The premise: extents that come back to a piece after others.
    const pg = await entryOf(ids[1] as string, PG);
    const order: string[] = [];
    for await (const slice of contentSlices(pg, reader)) order.push(slice.id.toString('hex'));
    const returns = order.filter((id, i) => i > 0 && order.indexOf(id) < i && order[i - 1] !== id);
    assert.ok(returns.length >= 3, `${PG}'s extents return to a piece read before (${order.length} extents)`);
    reader.reads.clear();
    const restorer = new Restorer(reader, {
      target,
      includes: [],
      force: false,
      ignoreErrors: false,
      readAheadBytes: 32 * MiB,
      progress: silentProgress,
    });
    await restorer.run(await repo.readSnapshot(ids[1] as string));
    for (const [path, bytes] of versions[1] ?? []) assert.ok((await readFile(join(target, path))).equals(bytes), path);
    const reread = [...reader.reads].filter(([, n]) => n > 1);
    assert.deepEqual(reread, [], 'no piece read twice');
  });

  it('cairn dump of each file equals the source, for both snapshots', async () => {
    for (const [i, id] of ids.entries()) {
      for (const [path, bytes] of versions[i] ?? []) {
        const out = join(work.path, `dump-${i}-${path.replaceAll('/', '_')}`);
        const r = await dumpToFile([id, path], out);
        assert.equal(r.code, 0, r.stderr);
        assert.ok((await readFile(out)).equals(bytes), `${path} of snapshot ${i}`);
      }
    }
  });

  it('a tar dump of the directory extracted by tar -x equals the source', async () => {
    const archive = join(work.path, 'all.tar');
    const r = await dumpToFile([ids[1] as string, '/'], archive);
    assert.equal(r.code, 0, r.stderr);
    const out = join(work.path, 'untarred');
    await mkdir(out);
    const tar = spawnSync('tar', ['-x', '-f', archive, '-C', out], { encoding: 'utf8' });
    assert.equal(tar.status, 0, tar.stderr);
    for (const [path, bytes] of versions[1] ?? []) assert.ok((await readFile(join(out, path))).equals(bytes), path);
  });

  it("an engine's byte stream of a page file (engines/source.ts) is the file's bytes", async () => {
    const repo = await Repository.open(fileRepo(repoPath), PASSPHRASE);
    const reader = new PieceReader(repo, await repo.loadIndex());
    const source = new RepositorySource(await repo.readSnapshot(ids[1] as string), reader, () => Promise.resolve());
    for (const [path, bytes] of versions[1] ?? []) {
      const chunks: Buffer[] = [];
      for await (const chunk of source.open(path)) chunks.push(chunk as Buffer);
      assert.ok(Buffer.concat(chunks).equals(bytes), path);
    }
  });

  it('cairn diff reports the page files changed, and the unchanged one not', async () => {
    const r = await runCli(['diff', ids[0] as string, ids[1] as string], env);
    assert.equal(r.code, 0, r.stderr);
    const changes = r.lines.filter((l) => l.type === 'change').map((l) => l.entry as { path: string; change: string; fields?: string[] });
    for (const path of [PG, INNODB, SMALL_PG]) {
      const change = changes.find((c) => c.path === path);
      assert.equal(change?.change, 'changed', `${path}: ${JSON.stringify(changes)}`);
      assert.deepEqual(change.fields, ['content']);
    }
    assert.ok(!changes.some((c) => c.path === 'notes.txt'));
  });
});

describe('a crafted page file whose extents do not hold up is refused, and nothing of it is left', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  let env: Record<string, string>;
  before(async () => {
    work = await tempDir('page-file-crafted');
    const repoPath = join(work.path, 'repo');
    repo = await initSmallRepo(fileRepo(repoPath));
    env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };
  });
  after(async () => {
    await work.remove();
  });

  // Pieces of 300 KiB and 100 KiB, a file of 400 KiB: the pieces whole add up to the size (what a
  // reader that ignored the extents would write, and call complete), the extents do not hold up.
  const cases = [
    {
      what: 'an extent reaching past its piece’s end',
      extents: (a: Buffer, b: Buffer) => [
        { id: a, offset: 0, length: 100 * KiB },
        { id: b, offset: 50 * KiB, length: 300 * KiB },
      ],
      size: 400 * KiB,
    },
    {
      what: 'extents adding up to less than the size',
      extents: (a: Buffer, b: Buffer) => [
        { id: a, offset: 0, length: 300 * KiB },
        { id: b, offset: 0, length: 50 * KiB },
      ],
      size: 400 * KiB,
    },
    {
      what: 'a small page file (the writer thread’s path) with an extent past its piece',
      extents: (a: Buffer, b: Buffer) => [
        { id: b, offset: 0, length: 100 * KiB },
        { id: a, offset: 250 * KiB, length: 100 * KiB },
      ],
      size: 200 * KiB,
      pieces: [150 * KiB, 50 * KiB],
    },
  ];

  for (const c of cases) {
    it(`${c.what}: restore exits with the damage code and leaves no file at the path`, async () => {
      const id = await craftPageFileSnapshot(repo, {
        name: 'db.file',
        size: c.size,
        pieces: c.pieces ?? [300 * KiB, 100 * KiB],
        extents: c.extents,
      });
      const target = join(work.path, `restored-${randomBytes(4).toString('hex')}`);
      const r = await runCli(['restore', id, '--target', target], env);
      assert.equal(r.code, ExitCode.damaged, `${r.stdout}\n${r.stderr}`);
      const error = lastOfType(r, 'error') as { message: string };
      assert.match(error.message, /db\.file/);
      await assert.rejects(readFile(join(target, 'db.file')), { code: 'ENOENT' }, 'no half-written file');
      // Under --ignore-errors the rest is restored, the damaged file still is not, and the exit says partial.
      const partial = `${target}-partial`;
      const p = await runCli(['restore', id, '--target', partial, '--ignore-errors'], env);
      assert.equal(p.code, ExitCode.partial, `${p.stdout}\n${p.stderr}`);
      assert.ok((await readFile(join(partial, 'ok.txt'))).equals(OK_CONTENT));
      await assert.rejects(readFile(join(partial, 'db.file')), { code: 'ENOENT' }, 'no half-written file');
    });
  }
});
