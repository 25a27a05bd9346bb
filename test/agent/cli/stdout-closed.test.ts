import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { CAIRN_BIN } from '../../helpers/cli.ts';

/**
 * `cairn … | head`: the reader goes away before the output ends. The CLI stops quietly with 141, as
 * a program killed by SIGPIPE does, instead of dying on an unhandled EPIPE with a stack trace.
 */
describe('a reader that closes the output early', () => {
  it('ends the command with 141 and no stack trace', async () => {
    // The read end is closed before the CLI has started: its first write meets EPIPE.
    const child = spawn(process.execPath, [CAIRN_BIN, 'completion', 'bash'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(code, 141, stderr);
    assert.doesNotMatch(stderr, /EPIPE|Unhandled|at /);
  });
});
