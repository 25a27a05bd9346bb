import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { hostname } from 'node:os';
import { readdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { tempDir } from '../../helpers/repo.ts';
import { makeRandomTree } from '../../helpers/tree.ts';
import { mergeMetrics, previousSuccess, renderMetrics } from '../../../agent/progress/metrics-file.ts';

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

/**
 * A file that may hold several operations' series: `name operation` → value. Each metric's HELP and
 * TYPE come once, before all of its samples (the text format's rule; node_exporter rejects a file
 * that repeats them), and each series appears once.
 */
function bySeries(text: string): Map<string, number> {
  const series = new Map<string, number>();
  const described = new Map<string, number>();
  let current = '';
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const comment = /^# (HELP|TYPE) (\w+) /.exec(line);
    if (comment) {
      const name = comment[2] as string;
      if (comment[1] === 'HELP') {
        assert.ok(!described.has(name), `${name} has one HELP line`);
        described.set(name, 0);
      }
      current = name;
      continue;
    }
    const m = /^(\w+)\{(.*)\} (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const name = m[1] as string;
    assert.equal(name, current, `${name}'s samples follow its own HELP and TYPE`);
    const operation = /operation="([^"]*)"/.exec(m[2] as string)?.[1];
    const key = `${name} ${operation}`;
    assert.ok(!series.has(key), `${key} appears once`);
    series.set(key, Number(m[3]));
  }
  return series;
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
    assert.equal(failed.code, 12);
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

  it("keeps every operation's series in one file: backup then verify leaves both, each metric with one HELP and TYPE", async () => {
    const source = join(work.path, 'src-both');
    await makeRandomTree(source, 12, { files: 5, maxFileSize: 10_000 });
    const repo = join(work.path, 'repo-both');
    const dir = join(work.path, 'textfile-both');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(dir);
    const file = join(dir, 'cairn.prom');
    const env = { CAIRN_PASSWORD: 'metrics', CAIRN_METRICS_FILE: file };
    assert.equal((await runCli(['-r', repo, 'init'], env)).code, 0);
    const backup = await runCli(['-r', repo, 'backup', source], env);
    assert.equal(backup.code, 0, backup.stderr);
    const afterBackup = bySeries(await readFile(file, 'utf8'));
    const backupSuccess = afterBackup.get('cairn_last_success_timestamp_seconds backup') as number;

    const verify = await runCli(['-r', repo, 'verify'], env);
    assert.equal(verify.code, 0, verify.stderr);
    const text = await readFile(file, 'utf8');
    const both = bySeries(text);
    assert.equal(both.get('cairn_last_success_timestamp_seconds backup'), backupSuccess, 'the backup series survive the verify');
    assert.equal(both.get('cairn_backup_bytes_read backup'), afterBackup.get('cairn_backup_bytes_read backup'));
    assert.equal(both.get('cairn_last_run_success verify'), 1);
    assert.ok((both.get('cairn_last_success_timestamp_seconds verify') as number) >= backupSuccess);
    assert.equal(both.has('cairn_backup_bytes_read verify'), false);

    // A failed verify replaces only the verify series; the backup's stay as they were.
    const failed = await runCli(['-r', repo, 'verify'], { ...env, CAIRN_PASSWORD: 'wrong' });
    assert.equal(failed.code, 12);
    const later = bySeries(await readFile(file, 'utf8'));
    assert.equal(later.get('cairn_last_run_success verify'), 0);
    assert.equal(later.get('cairn_last_success_timestamp_seconds verify'), both.get('cairn_last_success_timestamp_seconds verify'));
    assert.equal(later.get('cairn_last_run_success backup'), 1);
    assert.equal(later.get('cairn_last_success_timestamp_seconds backup'), backupSuccess);
    assert.deepEqual(await readdir(dir), ['cairn.prom'], 'no temporary or lock file is left behind');
  });

  it('takes over a lock file left by a writer that died, and leaves none', async () => {
    const dir = join(work.path, 'stale-lock');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(dir);
    const file = join(dir, 'cairn.prom');
    const lock = join(dir, '.cairn.prom.lock');
    await writeFile(lock, '');
    const past = new Date(Date.now() - 60_000);
    await utimes(lock, past, past);
    const verify = await runCli(['-r', join(work.path, 'repo'), '--metrics-file', file, 'verify'], { CAIRN_PASSWORD: 'metrics' });
    assert.equal(verify.code, 0, verify.stderr);
    assert.equal(verify.stderr.includes('could not write the metrics file'), false, verify.stderr);
    assert.equal(bySeries(await readFile(file, 'utf8')).get('cairn_last_run_success verify'), 1);
    assert.deepEqual(await readdir(dir), ['cairn.prom']);

    // A FIFO where the lock goes (anyone who can write to the collector's directory can put one there): the command
    // warns, naming it, and ends as it would have, instead of blocking for good on reading it.
    execFileSync('mkfifo', [lock]);
    const blocked = await runCli(['-r', join(work.path, 'repo'), '--metrics-file', file, 'verify'], { CAIRN_PASSWORD: 'metrics' });
    assert.equal(blocked.code, 0, blocked.stderr);
    assert.match(
      blocked.stderr,
      /warning: could not write the metrics file .*cairn\.prom\.lock is not a regular file, where cairn keeps a lock file/,
    );
  });

  it('merges by operation: the run replaces its own series, keeps the others, and drops lines of no operation', () => {
    const run = (operation: string, success: boolean, finishedAt: number) => ({
      operation,
      repository: 'r',
      host: 'h',
      success,
      startedAt: finishedAt - 1000,
      finishedAt,
    });
    const backup = renderMetrics({
      ...run('backup', true, 10_000),
      backup: { bytesRead: 1, bytesAdded: 2, rawBytesAdded: 2, totalBytes: 4, totalFiles: 1, durationMs: 1000 },
    });
    const merged = mergeMetrics(`${backup}stray_metric 5\ncairn_last_run_success{host="h"} 1\n`, run('prune', false, 20_000));
    const series = bySeries(merged);
    assert.equal(series.get('cairn_backup_bytes_added backup'), 2);
    assert.equal(series.get('cairn_last_run_success prune'), 0);
    assert.equal(series.has('cairn_last_success_timestamp_seconds prune'), false, 'no success time is invented');
    assert.doesNotMatch(merged, /stray_metric|\{host="h"\}/);
    const again = bySeries(mergeMetrics(merged, run('backup', false, 30_000)));
    assert.equal(again.get('cairn_last_success_timestamp_seconds backup'), 10, 'a failed backup keeps its own success time');
    assert.equal(again.has('cairn_backup_bytes_added backup'), false, 'and reports no sizes');
    assert.equal(again.get('cairn_last_run_success prune'), 0);
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
