import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { main } from '../../../agent/cli/main.ts';
import { ExitCode } from '../../../agent/core/errors.ts';

/** A stream that keeps what is written to it (not a terminal; the env below asks for JSON lines). */
class Captured extends Writable {
  text = '';
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
  lines(): Array<Record<string, unknown>> {
    return this.text
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}

async function cairn(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: Captured; stderr: Captured }> {
  const stdout = new Captured();
  const stderr = new Captured();
  const code = await main(['node', 'cairn', ...args], env, { stdout, stderr });
  return { code, stdout, stderr };
}

describe('the CLI called in-process', () => {
  it('main(argv, env, streams) runs commands without a subprocess and writes only to the given streams', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-inproc-'));
    try {
      const env = { CAIRN_REPOSITORY: join(dir, 'repo'), CAIRN_PASSWORD: 'in-process passphrase', CAIRN_LOCK_LEASE: '30', CAIRN_JSON: '1' };
      await mkdir(join(dir, 'data'));
      await writeFile(join(dir, 'data', 'hello.txt'), 'hello, in-process\n');

      const init = await cairn(['init'], env);
      assert.equal(init.code, ExitCode.ok, init.stderr.text);
      assert.equal(init.stdout.lines()[0]?.type, 'init');

      const backup = await cairn(['backup', join(dir, 'data'), '--tag', 'inproc'], env);
      assert.equal(backup.code, ExitCode.ok, backup.stderr.text);
      const summary = backup.stdout.lines().find((l) => l.type === 'summary');
      assert.equal(summary?.operation, 'backup');
      const id = String(summary?.snapshotId);

      const dump = await cairn(['dump', id.slice(0, 8), 'hello.txt'], env);
      assert.equal(dump.code, ExitCode.ok, dump.stderr.text);
      assert.equal(dump.stdout.text, 'hello, in-process\n', 'dump writes the bytes of the file to the given stdout');

      const listed = await cairn(['snapshots', '--tag', 'inproc'], env);
      assert.deepEqual(
        (listed.stdout.lines()[0]?.snapshots as Array<{ id: string }>).map((s) => s.id),
        [id],
      );

      // Failures come back as exit codes, their message on the given stderr.
      const missing = await cairn(['ls', 'ffffffff'], env);
      assert.equal(missing.code, ExitCode.notFound, missing.stderr.text);
      assert.match(missing.stderr.text, /no snapshot ffffffff/);
      const usage = await cairn(['restore', '--to-time', 'not a time', '--target', join(dir, 'out')], env);
      assert.equal(usage.code, ExitCode.usage);
      assert.match(usage.stderr.text, /invalid --to-time/);
      const unknown = await cairn(['no-such-command'], env);
      assert.equal(unknown.code, ExitCode.usage);
      assert.match(unknown.stderr.text, /unknown command/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
