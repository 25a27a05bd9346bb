import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SMALL_FILE_BYTES } from '../../../agent/files/small-file-writers.ts';
import { CAIRN_BIN } from '../../helpers/cli.ts';

const run = promisify(execFile);

/** Files just above the small-file size: each is written through a file the main thread holds open. */
const FILES = 200;
const OPEN_FILES_LIMIT = 96;

/**
 * Files larger than the small-file size each hold an open file until they are complete, so a
 * restore bounds how many of them are in flight: hundreds of them restore under an open-file
 * limit well below their number (a window of 512 such files failed here with EMFILE).
 */
describe('restore and the open-file limit', () => {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'cairn-open-files-'));
    mkdirSync(join(dir, 'src'));
    for (let i = 0; i < FILES; i++) {
      const data = Buffer.alloc(SMALL_FILE_BYTES + 4096, `file ${i} `);
      writeFileSync(join(dir, 'src', `f${String(i).padStart(3, '0')}`), data);
    }
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it(
    `restores ${FILES} files larger than the small-file size under a limit of ${OPEN_FILES_LIMIT} open files`,
    { timeout: 120_000 },
    async () => {
      const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', CAIRN_PASSWORD: 'open-files-test' };
      const cairn = (args: string[]) =>
        run(
          'sh',
          ['-c', `ulimit -n ${OPEN_FILES_LIMIT} && exec "$0" "$@"`, process.execPath, CAIRN_BIN, '-r', join(dir, 'repo'), ...args],
          {
            env,
            maxBuffer: 16 << 20,
          },
        );
      await cairn(['init']);
      await cairn(['backup', '-q', join(dir, 'src')]);
      await cairn(['restore', '-q', 'latest', '--target', join(dir, 'out')]);
      const restored = readdirSync(join(dir, 'out'), { recursive: true, encoding: 'utf8' }).filter((name) => /f\d{3}$/.test(name));
      assert.equal(restored.length, FILES);
      for (const name of restored)
        assert.ok(readFileSync(join(dir, 'out', name)).equals(readFileSync(join(dir, 'src', name.slice(name.lastIndexOf('/') + 1)))), name);
    },
  );
});
