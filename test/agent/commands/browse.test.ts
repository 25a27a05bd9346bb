import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmod, mkdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Repository } from '../../../agent/core/repository.ts';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import type { Snapshot } from '../../../agent/core/snapshot.ts';
import type { DeletableStorage, ObjectInfo, PutOptions } from '../../../agent/core/storage.ts';
import { SnapshotBrowser } from '../../../agent/commands/snapshot-browser.ts';
import { dump } from '../../../agent/commands/file-dump.ts';
import { contentIds } from '../../../agent/pipeline/snapshot-writer.ts';
import { PathMatcher } from '../../../agent/files/glob.ts';
import { Restorer } from '../../../agent/files/restorer.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { CAIRN_BIN, runCli, lastOfType } from '../../helpers/cli.ts';
import { PASSPHRASE, SMALL, backupDir, fileRepo, initSmallRepo, restoreTo, tempDir } from '../../helpers/repo.ts';
import { Random, describeTree } from '../../helpers/tree.ts';

async function describeTreeFiles(root: string): Promise<string[]> {
  return (await describeTree(root)).filter((d) => d.type === 'file').map((d) => d.path);
}

/** Runs the CLI and keeps stdout as bytes (dump output is binary). */
function runRaw(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CAIRN_BIN, ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', CAIRN_JSON: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr }));
  });
}

/** Records which objects are read, to show what a command fetched. */
class CountingStorage implements DeletableStorage {
  readonly location: string;
  readonly atomicCreate: boolean;
  readonly reads: string[] = [];
  private readonly inner: DeletableStorage;
  constructor(inner: DeletableStorage) {
    this.inner = inner;
    this.location = inner.location;
    this.atomicCreate = inner.atomicCreate;
  }
  packsRead(): string[] {
    return [...new Set(this.reads.filter((k) => k.startsWith('packs/')).map((k) => k.slice(k.lastIndexOf('/') + 1)))].sort();
  }
  get(key: string): Promise<Buffer> {
    this.reads.push(key);
    return this.inner.get(key);
  }
  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    this.reads.push(key);
    return this.inner.getRange(key, offset, length);
  }
  put(key: string, data: Buffer, options?: PutOptions): Promise<void> {
    return this.inner.put(key, data, options);
  }
  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.inner.stat(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
}

const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;
const T = (iso: string): Date => new Date(iso);

