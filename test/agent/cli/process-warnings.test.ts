import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGcsTestServer, type GcsTestServer } from '../../helpers/gcs-server.ts';
import { makeRandomTree, describeTree } from '../../helpers/tree.ts';
import { tempDir, PASSPHRASE } from '../../helpers/repo.ts';
import { runCli, runCliProcess } from '../../helpers/cli.ts';

// Node's own warnings are the command's warnings (agent/cli/process-warnings.ts): nothing reaches
// stderr as Node's `(node:PID) …` text.
describe("Node's process warnings", () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('process-warnings');
  });
  after(async () => {
    await work.remove();
  });

  it('a warning raised while a command runs is a `warning` message of the command, and Node prints it again once the command is done', async () => {
    const before = process.listeners('warning');
    const run = runCli(['snapshots'], { CAIRN_REPOSITORY: join(work.path, 'none'), CAIRN_PASSWORD: PASSPHRASE });
    process.emitWarning('raised during the run', 'TestWarning');
    const result = await run;
    assert.equal(result.code, 10, result.stderr);
    const warnings = result.lines.filter((line) => line.type === 'warning').map((line) => line.message);
    assert.deepEqual(warnings, ['TestWarning: raised during the run']);
    assert.deepEqual(process.listeners('warning'), before, "Node's printer is back");
  });

  it('are left to Node where the operator told Node how to report them: NODE_NO_WARNINGS, --disable-warning, --redirect-warnings', async () => {
    const env = { CAIRN_REPOSITORY: join(work.path, 'told'), CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCliProcess(['init'], env)).code, 0);
    const preload = `--import=${fileURLToPath(new URL('./warning-emitter.mjs', import.meta.url))}`;
    const warnings = (result: { lines: Array<Record<string, unknown>> }): unknown[] =>
      result.lines.filter((line) => line.type === 'warning').map((line) => line.message);

    const routed = await runCliProcess(['snapshots'], { ...env, NODE_OPTIONS: preload });
    assert.equal(routed.code, 0, routed.stderr);
    assert.ok(warnings(routed).length > 0, "without a choice of the operator, they are the command's warnings");
    assert.match(String(warnings(routed)[0]), /^TestWarning \[TEST001\]: raised by a library/);
    assert.doesNotMatch(routed.stderr, /\(node:\d+\)/);

    const silenced = await runCliProcess(['snapshots'], { ...env, NODE_OPTIONS: preload, NODE_NO_WARNINGS: '1' });
    assert.equal(silenced.code, 0, silenced.stderr);
    assert.deepEqual(warnings(silenced), []);
    assert.doesNotMatch(silenced.stderr, /TestWarning/);

    const disabled = await runCliProcess(['snapshots'], { ...env, NODE_OPTIONS: `${preload} --disable-warning=TestWarning` });
    assert.equal(disabled.code, 0, disabled.stderr);
    assert.deepEqual(warnings(disabled), []);
    assert.doesNotMatch(disabled.stderr, /TestWarning/);

    const file = join(work.path, 'warnings.txt');
    const redirected = await runCliProcess(['snapshots'], { ...env, NODE_OPTIONS: `${preload} --redirect-warnings=${file}` });
    assert.equal(redirected.code, 0, redirected.stderr);
    assert.deepEqual(warnings(redirected), []);
    assert.match(await readFile(file, 'utf8'), /TestWarning: raised by a library/);
  });

  describe('on a gs:// repository (GCS test server, the real client in the real CLI)', () => {
    const bucket = 'process-warnings';
    let server: GcsTestServer;
    before(async () => {
      server = await startGcsTestServer({ buckets: [bucket] });
    });
    after(async () => {
      await server.stop();
    });

    it('restore and verify --read-data print no "possible EventEmitter memory leak" for the client\'s own pipelines', async () => {
      const source = join(work.path, 'src');
      await makeRandomTree(source, 9, { files: 40, maxFileSize: 300_000 });
      const env = { CAIRN_REPOSITORY: `gs://${bucket}/repo?endpoint=${encodeURIComponent(server.endpoint)}`, CAIRN_PASSWORD: PASSPHRASE };
      const target = join(work.path, 'dst');
      const runs = [['init'], ['backup', source], ['restore', 'latest', '--target', target], ['verify', '--read-data']];
      for (const args of runs) {
        const result = await runCliProcess(args, env);
        assert.equal(result.code, 0, `${args[0]}: ${result.stderr}`);
        assert.doesNotMatch(result.stderr, /\(node:\d+\)|MaxListeners/, `${args[0]}'s stderr`);
        assert.deepEqual(
          result.lines.filter((line) => line.type === 'warning'),
          [],
          `${args[0]} warns of nothing`,
        );
      }
      assert.deepEqual(await describeTree(target), await describeTree(source));
    });
  });
});
