import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeDamageMarkers } from '../../agent/core/damage.ts';
import { parsePlan } from '../../agent/core/plan.ts';
import type { Repository } from '../../agent/core/repository.ts';
import type { Snapshot } from '../../agent/core/snapshot.ts';
import { freshnessOf } from '../../functions/freshness.ts';
import { planRestoreFor } from '../../functions/plan-restore.ts';
import { backupDir, fileRepo, initSmallRepo, tempDir } from '../helpers/repo.ts';

const INSTANCE_ID = 'i-0123456789abcdef0';
const plan = parsePlan(
  {
    id: 'files-main',
    targets: { instanceIds: [INSTANCE_ID] },
    engine: 'files',
    engineOptions: { paths: ['/srv'] },
    schedule: { expression: 'rate(1 day)', timeZone: 'UTC' },
    retention: { keepLast: 3 },
    keySource: { passphraseParameter: '/cairn/test/files-main/passphrase' },
    rpo: '26h',
    repository: { url: 's3://unused-bucket/plans/files-main/' },
  },
  'test',
);

/**
 * A snapshot a damage marker names (verify or a drill found its data damaged) is not a good
 * backup anywhere: the console's restore planner reads markers as the CLI's `latest` does, and the
 * freshness the RPO alarm watches does not count it.
 */
describe('the functions read damage markers as the CLI does', () => {
  let dir: { path: string; remove: () => Promise<void> };
  let repo: Repository;
  let older: Snapshot;
  let newest: Snapshot;
  before(async () => {
    dir = await tempDir('cairn-fn-damage-');
    repo = await initSmallRepo(fileRepo(join(dir.path, 'repo')));
    const data = join(dir.path, 'data');
    await mkdir(data);
    await writeFile(join(data, 'a'), 'one');
    older = await backupDir(repo, data);
    await writeFile(join(data, 'a'), 'two');
    newest = await backupDir(repo, data);
    await writeDamageMarkers(
      repo,
      { packs: [], snapshots: [newest.id] },
      { who: { host: 'h', user: 'u' }, tool: 'test', source: 'verify' },
    );
  });
  after(() => dir.remove());

  it('PlanRestore: latest passes over the marked snapshot, naming it; its id still restores it, with a warning', async () => {
    const hosts = { planInstanceIds: [INSTANCE_ID], online: true };
    const latest = await planRestoreFor({ planId: 'files-main', targetPath: '/srv/r', dryRun: true }, plan, repo, hosts);
    assert.equal(latest.snapshot.id, older.id);
    assert.match(latest.warnings.join('\n'), new RegExp(`latest passes over snapshot ${newest.id} .*a damage marker names it`));
    const byId = await planRestoreFor({ planId: 'files-main', snapshot: newest.id.slice(0, 8), targetPath: '/srv/r' }, plan, repo, hosts);
    assert.equal(byId.snapshot.id, newest.id);
    assert.match(byId.warnings.join('\n'), /is damaged \(a damage marker names it\): restoring it as requested/);
  });

  it('freshness: the newest good snapshot is the older one', async () => {
    const at = new Date(Date.parse(newest.time) + 60_000);
    const fresh = await freshnessOf(plan, repo, at);
    assert.equal(fresh.newest?.id, older.id);
    assert.ok((fresh.ageSeconds ?? 0) >= 60);
  });
});