describe('browsing snapshots: ls, find, diff, dump', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  let v1: Snapshot;
  let v2: Snapshot;
  const data1 = new Random(11).bytes(200_000, false);
  const data2 = new Random(12).bytes(250_000, false);

  before(async () => {
    work = await tempDir('browse');
    const src = join(work.path, 'src');
    const repoPath = join(work.path, 'repo');
    env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };
    const repo = await initSmallRepo(fileRepo(repoPath));

    // Version 1.
    data1.fill(0, 1000, 5000); // zeros and every byte value: binary content
    await mkdir(join(src, 'bin'), { recursive: true });
    await mkdir(join(src, 'docs'));
    await mkdir(join(src, 'empty'));
    await writeFile(join(src, 'a.txt'), 'alpha\n');
    await writeFile(join(src, 'bin', 'data.bin'), data1);
    await writeFile(join(src, 'bin', 'tool'), '#!/bin/sh\n');
    await writeFile(join(src, 'docs', 'readme.txt'), 'read me\n');
    await symlink('a.txt', join(src, 'link'));
    await chmod(join(src, 'a.txt'), 0o644);
    await chmod(join(src, 'bin', 'data.bin'), 0o600);
    await chmod(join(src, 'bin', 'tool'), 0o755);
    await chmod(join(src, 'docs', 'readme.txt'), 0o644);
    await chmod(join(src, 'empty'), 0o700);
    await utimes(join(src, 'a.txt'), T('2024-01-02T03:04:05.500Z'), T('2024-01-02T03:04:05.500Z'));
    await utimes(join(src, 'bin', 'data.bin'), T('2024-01-03T00:00:00Z'), T('2024-01-03T00:00:00Z'));
    await utimes(join(src, 'bin', 'tool'), T('2024-01-04T00:00:00Z'), T('2024-01-04T00:00:00Z'));
    await utimes(join(src, 'docs', 'readme.txt'), T('2024-01-05T00:00:00Z'), T('2024-01-05T00:00:00Z'));
    for (const d of ['bin', 'docs', 'empty']) await utimes(join(src, d), T('2024-02-01T00:00:00Z'), T('2024-02-01T00:00:00Z'));
    v1 = await backupDir(repo, src, { tags: ['v1'] });

    // Version 2: a mode change only, a content change, a file replaced, a new directory with content, a directory gone.
    await chmod(join(src, 'a.txt'), 0o600);
    await writeFile(join(src, 'bin', 'data.bin'), data2);
    await utimes(join(src, 'bin', 'data.bin'), T('2024-03-03T00:00:00Z'), T('2024-03-03T00:00:00Z'));
    await rm(join(src, 'docs', 'readme.txt'));
    await writeFile(join(src, 'docs', 'new.txt'), 'new\n');
    await chmod(join(src, 'docs', 'new.txt'), 0o644);
    await utimes(join(src, 'docs', 'new.txt'), T('2024-03-05T00:00:00Z'), T('2024-03-05T00:00:00Z'));
    await mkdir(join(src, 'extra', 'deep'), { recursive: true });
    await writeFile(join(src, 'extra', 'deep', 'f.txt'), 'deep\n');
    await chmod(join(src, 'extra', 'deep', 'f.txt'), 0o640);
    await utimes(join(src, 'extra', 'deep', 'f.txt'), T('2024-03-06T00:00:00Z'), T('2024-03-06T00:00:00Z'));
    await rm(join(src, 'empty'), { recursive: true });
    for (const d of ['bin', 'docs', 'extra', 'extra/deep']) {
      await chmod(join(src, d), 0o755);
      await utimes(join(src, d), T('2024-04-01T00:00:00Z'), T('2024-04-01T00:00:00Z'));
    }
    v2 = await backupDir(repo, src);
  });
  after(async () => {
    await work.remove();
  });

  const entries = (r: Awaited<ReturnType<typeof runCli>>): Array<Record<string, unknown>> =>
    r.lines.filter((l) => l.type === 'entry').map((l) => l.entry as Record<string, unknown>);

  it('ls lists a directory like ls -l, one entry per line, and "latest" is the newest snapshot', async () => {
    const r = await runCli(['ls', 'latest', '/'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.lines.every((l) => l.type !== 'entry' || l.snapshotId === v2.id));
    assert.deepEqual(entries(r), [
      { path: 'a.txt', name: 'a.txt', type: 'file', mode: 0o600, uid, gid, size: 6, mtime: '2024-01-02T03:04:05.500Z' },
      { path: 'bin', name: 'bin', type: 'dir', mode: 0o755, uid, gid, size: 0, mtime: '2024-04-01T00:00:00.000Z' },
      { path: 'docs', name: 'docs', type: 'dir', mode: 0o755, uid, gid, size: 0, mtime: '2024-04-01T00:00:00.000Z' },
      { path: 'extra', name: 'extra', type: 'dir', mode: 0o755, uid, gid, size: 0, mtime: '2024-04-01T00:00:00.000Z' },
      {
        path: 'link',
        name: 'link',
        type: 'symlink',
        mode: (entries(r)[4] as { mode: number }).mode,
        uid,
        gid,
        size: 0,
        mtime: (entries(r)[4] as { mtime: string }).mtime,
        target: 'a.txt',
      },
    ]);
    assert.deepEqual(lastOfType(r, 'ls'), { ...lastOfType(r, 'ls'), snapshotId: v2.id, entries: 5, bytes: 6 });
  });

  it('ls of a subdirectory, recursively, of a file, and of a missing path', async () => {
    const sub = await runCli(['ls', v1.id.slice(0, 8), 'bin'], env);
    assert.equal(sub.code, 0, sub.stderr);
    assert.deepEqual(entries(sub), [
      { path: 'bin/data.bin', name: 'data.bin', type: 'file', mode: 0o600, uid, gid, size: 200_000, mtime: '2024-01-03T00:00:00.000Z' },
      { path: 'bin/tool', name: 'tool', type: 'file', mode: 0o755, uid, gid, size: 10, mtime: '2024-01-04T00:00:00.000Z' },
    ]);
    const all = await runCli(['ls', '--recursive', v2.id, '/'], env);
    assert.deepEqual(
      entries(all).map((e) => e.path),
      ['a.txt', 'bin', 'bin/data.bin', 'bin/tool', 'docs', 'docs/new.txt', 'extra', 'extra/deep', 'extra/deep/f.txt', 'link'],
    );
    const one = await runCli(['ls', v2.id, 'extra/deep/f.txt'], env);
    assert.deepEqual(entries(one), [
      { path: 'extra/deep/f.txt', name: 'f.txt', type: 'file', mode: 0o640, uid, gid, size: 5, mtime: '2024-03-06T00:00:00.000Z' },
    ]);
    const missing = await runCli(['ls', v1.id, 'extra'], env);
    assert.equal(missing.code, 13);
    assert.match(missing.stderr, /no extra in snapshot/);
  });

  it('find says which snapshots hold matching paths, with size and mtime, filtered by --snapshot and --host', async () => {
    const r = await runCli(['find', '*.txt'], env);
    assert.equal(r.code, 0, r.stderr);
    const matches = r.lines
      .filter((l) => l.type === 'match')
      .map((l) => ({
        snapshot: l.snapshotId,
        path: (l.entry as { path: string }).path,
        size: (l.entry as { size: number }).size,
        mtime: (l.entry as { mtime: string }).mtime,
      }));
    assert.deepEqual(matches, [
      { snapshot: v1.id, path: 'a.txt', size: 6, mtime: '2024-01-02T03:04:05.500Z' },
      { snapshot: v1.id, path: 'docs/readme.txt', size: 8, mtime: '2024-01-05T00:00:00.000Z' },
      { snapshot: v2.id, path: 'a.txt', size: 6, mtime: '2024-01-02T03:04:05.500Z' },
      { snapshot: v2.id, path: 'docs/new.txt', size: 4, mtime: '2024-03-05T00:00:00.000Z' },
      { snapshot: v2.id, path: 'extra/deep/f.txt', size: 5, mtime: '2024-03-06T00:00:00.000Z' },
    ]);
    assert.deepEqual(lastOfType(r, 'find'), { ...lastOfType(r, 'find'), searched: 2, snapshots: 2, matches: 5 });

    const anchored = await runCli(['find', 'docs/*', '--snapshot', v1.id.slice(0, 10)], env);
    assert.deepEqual(
      anchored.lines.filter((l) => l.type === 'match').map((l) => [l.snapshotId, (l.entry as { path: string }).path]),
      [[v1.id, 'docs/readme.txt']],
    );
    const otherHost = await runCli(['find', '*.txt', '--host', 'elsewhere'], env);
    assert.deepEqual(lastOfType(otherHost, 'find'), { ...lastOfType(otherHost, 'find'), searched: 0, matches: 0 });
    const byTag = await runCli(['find', 'f.txt', '--host', 'test-host', '--tag', 'v1'], env);
    assert.deepEqual(lastOfType(byTag, 'find'), { ...lastOfType(byTag, 'find'), searched: 1, matches: 0 });
  });

  it('diff reports added, removed, content-changed and metadata-only entries with sizes, and a summary', async () => {
    const r = await runCli(['diff', v1.id.slice(0, 8), 'latest'], env);
    assert.equal(r.code, 0, r.stderr);
    const changes = r.lines.filter((l) => l.type === 'change').map((l) => l.entry);
    assert.deepEqual(changes, [
      { change: 'metadata', path: 'a.txt', type: 'file', sizeBefore: 6, sizeAfter: 6, fields: ['mode'] },
      { change: 'changed', path: 'bin/data.bin', type: 'file', sizeBefore: 200_000, sizeAfter: 250_000, fields: ['content'] },
      { change: 'added', path: 'docs/new.txt', type: 'file', sizeAfter: 4 },
      { change: 'removed', path: 'docs/readme.txt', type: 'file', sizeBefore: 8 },
      { change: 'removed', path: 'empty', type: 'dir', sizeBefore: 0 },
      { change: 'added', path: 'extra', type: 'dir', sizeAfter: 0 },
      { change: 'added', path: 'extra/deep', type: 'dir', sizeAfter: 0 },
      { change: 'added', path: 'extra/deep/f.txt', type: 'file', sizeAfter: 5 },
    ]);
    const summary = lastOfType(r, 'diff') as Record<string, unknown>;
    assert.equal(summary.a, v1.id);
    assert.equal(summary.b, v2.id);
    assert.deepEqual(summary.added, { files: 2, dirs: 2, symlinks: 0, bytes: 9 });
    assert.deepEqual(summary.removed, { files: 1, dirs: 1, symlinks: 0, bytes: 8 });
    assert.deepEqual(summary.changed, { entries: 1, bytesBefore: 200_000, bytesAfter: 250_000 });
    assert.deepEqual(summary.metadata, { entries: 1 });
    const same = await runCli(['diff', v2.id, v2.id], env);
    assert.equal(same.lines.filter((l) => l.type === 'change').length, 0, 'a snapshot does not differ from itself');
  });

  it('dump writes one file byte for byte to stdout, a directory as a tar archive, and refuses a symlink', async () => {
    const old = await runRaw(['dump', v1.id, 'bin/data.bin'], env);
    assert.equal(old.code, 0, old.stderr);
    assert.ok(old.stdout.equals(data1), `dumped ${old.stdout.length} bytes`);
    const latest = await runRaw(['dump', 'latest', '/bin/data.bin'], env);
    assert.ok(latest.stdout.equals(data2));
    const small = await runRaw(['dump', v2.id, 'extra/deep/f.txt'], env);
    assert.equal(small.stdout.toString(), 'deep\n');
    const dir = await runRaw(['dump', v2.id, 'extra/deep'], env);
    assert.equal(dir.code, 0, dir.stderr);
    const listed = spawnSync('tar', ['-t'], { input: dir.stdout, encoding: 'utf8' });
    assert.deepEqual(listed.stdout.split('\n'), ['extra/deep/', 'extra/deep/f.txt', ''], listed.stderr);
    const link = await runRaw(['dump', v2.id, 'link'], env);
    assert.equal(link.code, 2);
    assert.match(link.stderr, /link is a symlink to "a.txt"/);
  });

  it('snapshots --group-by and --tag/--host filters', async () => {
    const grouped = lastOfType(await runCli(['snapshots', '--group-by', 'host,tags'], env), 'snapshots') as {
      groups: Array<{ group: unknown; snapshots: Array<{ id: string }> }>;
    };
    assert.deepEqual(
      grouped.groups.map((g) => [g.group, g.snapshots.map((s) => s.id)]),
      [
        [{ host: 'test-host', tags: ['v1'] }, [v1.id]],
        [{ host: 'test-host', tags: [] }, [v2.id]],
      ],
    );
    const tagged = lastOfType(await runCli(['snapshots', '--tag', 'v1'], env), 'snapshots') as { snapshots: Array<{ id: string }> };
    assert.deepEqual(
      tagged.snapshots.map((s) => s.id),
      [v1.id],
    );
    const none = lastOfType(await runCli(['snapshots', '--host', 'elsewhere'], env), 'snapshots') as { snapshots: unknown[] };
    assert.equal(none.snapshots.length, 0);
  });
});

