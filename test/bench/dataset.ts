import { createCipheriv } from 'node:crypto';
import { mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * A deterministic dataset that behaves like a database host's disk: large files
 * of 16 KiB pages (rows of text and numbers, a page header, free space at the
 * end: compresses ~2–3×), incompressible files, and many small files in nested
 * directories. Bytes come from AES-CTR with a fixed key: fast and repeatable.
 */
export class Stream {
  private readonly cipher;
  constructor(seed: number) {
    const key = Buffer.alloc(32, seed & 0xff);
    key.writeUInt32LE(seed, 0);
    this.cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  }
  bytes(n: number): Buffer {
    return this.cipher.update(Buffer.alloc(n));
  }
  int(max: number): number {
    return this.bytes(4).readUInt32LE(0) % max;
  }
}

const PAGE = 16384;

function pageTemplates(stream: Stream, count: number): Buffer[] {
  const templates: Buffer[] = [];
  for (let t = 0; t < count; t++) {
    const page = Buffer.alloc(PAGE);
    let at = 64;
    const fill = PAGE - 1024 - stream.int(4096); // free space at the end stays zero
    while (at < fill) {
      const row = `id=${String(stream.int(1e8)).padStart(8, '0')} name=user${String(stream.int(1e5)).padStart(5, '0')} balance=${(stream.int(1e9) / 100).toFixed(2).padStart(12, '0')} status=${['active', 'closed', 'frozen'][stream.int(3)]} updated=2026-${String(1 + stream.int(12)).padStart(2, '0')}-${String(1 + stream.int(28)).padStart(2, '0')}\n`;
      at += page.write(row, at);
    }
    templates.push(page);
  }
  return templates;
}

export function dbPage(templates: Buffer[], stream: Stream, pageNo: number): Buffer {
  const page = Buffer.from(templates[pageNo % templates.length] as Buffer);
  page.writeUInt32LE(pageNo, 0);
  stream.bytes(48).copy(page, 8); // checksum, LSN, row counters: unique per page
  stream.bytes(96).copy(page, 64 + stream.int(PAGE / 2));
  return page;
}

export interface DatasetLayout {
  dbFiles: Array<{ path: string; pages: number }>;
  randomFiles: Array<{ path: string; size: number }>;
  smallFiles: number;
  bytes: number;
}

export async function generateDataset(dir: string, totalBytes: number, seed = 1): Promise<DatasetLayout> {
  const stream = new Stream(seed);
  const templates = pageTemplates(stream, 256);
  const layout: DatasetLayout = { dbFiles: [], randomFiles: [], smallFiles: 0, bytes: 0 };
  await mkdir(join(dir, 'db'), { recursive: true });
  await mkdir(join(dir, 'blobs'), { recursive: true });
  const dbBytes = Math.floor(totalBytes * 0.6);
  const dbCount = 6;
  for (let f = 0; f < dbCount; f++) {
    const pages = Math.floor(dbBytes / dbCount / PAGE);
    const path = join('db', `table-${f}.ibd`);
    const handle = await open(join(dir, path), 'w');
    for (let p = 0; p < pages; p += 64) {
      const batch: Buffer[] = [];
      for (let q = p; q < Math.min(pages, p + 64); q++) batch.push(dbPage(templates, stream, q));
      await handle.write(Buffer.concat(batch));
    }
    await handle.close();
    layout.dbFiles.push({ path, pages });
    layout.bytes += pages * PAGE;
  }
  const randomBytes = Math.floor(totalBytes * 0.25);
  for (let f = 0; f < 4; f++) {
    const size = Math.floor(randomBytes / 4);
    const path = join('blobs', `blob-${f}.bin`);
    const handle = await open(join(dir, path), 'w');
    for (let at = 0; at < size; at += 8 << 20) await handle.write(stream.bytes(Math.min(8 << 20, size - at)));
    await handle.close();
    layout.randomFiles.push({ path, size });
    layout.bytes += size;
  }
  const smallBytes = totalBytes - layout.bytes;
  let written = 0;
  let n = 0;
  while (written < smallBytes) {
    const dirPath = join(dir, 'small', `d${n % 37}`, `e${n % 11}`);
    if (n < 37 * 11) await mkdir(dirPath, { recursive: true });
    const size = Math.min(smallBytes - written, 512 + stream.int(15_872));
    const content = n % 2 === 0 ? Buffer.from((templates[n % templates.length] as Buffer).subarray(64, 64 + size)) : stream.bytes(size);
    await writeFile(join(dirPath, `file-${n}.${n % 2 === 0 ? 'txt' : 'bin'}`), content);
    written += size;
    n++;
  }
  layout.smallFiles = n;
  layout.bytes += written;
  return layout;
}

/** Overwrites about `fraction` of the bytes in place: scattered pages of the db files, a few ranges of the blobs. */
export async function mutateDataset(dir: string, layout: DatasetLayout, fraction: number, seed = 2): Promise<number> {
  const stream = new Stream(seed);
  const templates = pageTemplates(stream, 16);
  let changed = 0;
  for (const file of layout.dbFiles) {
    const handle = await open(join(dir, file.path), 'r+');
    const count = Math.round(file.pages * fraction);
    for (let i = 0; i < count; i++) {
      const pageNo = stream.int(file.pages);
      await handle.write(dbPage(templates, stream, pageNo), 0, PAGE, pageNo * PAGE);
      changed += PAGE;
    }
    await handle.close();
  }
  for (const file of layout.randomFiles) {
    const handle = await open(join(dir, file.path), 'r+');
    const target = file.size * fraction;
    for (let done = 0; done < target; done += 1 << 20) {
      await handle.write(stream.bytes(1 << 20), 0, 1 << 20, stream.int(Math.max(1, file.size - (1 << 20))));
      changed += 1 << 20;
    }
    await handle.close();
  }
  return changed;
}
