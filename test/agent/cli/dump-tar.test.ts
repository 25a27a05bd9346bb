import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { cp, lstat, mkdir, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { main } from '../../../agent/cli/main.ts';
import { dumpSnapshotFile } from '../../../agent/commands/browse.ts';
import { SnapshotBrowser } from '../../../agent/commands/snapshot-browser.ts';
import { ExitCode } from '../../../agent/core/errors.ts';
import { packKey } from '../../../agent/core/layout.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { contentIds } from '../../../agent/pipeline/snapshot-writer.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { craftSnapshot } from '../files/craft.ts';
import { CAIRN_BIN, lastOfType, runCli, runCliText } from '../../helpers/cli.ts';
import { PASSPHRASE, SMALL, fileRepo, initSmallRepo, tempDir } from '../../helpers/repo.ts';
import { buildSource, describeBytes, NOT_UTF8 } from './dump-tar-fixture.ts';

/**
 * `cairn dump <snapshot> <dir>` writes a tar archive of the directory to stdout, as restic's
 * dump does (issue 19). GNU tar extracts it (as root, keeping owners) and the result must
 * equal the source byte for byte, with modes, owners, mtimes to the nanosecond, link
 * targets and hard-link identity; a failure midway must leave an archive tar calls
 * truncated, and a non-zero exit.
 */

class Collected extends Writable {
  text = '';
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

/** GNU tar as root: owners by number, modes as stored (setgid included). */
function untar(archive: string, into: string): void {
  const r = spawnSync('tar', ['-x', '--numeric-owner', '--same-owner', '--same-permissions', '-f', archive, '-C', into], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, `tar -x: ${r.stderr}`);
}

describe('cairn dump of a directory writes a tar archive', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let src: string;
  let repoPath: string;
  let env: Record<string, string>;
  let snapshotId: string;

  /** `cairn dump ARGS` in-process with stdout into `file` (a real file stream: its own backpressure). */
  async function dumpToFile(args: string[], file: string, environment = env): Promise<{ code: number; stderr: string }> {
    const stdout = createWriteStream(file);
    const stderr = new Collected();
    const code = await main(
      ['node', 'cairn', 'dump', ...args],
      { PATH: process.env.PATH ?? '', HOME: work.path, ...environment },
      { stdout, stderr },
    );
    await new Promise<void>((resolve) => stdout.end(resolve));
    return { code, stderr: stderr.text };
  }

  /** `cairn dump ARGS` as a process, its stdout into a shell pipeline; PIPESTATUS says how each side ended. */
  function dumpPiped(args: string[], into: string, environment = env): { cairn: number; reader: number; stderr: string } {
    const r = spawnSync(
      'bash',
      ['-c', `"$@" ${into}; echo "\${PIPESTATUS[*]}" >&2`, 'bash', process.execPath, CAIRN_BIN, 'dump', ...args],
      {
        encoding: 'utf8',
        env: { PATH: process.env.PATH ?? '', HOME: work.path, ...environment },
        maxBuffer: 64 << 20,
      },
    );
    const lines = r.stderr.trimEnd().split('\n');
    const [cairn, reader] = (lines.pop() ?? '').split(' ').map(Number);
    return { cairn: cairn ?? -1, reader: reader ?? -1, stderr: lines.join('\n') };
  }

  before(async () => {
    work = await tempDir('dump-tar');
    src = join(work.path, 'src');
    await buildSource(src);
    repoPath = join(work.path, 'repo');
    await initSmallRepo(fileRepo(repoPath));
    env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };
    const backup = await runCli(['backup', src, '--json'], env);
    assert.equal(backup.code, 0, backup.stderr);
    snapshotId = (lastOfType(backup, 'summary') as { snapshotId: string }).snapshotId;
  });
  after(async () => {
    await work.remove();
  });

  it('dump latest / extracted by GNU tar equals the source: bytes, modes, owners, mtimes, symlinks, hard links, raw names', async () => {
    const archive = join(work.path, 'all.tar');
    const r = await dumpToFile(['latest', '/'], archive);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '', 'nothing but the archive, on stdout');
    const out = join(work.path, 'all');
    await mkdir(out);
    untar(archive, out);
    const expected = await describeBytes(src);
    assert.deepEqual(await describeBytes(out), expected);
    // The premises, so that the comparison cannot pass on a tree that lost them.
    const byPath = new Map(expected.map((e) => [Buffer.from(e.path, 'hex').toString('latin1'), e]));
    assert.equal(byPath.get('sub/deep')?.mode, 0o2750);
    assert.equal(byPath.get('sub/deep/deeper/secret')?.uid, 1234);
    assert.equal(byPath.get('sub/hard1')?.linkedTo, Buffer.from('a-first').toString('hex'));
    assert.equal(byPath.get('sub/old.txt')?.mtimeNs, '981173106789000000');
    assert.ok(byPath.has(`sub/deep/${NOT_UTF8.toString('latin1')}`), 'the name that is not UTF-8 came back as its bytes');
    assert.ok(
      expected.some((e) => Buffer.from(e.path, 'hex').length > 200),
      'a path past ustar’s fields',
    );
    // The snapshot root's own entry (./) carries the source directory's mode and mtime.
    const [rootIn, rootOut] = await Promise.all([lstat(src, { bigint: true }), lstat(out, { bigint: true })]);
    assert.deepEqual([rootOut.mode, rootOut.mtimeNs], [rootIn.mode, rootIn.mtimeNs]);
  });

  it('dump latest sub | tar -x, as processes: the subtree under its own name, a hard link group stored once inside it', async () => {
    const out = join(work.path, 'sub-piped');
    await mkdir(out);
    const r = dumpPiped(['latest', 'sub'], `| tar -x --numeric-owner --same-owner -p -C ${out}`);
    assert.deepEqual([r.cairn, r.reader], [0, 0], r.stderr);
    assert.deepEqual(await describeBytes(join(out, 'sub')), await describeBytes(join(src, 'sub')));
    const listing = spawnSync(
      'bash',
      ['-c', `"$@" | tar -tv`, 'bash', process.execPath, CAIRN_BIN, 'dump', snapshotId.slice(0, 8), 'sub'],
      {
        encoding: 'utf8',
        env: { PATH: process.env.PATH ?? '', HOME: work.path, ...env },
      },
    );
    const lines = listing.stdout.split('\n');
    assert.match(lines[0] ?? '', /^drwxr-x--- .* sub\/$/, 'the directory itself first, with its mode');
    assert.ok(
      lines.some((l) => / sub\/deep\/hard2$/.test(l) && l.startsWith('-')),
      'the first of the group inside sub holds the data',
    );
    assert.ok(
      lines.some((l) => /^h.* sub\/hard1 link to sub\/deep\/hard2$/.test(l)),
      listing.stdout,
    );
  });

  it('the archive is the same through a reader that takes one chunk at a time, which never has more than one piece waiting', async () => {
    const repo = await Repository.open(fileRepo(repoPath), PASSPHRASE);
    const chunks: Buffer[] = [];
    let maxBuffered = 0;
    const out = new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _enc, callback) {
        chunks.push(chunk);
        setImmediate(callback);
      },
    });
    const write = out.write.bind(out);
    out.write = ((chunk: Buffer, callback?: (error?: Error | null) => void) => {
      const accepted = write(chunk, callback);
      maxBuffered = Math.max(maxBuffered, out.writableLength);
      return accepted;
    }) as typeof out.write;
    const result = await dumpSnapshotFile(repo, {
      snapshot: snapshotId,
      path: '/',
      out,
      concurrency: 2,
      progress: silentProgress,
      who: { host: 'test-host', user: 'tester' },
    });
    assert.equal(result.kind, 'archive');
    assert.ok(Buffer.concat(chunks).equals(await readFile(join(work.path, 'all.tar'))), 'the same bytes as the dump into a file');
    assert.ok(maxBuffered <= SMALL.chunker.max, `at most one piece waits in the output (saw ${maxBuffered} bytes)`);
  });

  it('a damaged pack midway: exit 14 naming the damage, and tar calls what was written truncated', async () => {
    const damaged = join(work.path, 'repo-damaged');
    await cp(repoPath, damaged, { recursive: true });
    const repo = await Repository.open(fileRepo(damaged), PASSPHRASE);
    const browser = await SnapshotBrowser.open(repo);
    const { entry } = await browser.lookup(await repo.readSnapshot(snapshotId), 'sub/big.bin');
    const ids: Buffer[] = [];
    for await (const id of contentIds(entry, browser.reader)) ids.push(id);
    assert.ok(ids.length > 20, `big.bin spans many pieces (${ids.length})`);
    const location = browser.reader.location(ids[Math.floor(ids.length / 2)] as Buffer);
    const pack = await open(join(damaged, packKey(location.packId)), 'r+');
    const at = location.frameOffset + Math.floor(location.frameLength / 2);
    const byte = Buffer.alloc(1);
    await pack.read(byte, 0, 1, at);
    await pack.write(Buffer.from([(byte[0] ?? 0) ^ 0xff]), 0, 1, at);
    await pack.close();

    const archive = join(work.path, 'damaged.tar');
    const r = dumpPiped(['latest', '/'], `> ${archive}`, { ...env, CAIRN_REPOSITORY: damaged });
    assert.equal(r.cairn, ExitCode.damaged, r.stderr);
    assert.match(r.stderr, /sub\/big\.bin: pack [0-9a-f]{64}/, 'the message names the file and the damaged pack');
    const written = await readFile(archive);
    assert.ok(written.length > 100_000, `the dump stopped midway, not before it began (${written.length} bytes)`);
    const listing = spawnSync('tar', ['-tf', archive], { encoding: 'utf8' });
    assert.notEqual(listing.status, 0, 'tar sees a truncated archive, not a complete one');
    assert.match(listing.stderr, /Unexpected EOF/);
    assert.match(listing.stdout, /sub\/big\.bin/, 'entries up to the damaged file were written');
  });

  it('a reader that goes away (head -c) makes dump exit non-zero naming the closed output', () => {
    const r = dumpPiped(['latest', '/'], '| head -c 4096 > /dev/null');
    assert.equal(r.reader, 0);
    assert.equal(r.cairn, ExitCode.failure, r.stderr);
    assert.match(r.stderr, /the output failed before the whole archive was written \(.*EPIPE\)/);
  });

  it('a crafted tree naming ".." is refused before tar could write outside where it extracts', async () => {
    const repo = await Repository.open(fileRepo(repoPath), PASSPHRASE);
    const id = await craftSnapshot(repo, async (addTree, file) => [
      { ...file, name: 'a-first' },
      { name: '..', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtimeNs: '0', subtree: await addTree([{ ...file, name: 'escaped' }]) },
    ]);
    const archive = join(work.path, 'crafted.tar');
    const r = await dumpToFile([id, '/'], archive);
    assert.equal(r.code, ExitCode.damaged, r.stderr);
    assert.match(r.stderr, /holds the path component ".."/);
    const listing = spawnSync('tar', ['-tf', archive], { encoding: 'utf8' });
    assert.doesNotMatch(listing.stdout, /escaped/);
    assert.notEqual(listing.status, 0, 'no end of archive after the refusal');
  });

  it('a failure between two entries still leaves an archive tar refuses, not one it takes for complete', async () => {
    const repo = await Repository.open(fileRepo(repoPath), PASSPHRASE);
    const missing = 'ab'.repeat(32);
    const id = await craftSnapshot(repo, async (_addTree, file) => [
      { ...file, name: 'a-complete' },
      { name: 'b-unreadable', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtimeNs: '0', subtree: missing },
    ]);
    const archive = join(work.path, 'between.tar');
    const r = await dumpToFile([id, '/'], archive);
    assert.equal(r.code, ExitCode.damaged, r.stderr);
    assert.match(r.stderr, new RegExp(`piece ${missing} is not in the repository index`));
    const listing = spawnSync('tar', ['-tf', archive], { encoding: 'utf8' });
    assert.match(listing.stdout, /^a-complete\nb-unreadable\/\n/, 'the entries before the failure are whole');
    assert.notEqual(listing.status, 0, `tar fails on what follows them: ${listing.stderr}`);
    assert.match(await readFile(archive, 'utf8'), /cairn dump failed here: the archive is incomplete/);
  });

  it('a file is still written as its bytes; a symlink alone, an archive to a terminal and --archive zip are refused', async () => {
    const file = join(work.path, 'old.txt');
    assert.equal((await dumpToFile([snapshotId, 'sub/old.txt'], file)).code, 0);
    assert.equal(await readFile(file, 'utf8'), 'from 2001\n');
    const link = await dumpToFile([snapshotId, 'sub/link'], join(work.path, 'link.out'));
    assert.equal(link.code, ExitCode.usage);
    assert.match(link.stderr, /sub\/link is a symlink to "deep\/deeper\/secret"/);
    const terminal = await runCliText(['dump', snapshotId, 'sub'], env);
    assert.equal(terminal.code, ExitCode.usage);
    assert.equal(terminal.stdout, '', 'no archive on a terminal');
    assert.match(terminal.stderr, /sub is a directory: dump writes it as a tar archive, and stdout is a terminal/);
    const zip = await dumpToFile(['--archive', 'zip', snapshotId, 'sub'], join(work.path, 'zip.out'));
    assert.equal(zip.code, ExitCode.usage);
    assert.match(zip.stderr, /Allowed choices are tar/);
  });
});
