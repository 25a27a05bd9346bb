import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DEFAULT_CHUNKER, DEFAULT_PACK_SIZE } from '../../../agent/core/config.ts';
import { PieceType } from '../../../agent/core/pack.ts';
import { EXTENT_BYTES, encodeExtent } from '../../../agent/core/page-file.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { encodeTree } from '../../../agent/core/tree.ts';
import { readAheadFor } from '../../../agent/files/restorer.ts';
import { PackWriter } from '../../../agent/pipeline/pack-writer.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { commitCraftedSnapshot } from '../files/page-file-craft.ts';
import { CAIRN_BIN } from '../../helpers/cli.ts';

const run = promisify(execFile);
const MiB = 1 << 20;

/**
 * Bounded memory (docs/performance-notes.md, "Memory"): `cairn backup` and `cairn restore` of
 * 160 MiB of incompressible data in a child process, whose Buffers are sampled every 20 ms
 * after a full garbage collection (so the figure is what is held, not garbage V8 has not yet
 * collected). The bound is the documented formula plus a margin; before the pack writer held
 * packs by slot and frames encrypted into the pack, --concurrency 4 held ~207 MiB here.
 */
const CONCURRENCY = 4;
const FRAME = MiB + DEFAULT_CHUNKER.max;
/** (c + 1) × (pack + 2 frames: its buffer and zstd's output) + one file's read buffer (largest piece + 1 MiB). */
const BACKUP_BOUND = (CONCURRENCY + 1) * (DEFAULT_PACK_SIZE + 256 * 1024 + 2 * FRAME) + DEFAULT_CHUNKER.max + MiB;
/**
 * The read-ahead of pieces (files/restore-target.ts readAheadFor) and the frames being fetched and
 * opened (fetchAheadFor: twice the read-ahead; the main thread holds their encrypted bytes), + 8
 * cached frames.
 */
const RESTORE_BOUND = 3 * readAheadFor(CONCURRENCY) + 8 * FRAME;
const MARGIN = 16 * MiB;
/** The metadata of the crafted snapshots' files: the running user's, so a restore need not be root. */
const FILE_META = {
  type: 'file' as const,
  mode: 0o644,
  uid: process.getuid?.() ?? 0,
  gid: process.getgid?.() ?? 0,
  mtimeNs: '1600000000000000000',
};

const PROBE = `
const { writeFileSync } = require('node:fs');
let peak = 0;
const sample = () => { globalThis.gc(); peak = Math.max(peak, process.memoryUsage().arrayBuffers); };
setInterval(sample, 20).unref();
process.on('exit', () => { sample(); writeFileSync(process.env.PROBE_OUT, JSON.stringify({ peak, rssKiB: process.resourceUsage().maxRSS })); });
`;

