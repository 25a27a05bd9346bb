import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBinary } from '../../../agent/process/find-binary.ts';

/** findBinary looks PATH up itself, as `command -v` would, without starting a shell. */
describe('findBinary', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it('finds the first name that is an executable file on PATH, skipping plain files, directories and empty entries', async () => {
    const base = await mkdtemp(join(tmpdir(), 'cairn-find-binary-'));
    dirs.push(base);
    const [a, b] = [join(base, 'a'), join(base, 'b')];
    await mkdir(a);
    await mkdir(b);
    await writeFile(join(a, 'plain'), 'not a program');
    await chmod(join(a, 'plain'), 0o644);
    await mkdir(join(a, 'adir'));
    await writeFile(join(b, 'tool'), '#!/bin/sh\n');
    await chmod(join(b, 'tool'), 0o755);
    await writeFile(join(b, 'plain'), '#!/bin/sh\n');
    await chmod(join(b, 'plain'), 0o755);
    const path = ['', a, b].join(':');

    assert.equal(await findBinary(['missing', 'tool'], path), 'tool');
    // A non-executable file of that name in an earlier directory does not hide the program in a later one.
    assert.equal(await findBinary(['plain'], path), 'plain');
    await assert.rejects(findBinary(['adir', 'missing'], path), /none of adir, missing is installed/);
    await assert.rejects(findBinary(['plain'], a), /none of plain is installed/);
    // The system's own programs, through the process's PATH.
    assert.equal(await findBinary(['no-such-program-here', 'sh']), 'sh');
  });
});
