import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import type { Snapshot } from '../../agent/core/snapshot.ts';
import type { Tree, TreeEntry } from '../../agent/core/tree.ts';
import type { LockRecord } from '../../agent/core/locks.ts';

/** Valid records of the repository's JSON formats, varied by fast-check, for the fuzzers to mutate. */

const hex64 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((a) => Buffer.from(a).toString('hex'));
const decimal = fc.bigInt({ min: -(10n ** 20n), max: 10n ** 20n }).map(String);
const isoTime = fc.integer({ min: 0, max: 4102444800000 }).map((ms) => new Date(ms).toISOString());

const treeEntry: fc.Arbitrary<TreeEntry> = fc.record(
  {
    name: fc.string({ minLength: 1, maxLength: 20 }),
    nameBytes: fc.uint8Array({ minLength: 1, maxLength: 12 }).map((a) => Buffer.from(a).toString('base64')),
    type: fc.constantFrom('file' as const, 'dir' as const, 'symlink' as const),
    mode: fc.integer({ min: 0, max: 0o7777 }),
    uid: fc.nat(70000),
    gid: fc.nat(70000),
    mtimeNs: decimal,
    ctimeNs: decimal,
    dev: decimal,
    inode: decimal,
    size: fc.nat(),
    content: fc.array(hex64, { maxLength: 3 }),
    contentLists: fc.array(hex64, { maxLength: 2 }),
    subtree: hex64,
    target: fc.string({ maxLength: 30 }),
    hardlink: fc.string({ maxLength: 10 }),
  },
  { requiredKeys: ['name', 'type', 'mode', 'uid', 'gid', 'mtimeNs'] },
);

export const validTree: fc.Arbitrary<Tree> = fc.record({
  version: fc.constant(1 as const),
  entries: fc.array(treeEntry, { maxLength: 4 }),
});

/** A page file's entry (repository format 2, core/page-file.ts): extent lists, page hashes (or none) and a page size. */
const pageFileEntry: fc.Arbitrary<TreeEntry> = fc.record(
  {
    name: fc.string({ minLength: 1, maxLength: 20 }),
    type: fc.constant('file' as const),
    mode: fc.integer({ min: 0, max: 0o7777 }),
    uid: fc.nat(70000),
    gid: fc.nat(70000),
    mtimeNs: decimal,
    size: fc.nat(),
    pageSize: fc.oneof(fc.constantFrom(1024, 4096, 8192, 16384, 65536), fc.integer({ min: 512, max: 65536 })),
    extentLists: fc.array(hex64, { minLength: 1, maxLength: 3 }),
    pageHashes: fc.array(hex64, { maxLength: 2 }),
  },
  { requiredKeys: ['name', 'type', 'mode', 'uid', 'gid', 'mtimeNs', 'extentLists'] },
);

/** A version-2 tree: page files among ordinary entries. */
export const validPageTree: fc.Arbitrary<Tree> = fc.record({
  version: fc.constant(2 as const),
  entries: fc.array(fc.oneof(pageFileEntry, treeEntry), { minLength: 1, maxLength: 4 }),
});

const count = fc.nat(1_000_000);
export const validSnapshot: fc.Arbitrary<Snapshot> = fc.record(
  {
    version: fc.constant(1 as const),
    id: hex64,
    time: isoTime,
    endTime: isoTime,
    host: fc.string({ maxLength: 20 }),
    user: fc.string({ maxLength: 10 }),
    paths: fc.array(fc.string({ maxLength: 20 }), { maxLength: 3 }),
    tags: fc.array(fc.constantFrom('daily', 'damaged', 'x'), { maxLength: 2 }),
    engine: fc.constantFrom('files', 'postgres', 'mariadb'),
    engineMetadata: fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 1 })),
    plan: fc.string({ maxLength: 10 }),
    tree: hex64,
    root: fc.record({ mode: fc.integer({ min: 0, max: 0o7777 }), uid: fc.nat(), gid: fc.nat(), mtimeNs: decimal }),
    parent: hex64,
    original: hex64,
    summary: fc.record({
      filesNew: count,
      filesChanged: count,
      filesUnchanged: count,
      dirs: count,
      bytesNew: count,
      bytesChanged: count,
      bytesUnchanged: count,
      totalFiles: count,
      totalBytes: count,
      bytesRead: count,
      piecesAdded: count,
      rawBytesAdded: count,
      bytesAdded: count,
      durationMs: count,
      errors: count,
    }),
    tool: fc.constant('cairn 0.1.0'),
  },
  {
    requiredKeys: [
      'version',
      'id',
      'time',
      'endTime',
      'host',
      'user',
      'paths',
      'tags',
      'engine',
      'engineMetadata',
      'tree',
      'summary',
      'tool',
    ],
  },
);

export const holder = randomBytes(8).toString('hex');

export const validLockRecord: fc.Arbitrary<LockRecord> = fc
  .record({
    seq: fc.nat(99_999_999),
    operation: fc.constantFrom('backup', 'prune', 'restore'),
    exclusive: fc.boolean(),
    host: fc.string({ maxLength: 12 }),
    user: fc.string({ maxLength: 8 }),
    pid: fc.nat(1 << 22),
    started: isoTime,
    time: isoTime,
    leaseMs: fc.integer({ min: 1000, max: 30 * 60_000 }),
    released: fc.boolean(),
  })
  .map(({ leaseMs, ...r }) => ({ holder, ...r, expires: new Date(Date.parse(r.time) + leaseMs).toISOString() }));
