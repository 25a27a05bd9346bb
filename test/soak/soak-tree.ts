import { chmod, open, readdir, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describeTree, makeRandomTree, Random, type Described } from '../helpers/tree.ts';

const PAGE_FILE = 'relation-16384';
const PAGE_SIZE = 8192;
const PAGE_FILE_PAGES = 160;

/**
 * The changing tree the soak parts back up: a random tree (test/helpers/tree.ts)
 * that each step changes a little and grows by one file of incompressible data,
 * so every backup uploads new packs, and holds a database file whose pages change (a page file). The biggest added files are dropped once the
 * added data passes `budget` bytes, so the tree stays small.
 */
export class ChangingTree {
  readonly root: string;
  private readonly rnd: Random;
  private step = 0;
  private readonly budget: number;
  private readonly grow: [number, number];

  constructor(root: string, seed: number, options: { budget?: number; grow?: [number, number] } = {}) {
    this.root = root;
    this.rnd = new Random(seed);
    this.budget = options.budget ?? 8 << 20;
    this.grow = options.grow ?? [1 << 20, 5 << 19];
  }

  async create(seed: number): Promise<void> {
    await makeRandomTree(this.root, seed, { files: 20, maxFileSize: 200_000 });
    // A database file (PostgreSQL pages): every backup stores it as a page file against its parent,
    // so kills, faults and collections also meet extents into older snapshots' pieces.
    const pages: Buffer[] = [];
    for (let i = 0; i < PAGE_FILE_PAGES; i++) pages.push(this.page(i));
    await writeFile(join(this.root, PAGE_FILE), Buffer.concat(pages));
  }

  /** One step of change: a new file of new data, an edit, a mode change, sometimes a symlink or a removal. */
  async change(): Promise<void> {
    const rnd = this.rnd;
    const n = ++this.step;
    const size = this.grow[0] + rnd.int(this.grow[1] - this.grow[0]);
    await writeFile(join(this.root, `grown-${n}.bin`), rnd.bytes(size, false));
    const files = (await readdir(this.root)).filter((f) => f.startsWith('file-'));
    if (files.length > 0) {
      const edited = join(this.root, rnd.pick(files));
      await writeFile(edited, rnd.bytes(rnd.int(50_000), rnd.int(2) === 0));
      await chmod(edited, rnd.pick([0o644, 0o600, 0o640]));
    }
    await this.editPages();
    if (rnd.int(3) === 0) await symlink(`grown-${n}.bin`, join(this.root, `link-${n}`));
    if (rnd.int(4) === 0 && files.length > 3) await unlink(join(this.root, rnd.pick(files)));
    const grown = [];
    for (const f of await readdir(this.root)) if (f.startsWith('grown-')) grown.push({ f, size: (await stat(join(this.root, f))).size });
    let total = grown.reduce((a, g) => a + g.size, 0);
    for (const g of grown.sort((a, b) => Number(a.f.slice(6, -4)) - Number(b.f.slice(6, -4)))) {
      if (total <= this.budget) break;
      await rm(join(this.root, g.f));
      total -= g.size;
    }
  }

  /** Rewrites a few scattered pages of the database file in place, as a checkpoint does. */
  private async editPages(): Promise<void> {
    const file = await open(join(this.root, PAGE_FILE), 'r+');
    try {
      for (let k = 1 + this.rnd.int(6); k > 0; k--) {
        const at = this.rnd.int(PAGE_FILE_PAGES);
        await file.write(this.page(at), 0, PAGE_SIZE, at * PAGE_SIZE);
      }
    } finally {
      await file.close();
    }
  }

  /** One PostgreSQL-style 8 KiB page: a valid page header (core/page-file.ts detects it), then data. */
  private page(index: number): Buffer {
    const page = this.rnd.bytes(PAGE_SIZE, index % 2 === 0);
    page.writeUInt16LE(24 + 4 * (index % 64), 12);
    page.writeUInt16LE(4096, 14);
    page.writeUInt16LE(PAGE_SIZE, 16);
    page.writeUInt16LE(PAGE_SIZE | 4, 18);
    return page;
  }

  describe(): Promise<Described[]> {
    return describeTree(this.root);
  }
}

/** Where two descriptions of a tree differ, for a failure message ('' when equal). */
export function treeDifference(expected: Described[], actual: Described[]): string {
  const a = new Map(expected.map((d) => [d.path, JSON.stringify(d)]));
  const b = new Map(actual.map((d) => [d.path, JSON.stringify(d)]));
  const out: string[] = [];
  for (const [path, d] of a) if (b.get(path) !== d) out.push(`${path}: expected ${d}, got ${b.get(path) ?? 'nothing'}`);
  for (const [path, d] of b) if (!a.has(path)) out.push(`${path}: not expected, got ${d}`);
  return out.slice(0, 5).join('; ');
}
