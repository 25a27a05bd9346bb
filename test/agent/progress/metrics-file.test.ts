import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { tempDir } from '../../helpers/repo.ts';
import { makeRandomTree } from '../../helpers/tree.ts';
import { previousSuccess, renderMetrics } from '../../../agent/progress/metrics-file.ts';

interface Sample {
  labels: Record<string, string>;
  value: number;
}

/** A small parser of the Prometheus text format: every sample must have HELP and TYPE lines before it. */
function parse(text: string): Map<string, Sample> {
  const samples = new Map<string, Sample>();
  const help = new Set<string>();
  const type = new Set<string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let m = /^# HELP (\w+) .+$/.exec(line);
    if (m) {
      help.add(m[1] as string);
      continue;
    }
    m = /^# TYPE (\w+) (gauge|counter)$/.exec(line);
    if (m) {
      type.add(m[1] as string);
      continue;
    }
    m = /^(\w+)\{(.*)\} (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const name = m[1] as string;
    assert.ok(help.has(name) && type.has(name), `${name} has HELP and TYPE`);
    const labels: Record<string, string> = {};
    for (const pair of (m[2] as string).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1] as string] = pair[2] as string;
    const value = Number(m[3]);
    assert.ok(Number.isFinite(value), `${name} has a numeric value`);
    assert.ok(!samples.has(name), `${name} appears once`);
    samples.set(name, { labels, value });
  }
  return samples;
}

describe('--metrics-file', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('metrics');
  });
  after(async () => {
    await work.remove();
  });

  it('writes backup metrics after a backup, and keeps the last success time when a later run fails', async () => {
    const source = join(work.path, 'src');
    await makeRandomTree(source, 11, { files: 20, maxFileSize: 100_000 });
    const repo = join(work.path, 'repo');
    const dir = join(work.path, 'textfile');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(dir);
    const file = join(dir, 'cairn-backup.prom');
    const env = { CAIRN_PASSWORD: 'metrics', CAIRN_METRICS_FILE: file };
    assert.equal((await runCli(['-r', repo, 'init'], env)).code, 0);
    await assert.rejects(readFile(file), 'init writes no metrics');

    const started = Date.now() / 1000;
    const backup = await runCli(['-r', repo, 'backup', source], env);
    assert.equal(backup.code, 0, backup.stderr);
    const summary = lastOfType(backup, 'summary') as { bytesRead: number; bytesAdded: number; totalFiles: number; durationMs: number };
    const ok = parse(await readFile(file, 'utf8'));
    const success = ok.get('cairn_last_success_timestamp_seconds') as Sample;
    assert.deepEqual(success.labels, { operation: 'backup', repository: `file://${repo}`, host: hostname() });
    assert.ok(success.value >= started - 1 && success.value <= Date.now() / 1000 + 1);
    assert.equal(ok.get('cairn_last_run_success')?.value, 1);
    assert.equal(ok.get('cairn_last_run_timestamp_seconds')?.value, success.value);
    assert.equal(ok.get('cairn_backup_bytes_read')?.value, summary.bytesRead);
    assert.equal(ok.get('cairn_backup_bytes_added')?.value, summary.bytesAdded);
    assert.equal(ok.get('cairn_snapshot_files')?.value, summary.totalFiles);
    assert.equal(ok.get('cairn_backup_duration_seconds')?.value, summary.durationMs / 1000);
    const ratio = ok.get('cairn_backup_dedupe_ratio')?.value as number;
    assert.ok(ratio >= 0 && ratio < 1);

    // A second backup of the same data adds nothing: fully deduplicated.
    assert.equal((await runCli(['-r', repo, 'backup', source], env)).code, 0);
    const second = parse(await readFile(file, 'utf8'));
    assert.equal(second.get('cairn_backup_dedupe_ratio')?.value, 1);
    const lastSuccess = second.get('cairn_last_success_timestamp_seconds')?.value as number;

    const failed = await runCli(['-r', repo, 'backup', source], { ...env, CAIRN_PASSWORD: 'wrong' });
    assert.equal(failed.code, 11);
    const bad = parse(await readFile(file, 'utf8'));
    assert.equal(bad.get('cairn_last_run_success')?.value, 0);
    assert.equal(bad.get('cairn_last_success_timestamp_seconds')?.value, lastSuccess, 'the previous success time is kept');
    assert.ok((bad.get('cairn_last_run_timestamp_seconds')?.value as number) >= lastSuccess);
    assert.equal(bad.has('cairn_backup_bytes_read'), false, 'a failed run reports no backup sizes');
    assert.deepEqual(await readdir(dir), ['cairn-backup.prom'], 'no temporary files are left behind');
  });

  it('writes metrics for verify, labelled with its operation', async () => {
    const file = join(work.path, 'verify.prom');
    const verify = await runCli(['-r', join(work.path, 'repo'), '--metrics-file', file, 'verify'], { CAIRN_PASSWORD: 'metrics' });
    assert.equal(verify.code, 0, verify.stderr);
    const samples = parse(await readFile(file, 'utf8'));
    assert.equal(samples.get('cairn_last_run_success')?.labels.operation, 'verify');
    assert.equal(samples.get('cairn_last_run_success')?.value, 1);
    assert.equal(samples.has('cairn_backup_bytes_added'), false);
  });

  it("escapes label values and reads back only the same operation's success", () => {
    const text = renderMetrics({
      operation: 'backup',
      repository: 's3://b/p"x\\y',
      host: 'h',
      success: true,
      startedAt: 1000,
      finishedAt: 5000,
    });
    assert.match(text, /repository="s3:\/\/b\/p\\"x\\\\y"/);
    assert.equal(previousSuccess(text, 'backup'), 5);
    assert.equal(previousSuccess(text, 'restore'), undefined);
    const failedFirst = renderMetrics({ operation: 'prune', repository: 'r', host: 'h', success: false, startedAt: 0, finishedAt: 1000 });
    assert.doesNotMatch(failedFirst, /cairn_last_success_timestamp_seconds\{/, 'no success time is invented');
  });
});
