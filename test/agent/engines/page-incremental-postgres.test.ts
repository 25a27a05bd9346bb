import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdtemp, open, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Repository } from '../../../agent/core/repository.ts';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import { contentBytes } from '../../../agent/core/file-content.ts';
import { detectPageSize, MIN_PAGE_FILE } from '../../../agent/core/page-file.ts';
import { decodeTree, type TreeEntry } from '../../../agent/core/tree.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { tempDir, PASSPHRASE } from '../../helpers/repo.ts';
import { missingPostgres, startPostgres, type PostgresServer } from '../../helpers/postgres.ts';

/*
 * Page files (repository format 2) against a real PostgreSQL 15 cluster: a
 * pgbench database (scale 5, about 80 MB), backed up, written to by a bounded
 * number of pgbench transactions, checkpointed and backed up again. The second
 * backup must store the changed pages, not the 1 MiB pieces around them: what it
 * adds is compared with the pages that really changed (the files are compared
 * page by page between the two backups), and its relation files are page files.
 * Both snapshots read back byte for byte (through the library's one content
 * reader), and the second restores to a cluster that starts and holds the rows.
 *
 * Two ways in: a files backup of the stopped data directory, and the postgres
 * engine (pg_basebackup's tar, whose files find their parent entry by path).
 */

const SCALE = Number(process.env.CAIRN_PAGE_TEST_SCALE ?? 5);
const TRANSACTIONS_PER_CLIENT = 200;
const PAGE = 8192;
const BIN = '/usr/lib/postgresql/15/bin';

const skip =
  missingPostgres() ??
  (spawnSync('sh', ['-c', 'command -v pg_basebackup && command -v pgbench']).status === 0
    ? undefined
    : 'needs pg_basebackup and pgbench: apt-get install postgresql postgresql-contrib');

const asRoot = process.getuid?.() === 0;
const asPostgres = (argv: string[]): string[] => (asRoot ? ['runuser', '-u', 'postgres', '--', ...argv] : argv);

function pgbench(server: PostgresServer, args: string[]): void {
  const run = spawnSync('pgbench', [...args, '-h', '127.0.0.1', '-p', String(server.port), '-U', 'postgres', 'bench'], {
    env: { ...process.env, PGPASSWORD: server.password },
    encoding: 'utf8',
  });
  assert.equal(run.status, 0, run.stderr);
}

/** Stops the server and keeps its data directory (the helper's stop removes it). */
function stopKeeping(server: PostgresServer): void {
  const argv = asPostgres([join(BIN, 'pg_ctl'), '-D', server.dataDir, '-m', 'fast', '-w', 'stop']);
  const stop = spawnSync(argv[0] as string, argv.slice(1), { encoding: 'utf8', cwd: '/tmp' });
  assert.equal(stop.status, 0, stop.stderr);
}

/** What the rows say: the same on a restored cluster as on the live one at backup time. */
function rowState(server: PostgresServer): string {
  return server.sql(
    'SELECT (SELECT count(*) FROM pgbench_accounts), (SELECT sum(abalance) FROM pgbench_accounts), (SELECT count(*) FROM pgbench_history), (SELECT sum(delta) FROM pgbench_history), (SELECT sum(tbalance) FROM pgbench_tellers)',
    'bench',
  );
}

/** One file of a data directory: its size, and a hash per page (the whole file as one "page" when it is no page file). */
interface FileState {
  size: number;
  pages: string[] | undefined;
  hash: string;
}

/** Every regular file of a stopped data directory (or what a snapshot holds), with per-page hashes for page files. */
function stateOf(bytes: Buffer): FileState {
  const isPageFile = bytes.length >= MIN_PAGE_FILE && detectPageSize(bytes.subarray(0, MIN_PAGE_FILE)) === PAGE;
  const pages: string[] = [];
  if (isPageFile)
    for (let at = 0; at < bytes.length; at += PAGE)
      pages.push(
        createHash('sha256')
          .update(bytes.subarray(at, at + PAGE))
          .digest('hex'),
      );
  return { size: bytes.length, pages: isPageFile ? pages : undefined, hash: createHash('sha256').update(bytes).digest('hex') };
}

async function dirState(root: string, rel = ''): Promise<Map<string, FileState>> {
  const out = new Map<string, FileState>();
  for (const entry of await readdir(join(root, rel), { withFileTypes: true })) {
    const path = rel ? `${rel}/${entry.name}` : entry.name;
    if (entry.isDirectory()) for (const [p, s] of await dirState(root, path)) out.set(p, s);
    else if (entry.isFile()) {
      const file = await open(join(root, path), 'r');
      try {
        out.set(path, stateOf(await file.readFile()));
      } finally {
        await file.close();
      }
    }
  }
  return out;
}