describe('reading only what is needed', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let counting: CountingStorage;
  let snapshot: Snapshot;
  let plain: SnapshotBrowser;
  const files: Record<string, Buffer> = {};

  before(async () => {
    work = await tempDir('browse-reads');
    const src = join(work.path, 'src');
    // Files of 1.5 MiB of random data in 1 MiB packs: each file's pieces sit in packs of their own.
    // Eight files (12 MB) make at least nine packs whatever sizes the packs close at (up to packSize +
    // a frame): five files made seven or eight, and the test's 'many packs' premise then failed by chance.
    const layout = ['d1/f1', 'd2/f2', 'd2/deep/f3', 'd3/f4', 'f5', 'd3/f6', 'd4/f7', 'f8'];
    for (const [i, rel] of layout.entries()) {
      files[rel] = new Random(100 + i).bytes(1_500_000, false);
      await mkdir(join(src, rel, '..'), { recursive: true });
      await writeFile(join(src, rel), files[rel]);
    }
    const storage = fileRepo(join(work.path, 'repo'));
    const repo = await Repository.init(storage, PASSPHRASE, { host: 'test-host', user: 'tester' }, SMALL);
    snapshot = await backupDir(repo, src);
    plain = await SnapshotBrowser.open(repo);
    counting = new CountingStorage(storage);
  });
  after(async () => {
    await work.remove();
  });

  /** Packs of the file's pieces and of the trees on its path (root included). */
  async function expectedPacks(rel: string): Promise<{ packs: string[]; trees: string[] }> {
    const trees = [snapshot.tree];
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) trees.push((await plain.lookup(snapshot, parts.slice(0, i).join('/'))).entry.subtree as string);
    const { entry } = await plain.lookup(snapshot, rel);
    const packs = new Set(trees.map((t) => plain.reader.location(Buffer.from(t, 'hex')).packId));
    for await (const id of contentIds(entry, plain.reader)) packs.add(plain.reader.location(id).packId);
    return { packs: [...packs].sort(), trees };
  }

  async function allPacks(): Promise<string[]> {
    const out: string[] = [];
    for await (const o of counting.list('packs/')) out.push(o.key.slice(o.key.lastIndexOf('/') + 1));
    return out;
  }

  it('dump of one file reads only its packs and the packs of the trees on its path, and waits for a slow reader', async () => {
    const expected = await expectedPacks('d2/deep/f3');
    const total = (await allPacks()).length;
    assert.ok(
      total >= 8 && expected.packs.length <= 4,
      `the test needs the file to be in a few of many packs (${expected.packs.length} of ${total})`,
    );

    const repo = await Repository.open(counting, PASSPHRASE);
    counting.reads.length = 0;
    const browser = await SnapshotBrowser.open(repo);
    const chunks: Buffer[] = [];
    let maxBuffered = 0;
    // A reader that takes one chunk per turn of the event loop, with a one-byte buffer: the dump must wait for it.
    const out = new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _enc, callback) {
        chunks.push(chunk);
        setImmediate(callback);
      },
    });
    const originalWrite = out.write.bind(out);
    out.write = ((chunk: Buffer, callback?: (error?: Error | null) => void) => {
      const accepted = originalWrite(chunk, callback);
      maxBuffered = Math.max(maxBuffered, out.writableLength);
      return accepted;
    }) as typeof out.write;
    const result = await dump(browser, await repo.findSnapshot(snapshot.id.slice(0, 6)), 'd2/deep/f3', out);
    assert.equal(result.bytes, 1_500_000);
    assert.ok(Buffer.concat(chunks).equals(files['d2/deep/f3'] as Buffer));
    assert.deepEqual(counting.packsRead(), expected.packs);
    assert.ok(maxBuffered <= SMALL.chunker.max, `at most one piece waits in the output (saw ${maxBuffered} bytes)`);
  });

  it('restore --include of one file fetches only its packs and reads only the trees on its path', async () => {
    const expected = await expectedPacks('d2/deep/f3');
    const repo = await Repository.open(counting, PASSPHRASE);
    counting.reads.length = 0;
    const target = join(work.path, 'restored-one');
    const { result } = await restoreTo(repo, snapshot.id, target, { includes: ['d2/deep/f3'] });
    assert.equal(result.files, 1);
    assert.deepEqual(counting.packsRead(), expected.packs);
    assert.deepEqual(await describeTreeFiles(target), ['d2/deep/f3']);
    assert.ok((await readFile(join(target, 'd2', 'deep', 'f3'))).equals(files['d2/deep/f3'] as Buffer));

    // Trees: the root, d2 and d2/deep are read; d1's and d3's are not.
    class CountingReader extends PieceReader {
      readonly ids = new Set<string>();
      override async read(id: Buffer, options?: { detach?: boolean }): Promise<Buffer> {
        this.ids.add(id.toString('hex'));
        return super.read(id, options);
      }
    }
    const reader = new CountingReader(repo, await repo.loadIndex());
    await mkdir(join(work.path, 'restored-two'));
    await new Restorer(reader, {
      target: join(work.path, 'restored-two'),
      includes: ['d2/deep/f3'],
      force: false,
      ignoreErrors: false,
      readAheadBytes: 16 << 20,
      progress: silentProgress,
    }).run(snapshot);
    for (const t of expected.trees) assert.ok(reader.ids.has(t), `tree ${t} on the path was read`);
    for (const other of ['d1', 'd3']) {
      const tree = (await plain.lookup(snapshot, other)).entry.subtree as string;
      assert.ok(!reader.ids.has(tree), `the tree of ${other} was not read`);
    }
  });

  it('a path pattern prunes directories it cannot reach; a name pattern reaches everywhere', () => {
    const m = new PathMatcher(['d2/deep/f3', 'logs/**/x']);
    assert.equal(m.mayMatchBelow('d2'), true);
    assert.equal(m.mayMatchBelow('d2/deep'), true);
    assert.equal(m.mayMatchBelow('d1'), false);
    assert.equal(m.mayMatchBelow('d2/other'), false);
    assert.equal(m.mayMatchBelow('logs/a/b'), true);
    assert.equal(new PathMatcher(['*.txt']).mayMatchBelow('any/where'), true);
    assert.equal(new PathMatcher(['d?/deep']).mayMatchBelow('d2/deep/below'), true, 'below a matched directory');
  });
});