describe('memory of backup and restore (child process, sampled)', () => {
  let dir = '';
  let digest = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'cairn-memory-'));
    writeFileSync(join(dir, 'probe.cjs'), PROBE);
    mkdirSync(join(dir, 'src'));
    const fd = openSync(join(dir, 'src', 'random'), 'w');
    const hash = createHash('sha256');
    const block = Buffer.allocUnsafe(8 * MiB);
    for (let i = 0; i < 20; i++) {
      randomFillSync(block);
      hash.update(block);
      writeSync(fd, block);
    }
    closeSync(fd);
    digest = hash.digest('hex');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Buffers held by the main thread at the peak (after a full GC). */
  async function peakOf(args: string[], repo = join(dir, 'repo')): Promise<number> {
    return (await measured(args, repo)).peak;
  }

  /**
   * The main thread's Buffers at the peak, and the process's peak RSS in KiB: only RSS sees what the
   * frame thread holds (Buffers it transfers are not counted in the main thread's figure).
   */
  async function measured(args: string[], repo = join(dir, 'repo')): Promise<{ peak: number; rssKiB: number }> {
    const out = join(dir, 'peak');
    const env = { ...process.env, CAIRN_PASSWORD: 'memory-test', PROBE_OUT: out, NODE_OPTIONS: '' };
    await run(process.execPath, ['--expose-gc', '-r', join(dir, 'probe.cjs'), CAIRN_BIN, '-r', repo, ...args], {
      env,
      maxBuffer: 16 * MiB,
    });
    return JSON.parse(readFileSync(out, 'utf8')) as { peak: number; rssKiB: number };
  }

  it('backup holds at most the pack writer formula, restore the read-ahead and frame cache', { timeout: 120_000 }, async (t) => {
    await peakOf(['init']);
    const backup = await peakOf(['--concurrency', String(CONCURRENCY), 'backup', '-q', join(dir, 'src')]);
    t.diagnostic(`backup held ${(backup / MiB).toFixed(1)} MiB of Buffers`);
    assert.ok(
      backup <= BACKUP_BOUND + MARGIN,
      `backup held ${(backup / MiB).toFixed(1)} MiB of Buffers, bound ${((BACKUP_BOUND + MARGIN) / MiB).toFixed(1)}`,
    );
    const restore = await peakOf(['--concurrency', String(CONCURRENCY), 'restore', '-q', 'latest', '--target', join(dir, 'out')]);
    t.diagnostic(`restore held ${(restore / MiB).toFixed(1)} MiB of Buffers`);
    assert.ok(
      restore <= RESTORE_BOUND + MARGIN,
      `restore held ${(restore / MiB).toFixed(1)} MiB of Buffers, bound ${((RESTORE_BOUND + MARGIN) / MiB).toFixed(1)}`,
    );
    const file = readdirSync(join(dir, 'out'), { recursive: true, encoding: 'utf8' }).find((name) => name.endsWith('random'));
    assert.ok(file, 'the restore holds the file');
    const restored = createHash('sha256')
      .update(readFileSync(join(dir, 'out', file)))
      .digest('hex');
    assert.equal(restored, digest);
  });

  it('restore of small pieces scattered over many frames holds the read-ahead, not every frame', { timeout: 120_000 }, async (t) => {
    // Each 8 KiB page of two files lies in a frame of its own, beside 1 MiB of other data: the layout
    // of a page file whose runs were stored by many backups. A piece read ahead used to keep its whole
    // decoded frame, and nothing bounded the frames being fetched: this restore held ~320 MiB of Buffers.
    const repoPath = join(dir, 'scattered');
    const repo = await Repository.init(new FileStorage(repoPath), 'memory-test', { host: 'memory-test', user: 'tester' });
    const writer = new PackWriter(repo, await repo.loadIndex(), { compression: { codec: 'none' }, concurrency: 2 });
    const FRAMES = 160;
    const files = [createHash('sha256'), createHash('sha256')].map((hash, n) => ({ name: `pages-${n}`, hash, ids: [] as string[] }));
    for (let frame = 0; frame < FRAMES; frame++) {
      for (const file of files) {
        const page = randomFillSync(Buffer.allocUnsafe(8192));
        file.hash.update(page);
        const id = repo.pieceId(page);
        await writer.add(id, PieceType.data, page);
        file.ids.push(id.toString('hex'));
      }
      const rest = randomFillSync(Buffer.allocUnsafe(MiB - files.length * 8192));
      await writer.add(repo.pieceId(rest), PieceType.data, rest);
    }
    const entries = files.map((file) => ({ ...FILE_META, name: file.name, size: FRAMES * 8192, content: file.ids }));
    const tree = encodeTree({ version: 2, entries });
    const treeId = repo.pieceId(tree);
    await writer.add(treeId, PieceType.tree, tree);
    await writer.flush();
    await commitCraftedSnapshot(repo, treeId);

    const target = join(dir, 'scattered-out');
    const restore = await peakOf(['--concurrency', String(CONCURRENCY), 'restore', '-q', 'latest', '--target', target], repoPath);
    t.diagnostic(`restore of pages scattered over ${FRAMES} frames held ${(restore / MiB).toFixed(1)} MiB of Buffers`);
    assert.ok(
      restore <= RESTORE_BOUND + MARGIN,
      `restore held ${(restore / MiB).toFixed(1)} MiB of Buffers, bound ${((RESTORE_BOUND + MARGIN) / MiB).toFixed(1)}`,
    );
    for (const file of files) {
      const restored = createHash('sha256')
        .update(readFileSync(join(target, file.name)))
        .digest('hex');
      assert.equal(restored, file.hash.digest('hex'), `${file.name} restored exactly`);
    }
  });

  it('restore of small page files cut from many big pieces keeps the slices, not the pieces', { timeout: 180_000 }, async (t) => {
    // Four page files of 256 KiB (written whole once complete, small-file-writers.ts), each 4 KiB
    // taken from each of 64 pieces of 16 MiB (compressible: the repository is ~1 MB). A slice kept
    // until its file was complete was a view into its whole piece: 1.25 GB of RSS for 1 MiB of files.
    const repoPath = join(dir, 'page-slices');
    const repo = await Repository.init(new FileStorage(repoPath), 'memory-test', { host: 'memory-test', user: 'tester' });
    const writer = new PackWriter(repo, await repo.loadIndex(), { compression: { codec: 'zstd', level: 1 }, concurrency: 2, frameSize: 1 });
    const PIECES = 64;
    const SLICE = 4096;
    const files = [];
    for (let n = 0; n < 4; n++) {
      const hash = createHash('sha256');
      const list = Buffer.alloc(PIECES * EXTENT_BYTES);
      for (let k = 0; k < PIECES; k++) {
        const piece = Buffer.alloc(16 * MiB);
        randomFillSync(piece, 0, SLICE);
        hash.update(piece.subarray(0, SLICE));
        const id = repo.pieceId(piece);
        await writer.add(id, PieceType.data, piece);
        encodeExtent({ id, offset: 0, length: SLICE }, list, k * EXTENT_BYTES);
      }
      const listId = repo.pieceId(list);
      await writer.add(listId, PieceType.list, list);
      files.push({
        name: `pages-${n}`,
        hash,
        entry: { ...FILE_META, name: `pages-${n}`, size: PIECES * SLICE, pageSize: 8192, extentLists: [listId.toString('hex')] },
      });
    }
    const tree = encodeTree({ version: 2, entries: files.map((file) => file.entry) });
    const treeId = repo.pieceId(tree);
    await writer.add(treeId, PieceType.tree, tree);
    await writer.flush();
    await commitCraftedSnapshot(repo, treeId);

    const target = join(dir, 'page-slices-out');
    const { rssKiB } = await measured(['--concurrency', String(CONCURRENCY), 'restore', '-q', 'latest', '--target', target], repoPath);
    t.diagnostic(`restore of 1 MiB of page files cut from ${4 * PIECES} pieces of 16 MiB: peak RSS ${(rssKiB / 1024).toFixed(0)} MiB`);
    // A restore of anything peaks at ~250-350 MiB here (the process, its threads, the decoded frames'
    // garbage); the old code held 1.25 GB.
    assert.ok(rssKiB < 640 * 1024, `peak RSS ${(rssKiB / 1024).toFixed(0)} MiB`);
    for (const file of files) {
      const restored = createHash('sha256')
        .update(readFileSync(join(target, file.name)))
        .digest('hex');
      assert.equal(restored, file.hash.digest('hex'), `${file.name} restored exactly`);
    }
  });
});
