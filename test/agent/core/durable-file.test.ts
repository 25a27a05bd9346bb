import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { writeFileDurably, writeNewFileDurably } from '../../../agent/core/durable-file.ts';
import { tempDir } from '../../helpers/repo.ts';

const run = promisify(execFile);
const MODULE = new URL('../../../agent/core/durable-file.ts', import.meta.url).pathname;

/** Yields one chunk, then fails as a full disk would in the middle of a write. */
async function* failingAfterOneChunk(): AsyncGenerator<Uint8Array> {
  yield Buffer.from('first half of a recovery kit\n');
  throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
}

describe('durable files', () => {
  let dir: { path: string; remove: () => Promise<void> };
  before(async () => {
    dir = await tempDir('durable');
  });
  after(() => dir.remove());

  async function fresh(name: string): Promise<string> {
    const path = join(dir.path, name);
    await mkdir(path);
    return path;
  }

  it('writeNewFileDurably creates the file whole, with its mode, and leaves no temporary file', async () => {
    const d = await fresh('create');
    await writeNewFileDurably(join(d, 'kit.txt'), 'the kit\n', join(d, '.kit.tmp'), 0o600);
    assert.equal(await readFile(join(d, 'kit.txt'), 'utf8'), 'the kit\n');
    assert.equal((await stat(join(d, 'kit.txt'))).mode & 0o777, 0o600);
    assert.deepEqual(await readdir(d), ['kit.txt']);
  });

  it('writeNewFileDurably never replaces an existing file: EEXIST, the file untouched, no temporary file', async () => {
    const d = await fresh('exists');
    await writeFile(join(d, 'kit.txt'), 'an older kit\n');
    await assert.rejects(writeNewFileDurably(join(d, 'kit.txt'), 'a new kit\n', join(d, '.kit.tmp'), 0o600), { code: 'EEXIST' });
    assert.equal(await readFile(join(d, 'kit.txt'), 'utf8'), 'an older kit\n');
    assert.deepEqual(await readdir(d), ['kit.txt']);
  });

  it('a write that fails half-way leaves neither part of the file nor the temporary file', async () => {
    const d = await fresh('fails');
    await assert.rejects(writeNewFileDurably(join(d, 'kit.txt'), failingAfterOneChunk(), join(d, '.kit.tmp'), 0o600), {
      code: 'ENOSPC',
    });
    assert.deepEqual(await readdir(d), []);
    await writeFile(join(d, 'old.txt'), 'old\n');
    await assert.rejects(writeFileDurably(join(d, 'old.txt'), failingAfterOneChunk(), join(d, '.old.tmp'), 0o600), {
      code: 'ENOSPC',
    });
    assert.deepEqual(await readdir(d), ['old.txt'], 'the replaced file stays as it was');
    assert.equal(await readFile(join(d, 'old.txt'), 'utf8'), 'old\n');
  });

  it('many writes at once share one exit listener: no MaxListenersExceededWarning, none left behind', async () => {
    const d = await fresh('many');
    const before = process.listenerCount('exit');
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    await Promise.all(
      Array.from({ length: 24 }, (_, i) => writeNewFileDurably(join(d, `f${i}`), `file ${i}\n`, join(d, `.f${i}.tmp`), 0o600)),
    );
    await new Promise((resolve) => setImmediate(resolve));
    process.off('warning', onWarning);
    assert.deepEqual(
      warnings.map((w) => w.name),
      [],
    );
    assert.equal(process.listenerCount('exit'), before);
    assert.equal((await readdir(d)).length, 24);
  });

  it('does not remove a temporary name it did not create', async () => {
    const d = await fresh('foreign-tmp');
    await writeFile(join(d, '.kit.tmp'), 'someone else\n');
    await assert.rejects(writeNewFileDurably(join(d, 'kit.txt'), 'the kit\n', join(d, '.kit.tmp'), 0o600), { code: 'EEXIST' });
    assert.deepEqual(await readdir(d), ['.kit.tmp']);
  });

  it('a process.exit() in the middle of the write (the CLI at a second SIGTERM) leaves nothing behind', async () => {
    const d = await fresh('exit');
    const script = join(dir.path, 'exit-mid-write.ts');
    // The data source writes one chunk, then the process exits while the write waits for the next.
    await writeFile(
      script,
      `import { writeNewFileDurably } from ${JSON.stringify(MODULE)};
async function* data() {
  yield Buffer.from('first half\\n');
  setImmediate(() => process.exit(130));
  await new Promise(() => undefined);
}
await writeNewFileDurably(process.argv[2], data(), process.argv[3], 0o600);
`,
    );
    const exited = await run(process.execPath, [script, join(d, 'kit.txt'), join(d, '.kit.tmp')]).then(
      () => 0,
      (error: unknown) => (error as { code?: number }).code,
    );
    assert.equal(exited, 130, 'the child exited in the middle of the write');
    assert.deepEqual(await readdir(d), []);
  });
});