/** Bytes of the pages that changed (page files) and of the files that changed (others) between two states. */
function changedBytes(
  before: Map<string, FileState>,
  after: Map<string, FileState>,
): { pages: number; pageBytes: number; otherBytes: number; pageFiles: number } {
  let pages = 0;
  let pageBytes = 0;
  let otherBytes = 0;
  let pageFiles = 0;
  for (const [path, now] of after) {
    const was = before.get(path);
    if (was?.hash === now.hash) {
      if (now.pages) pageFiles++;
      continue;
    }
    if (now.pages && was?.pages) {
      pageFiles++;
      for (const [i, hash] of now.pages.entries()) {
        if (was.pages[i] === hash) continue;
        pages++;
        pageBytes += Math.min(PAGE, now.size - i * PAGE);
      }
    } else otherBytes += now.size;
  }
  return { pages, pageBytes, otherBytes, pageFiles };
}

/** A snapshot's file entries by path, read with the library (trees, not a restore). */
async function snapshotFiles(repoPath: string, snapshotId: string): Promise<{ files: Map<string, TreeEntry>; reader: PieceReader }> {
  const repo = await Repository.open(new FileStorage(repoPath), PASSPHRASE);
  const reader = new PieceReader(repo, await repo.loadIndex());
  const { snapshots } = await repo.listSnapshots();
  const snapshot = snapshots.find((s) => s.id === snapshotId);
  assert.ok(snapshot, `snapshot ${snapshotId} is listed`);
  const files = new Map<string, TreeEntry>();
  const walk = async (treeId: string, prefix: string): Promise<void> => {
    for (const entry of decodeTree(await reader.read(Buffer.from(treeId, 'hex')), treeId).entries) {
      const path = prefix ? `${prefix}/${entry.name}` : entry.name;
      if (entry.type === 'dir' && entry.subtree) await walk(entry.subtree, path);
      else if (entry.type === 'file') files.set(path, entry);
    }
  };
  await walk(snapshot.tree, '');
  return { files, reader };
}

/** Each file of the snapshot reads back (contentBytes) to the bytes the state recorded. */
async function checkReadsBack(
  repoPath: string,
  snapshotId: string,
  expected: Map<string, FileState>,
  only?: (path: string) => boolean,
): Promise<Map<string, TreeEntry>> {
  const { files, reader } = await snapshotFiles(repoPath, snapshotId);
  for (const [path, state] of expected) {
    if (only && !only(path)) continue;
    const entry = files.get(path);
    assert.ok(entry, `${path} is in snapshot ${snapshotId}`);
    const chunks: Buffer[] = [];
    for await (const bytes of contentBytes(entry, reader)) chunks.push(Buffer.from(bytes));
    assert.equal(stateOf(Buffer.concat(chunks)).hash, state.hash, `${path} reads back byte for byte from ${snapshotId}`);
  }
  return files;
}

interface Summary {
  snapshotId: string;
  bytesAdded: number;
  rawBytesAdded: number;
  piecesAdded: number;
}

