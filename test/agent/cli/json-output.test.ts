import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { jsonMessageProblem } from '../../../agent/cli/json-messages.ts';
import { checkMessages, runCliProcess } from '../../helpers/cli.ts';
import { tempDir } from '../../helpers/repo.ts';

/** Every stdout line parsed as JSON (throws on a line that is not). */
function jsonLines(stdout: string): Array<Record<string, unknown>> {
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('output: text unless --json (issue 19)', () => {
  it('a real process whose stdout is a pipe prints text; --json, before or after the command, and CAIRN_JSON=1 print documented JSON lines', async () => {
    const work = await tempDir('cairn-json-output-');
    try {
      const src = join(work.path, 'src');
      await mkdir(src);
      await writeFile(join(src, 'a.txt'), 'alpha\n');
      // CAIRN_JSON empty: as an operator's shell has it (the helpers set it for the tests that read JSON).
      const env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: 'a passphrase long enough', CAIRN_JSON: '' };

      const init = await runCliProcess(['init'], env);
      assert.equal(init.code, 0, init.stderr);
      assert.match(init.stdout, /^created repository [0-9a-f]{8} at /);
      const backup = await runCliProcess(['backup', src], env);
      assert.equal(backup.code, 0, backup.stderr);
      assert.match(backup.stdout, /^snapshot [0-9a-f]{8} saved\n/);
      const listed = await runCliProcess(['snapshots'], env);
      assert.equal(listed.code, 0, listed.stderr);
      assert.match(listed.stdout, /^ID +Time +Host/);
      for (const text of [init.stdout, backup.stdout, listed.stdout])
        assert.ok(!text.includes('{"time"'), `no JSON line in text output:\n${text}`);

      const before = await runCliProcess(['--json', 'backup', src], env);
      assert.equal(before.code, 0, before.stderr);
      const summary = jsonLines(before.stdout).find((l) => l.type === 'summary');
      assert.equal(summary?.operation, 'backup');
      assert.equal(summary?.filesUnchanged, 1);
      const after = await runCliProcess(['snapshots', '--json'], env);
      assert.equal(after.code, 0, after.stderr);
      const viaEnv = await runCliProcess(['snapshots'], { ...env, CAIRN_JSON: '1' });
      assert.equal(viaEnv.code, 0, viaEnv.stderr);
      for (const run of [after, viaEnv]) {
        const [line, ...rest] = jsonLines(run.stdout);
        assert.equal(rest.length, 0);
        assert.equal(line?.type, 'snapshots');
        assert.equal((line?.snapshots as unknown[]).length, 2);
      }
      // Each line holds to the documented schema (runCliProcess checks too: this says it outright).
      for (const run of [before, after, viaEnv]) checkMessages(jsonLines(run.stdout));

      // An error: text on stderr always; with --json also a documented line on stdout.
      const wrong = await runCliProcess(['--json', 'snapshots'], { ...env, CAIRN_PASSWORD: 'not the passphrase at all' });
      assert.equal(wrong.code, 12, wrong.stderr);
      const [error] = jsonLines(wrong.stdout);
      assert.equal(error?.type, 'error');
      assert.equal(error?.exitCode, 12);
      assert.match(String(error?.code), /^Cairn\./);
      assert.match(wrong.stderr, /^cairn: the passphrase does not open/m);
      const wrongText = await runCliProcess(['snapshots'], { ...env, CAIRN_PASSWORD: 'not the passphrase at all' });
      assert.equal(wrongText.code, 12);
      assert.equal(wrongText.stdout, '', 'text mode: the error is on stderr only');
    } finally {
      await work.remove();
    }
  });

  it('the schema refuses a message that drifts from docs/json-output.md', () => {
    const time = new Date().toISOString();
    const id = 'ab'.repeat(32);
    assert.equal(jsonMessageProblem({ time, type: 'pin', snapshotId: id }), undefined);
    assert.match(String(jsonMessageProblem({ time, type: 'pin', snapshotId: 'abc' })), /snapshotId/);
    assert.match(String(jsonMessageProblem({ time, type: 'no-such-type' })), /unknown message type/);
    assert.ok(
      jsonMessageProblem({ time, type: 'summary', operation: 'backup', snapshotId: id, engine: 'files' }),
      'a backup summary without its counts',
    );
    assert.ok(jsonMessageProblem({ type: 'pin', snapshotId: id }), 'no time');
    assert.ok(jsonMessageProblem({ time, type: 'error', code: 'Oops', message: 'm', exitCode: 1 }), 'an error code outside Cairn.*');
    assert.throws(() => checkMessages([{ time, type: 'unlock', removed: -1, stillActive: 0 }]), /does not describe/);
  });
});