describe('page files against a real PostgreSQL cluster: an incremental stores the changed pages', { skip }, () => {
  let server: PostgresServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let pgWork: string;
  let accountsPath: string;
  let accountsIndexPath: string;
  before(async () => {
    server = await startPostgres();
    work = await tempDir('pg-pages');
    pgWork = await mkdtemp(join(tmpdir(), 'cairn-pgpages-'));
    await chmod(pgWork, 0o755);
    server.sql('CREATE DATABASE bench');
    pgbench(server, ['-i', '-s', String(SCALE), '-q']);
    accountsPath = server.sql("SELECT pg_relation_filepath('pgbench_accounts')", 'bench').trim();
    accountsIndexPath = server.sql("SELECT pg_relation_filepath('pgbench_accounts_pkey')", 'bench').trim();
  });
  after(async () => {
    await server?.stop();
    await work?.remove();
    await rm(pgWork, { recursive: true, force: true });
  });

  it('postgres engine: the second base backup stores the pages pgbench changed, its relation files are page files, and it restores to a cluster with the same rows', async (t) => {
    const env = { CAIRN_REPOSITORY: join(work.path, 'engine-repo'), CAIRN_PASSWORD: PASSPHRASE, CAIRN_DB_PASSWORD: server.password };
    assert.equal((await runCli(['init'], env)).code, 0);
    const conn = ['--engine', 'postgres', '--db-host', '127.0.0.1', '--db-port', String(server.port), '--db-user', 'postgres'];
    const first = await runCli(['backup', ...conn], env);
    assert.equal(first.code, 0, first.stderr);
    const one = lastOfType(first, 'summary') as unknown as Summary;

    pgbench(server, ['-n', '-c', '2', '-t', String(TRANSACTIONS_PER_CLIENT)]);
    server.sql('CHECKPOINT');
    const rows = rowState(server);
    const second = await runCli(['backup', ...conn], env);
    assert.equal(second.code, 0, second.stderr);
    const two = lastOfType(second, 'summary') as unknown as Summary;
    const ratio = two.rawBytesAdded / one.rawBytesAdded;
    t.diagnostic(
      `engine: first backup ${one.rawBytesAdded} B raw (${one.bytesAdded} stored), second ${two.rawBytesAdded} B raw (${two.bytesAdded} stored), ratio ${ratio.toFixed(3)}`,
    );
    assert.ok(ratio < 0.25, `the second base backup adds ${two.rawBytesAdded} B of the first's ${one.rawBytesAdded} B`);

    const { files } = await snapshotFiles(env.CAIRN_REPOSITORY, two.snapshotId);
    for (const rel of [accountsPath, accountsIndexPath]) {
      const entry = files.get(rel);
      assert.ok(entry?.extentLists && entry.pageHashes, `${rel} (pgbench_accounts) is a page file`);
      assert.equal(entry.pageSize, PAGE);
    }

    const dataDir = join(pgWork, 'engine-restored');
    const restored = await runCli(['restore', two.snapshotId, '--target', dataDir, ...(asRoot ? ['--owner', 'postgres'] : [])], env);
    assert.equal(restored.code, 0, restored.stderr);
    const copy = await startPostgres({ dataDir });
    try {
      assert.equal(rowState(copy), rows, 'the restored cluster holds the rows the live one had');
    } finally {
      await copy.stop();
    }
  });

  it('files backup of the stopped data directory: the second stores the changed pages (within the documented overhead), base/ relation files are page files, both read back, the second restores and starts', async (t) => {
    const env = { CAIRN_REPOSITORY: join(work.path, 'files-repo'), CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    server.sql('CHECKPOINT');
    stopKeeping(server);
    const dataDir = server.dataDir;
    const before = await dirState(dataDir);
    const first = await runCli(['backup', dataDir], env);
    assert.equal(first.code, 0, first.stderr);
    const one = lastOfType(first, 'summary') as unknown as Summary;

    const live = await startPostgres({ dataDir });
    let rows: string;
    try {
      pgbench(live, ['-n', '-c', '2', '-t', String(TRANSACTIONS_PER_CLIENT)]);
      live.sql('CHECKPOINT');
      rows = rowState(live);
      stopKeeping(live);
    } finally {
      await live.stop();
    }
    const after = await dirState(dataDir);
    const second = await runCli(['backup', dataDir], env);
    assert.equal(second.code, 0, second.stderr);
    const two = lastOfType(second, 'summary') as unknown as Summary;

    const changed = changedBytes(before, after);
    const pagesTotal = [...after.values()].reduce((n, s) => n + (s.pages?.length ?? 0), 0);
    const ratio = two.rawBytesAdded / one.rawBytesAdded;
    t.diagnostic(
      `files: first backup ${one.rawBytesAdded} B raw (${one.bytesAdded} stored), second ${two.rawBytesAdded} B raw (${two.bytesAdded} stored), ratio ${ratio.toFixed(3)}; ` +
        `${changed.pages} changed pages (${changed.pageBytes} B) in ${changed.pageFiles} page files of ${pagesTotal} pages, ${changed.otherBytes} B of other changed files`,
    );
    assert.ok(ratio < 0.25, `the second backup adds ${two.rawBytesAdded} B of the first's ${one.rawBytesAdded} B`);
    // Before compression: the changed pages, the changed other files whole, the page files' lists
    // (40 B per extent, at most two more per changed page, and 16 B per page), and the trees.
    const extentsBound = 40 * (changed.pageFiles + 2 * changed.pages);
    const bound = changed.pageBytes + changed.otherBytes + extentsBound + 16 * pagesTotal + (1 << 20);
    assert.ok(two.rawBytesAdded <= bound, `${two.rawBytesAdded} B added ≤ ${bound} B (changed pages, changed files, lists, trees)`);

    const firstFiles = await checkReadsBack(env.CAIRN_REPOSITORY, one.snapshotId, before);
    const secondFiles = await checkReadsBack(env.CAIRN_REPOSITORY, two.snapshotId, after);
    for (const [path, state] of after) {
      if (!state.pages || !path.startsWith('base/')) continue;
      const entry = secondFiles.get(path);
      assert.ok(entry?.extentLists && entry.pageHashes && entry.pageSize === PAGE, `${path} is a page file`);
    }
    assert.ok(secondFiles.get(accountsPath)?.extentLists, 'pgbench_accounts is a page file');
    assert.ok(firstFiles.get(accountsPath)?.extentLists, 'pgbench_accounts is a page file in the first snapshot too');

    const target = join(pgWork, 'files-restored');
    const restored = await runCli(['restore', two.snapshotId, '--target', target], env);
    assert.equal(restored.code, 0, restored.stderr);
    const restoredState = await dirState(target);
    for (const [path, state] of after) assert.equal(restoredState.get(path)?.hash, state.hash, `${path} restores byte for byte`);
    const copy = await startPostgres({ dataDir: target });
    try {
      assert.equal(rowState(copy), rows, 'the restored cluster holds the rows the live one had');
    } finally {
      await copy.stop();
    }
  });
});
