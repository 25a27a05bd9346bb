import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.ts';
import { describeTree, makeRandomTree } from '../helpers/tree.ts';
import { startSystem, type System } from './harness.ts';

/**
 * A plan whose repository is a bucket at an S3-compatible endpoint (issue 17, point 4), end to
 * end: the synthesized state machines under aws-local-stepfunctions, the real handlers, the real
 * document script and agent bundle, s3rver as the endpoint (behind the harness's stand-in for
 * conditional writes). The endpoint's access key is in the plan's SecureString parameter (the
 * Parameter Store stand-in). The AWS credential chain of the functions and of the host is given a
 * key s3rver refuses, so every request that reaches the endpoint was signed with the parameter's
 * key, or it fails.
 */
const PLAN = 'minio-plan';
const PASSPHRASE = 'e2e endpoint passphrase, long enough';
const PASSPHRASE_PARAMETER = `/cairn/e2e/${PLAN}/passphrase`;
const KEY_PARAMETER = `/cairn/e2e/${PLAN}/endpoint-key`;
/** s3rver's only key. */
const ENDPOINT_KEY = JSON.stringify({ accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' });
/** What the instance role and the Lambda role would sign with: not the endpoint's. */
const ROLE_CREDENTIALS = { AWS_ACCESS_KEY_ID: 'AKIAE2EINSTANCEROLE', AWS_SECRET_ACCESS_KEY: 'instance-role-secret' };

describe('a plan at an S3-compatible endpoint end to end', { timeout: 600_000 }, () => {
  let system: System;
  let work: string;
  let data: string;
  let repoUrl: string;
  // The operator's own `cairn`, with the endpoint's key in its environment, to look at the repository.
  const cliEnv = (): Record<string, string> => ({
    ...(system.env as Record<string, string>),
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    CAIRN_PASSWORD: PASSPHRASE,
  });
  const snapshotIds = async (): Promise<string[]> => {
    const r = await runCli(['snapshots', '--json', '--repo', repoUrl], cliEnv());
    assert.equal(r.code, 0, r.stderr);
    const line = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; snapshots?: Array<{ id: string }> })
      .find((l) => l.type === 'snapshots');
    return (line?.snapshots ?? []).map((s) => s.id).sort();
  };
  const asHost = { hostEnv: ROLE_CREDENTIALS };

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'cairn-e2e-endpoint-'));
    data = join(work, 'data');
    await makeRandomTree(data, 23, { files: 10, maxFileSize: 80_000 });
    system = await startSystem(({ endpoint, bucket }) => {
      repoUrl = `s3://${bucket}/minio/${PLAN}/?endpoint=${endpoint}&path-style=true&region=us-east-1`;
      return [
        {
          id: PLAN,
          targets: { instanceIds: ['i-0e2e0000000000001'] },
          engine: 'files',
          engineOptions: { paths: [data] },
          schedule: { expression: 'rate(1 day)' },
          retention: { keepLast: 1 },
          keySource: { passphraseParameter: PASSPHRASE_PARAMETER },
          rpo: '26h',
          timeouts: { heartbeatSeconds: 30, timeoutSeconds: 900 },
          repository: { url: repoUrl, credentialsParameter: KEY_PARAMETER },
        },
      ];
    });
    system.ssm.parameters.set(PASSPHRASE_PARAMETER, PASSPHRASE);
    system.ssm.parameters.set(KEY_PARAMETER, ENDPOINT_KEY);
    // The in-process functions' role: refused by the endpoint.
    Object.assign(process.env, ROLE_CREDENTIALS);
  });
  after(async () => {
    await system.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('the plan in Parameter Store names the endpoint and the key parameter, never the key', () => {
    const stored = system.ssm.parameters.get(`/cairn/e2e/plans/${PLAN}`) ?? '';
    assert.deepEqual((JSON.parse(stored) as { repository: unknown }).repository, { url: repoUrl, credentialsParameter: KEY_PARAMETER });
    assert.doesNotMatch(stored, /S3RVER/);
  });

  it('scheduled backups create the repository and succeed, retention keeps the policy, a restore is byte-identical', async () => {
    const first = (await system.run('Backup', { planId: PLAN, scheduledTime: '2026-11-20T02:00:00Z' }, asHost)) as {
      agent: { snapshotId: string };
    };
    assert.match(first.agent.snapshotId, /^[0-9a-f]{64}$/);
    const second = (await system.run('Backup', { planId: PLAN, scheduledTime: '2026-11-21T02:00:00Z' }, asHost)) as {
      agent: { snapshotId: string };
    };
    // The Backup machine's own retention (keepLast 1) has already run after each backup.
    assert.deepEqual(await snapshotIds(), [second.agent.snapshotId]);
    const third = (await system.run('Backup', { planId: PLAN, scheduledTime: '2026-11-22T02:00:00Z' }, asHost)) as {
      agent: { snapshotId: string };
    };
    const retention = (await system.run('Retention', { planId: PLAN })) as { retention: { kept: Array<{ id: string }> } };
    assert.deepEqual(
      retention.retention.kept.map((k) => k.id),
      [third.agent.snapshotId],
    );
    assert.deepEqual(await snapshotIds(), [third.agent.snapshotId]);

    const target = join(work, 'restored');
    const restored = (await system.run('Restore', { planId: PLAN, snapshot: 'latest', targetPath: target }, asHost)) as {
      agent: { snapshotId: string };
      recorded: { outcome: string };
    };
    assert.equal(restored.agent.snapshotId, third.agent.snapshotId);
    assert.equal(restored.recorded.outcome, 'success');
    assert.deepEqual(await describeTree(target), await describeTree(data));
    const check = await runCli(['check', '--repo', repoUrl], cliEnv());
    assert.equal(check.code, 0, `${check.stdout}${check.stderr}`);
  });

  it('a wrong key in the parameter fails the run with a message naming the parameter', async () => {
    system.ssm.parameters.set(KEY_PARAMETER, JSON.stringify({ accessKeyId: 'AKIAWRONGENDPOINTKEY', secretAccessKey: 'wrong' }));
    try {
      await assert.rejects(system.run('Backup', { planId: PLAN, scheduledTime: '2026-11-23T02:00:00Z' }, asHost), (error: unknown) => {
        assert.ok(error instanceof Error);
        const text = `${error.name} ${error.message} ${JSON.stringify((error as { cause?: unknown }).cause ?? '')}`;
        assert.match(text, /Cairn\.Config/);
        assert.match(text, new RegExp(`access key in parameter ${KEY_PARAMETER}`));
        assert.doesNotMatch(text, /"wrong"|secretAccessKey":"wrong/);
        return true;
      });
      // A parameter that does not hold the documented shape is named too, at the first state that opens the repository.
      system.ssm.parameters.set(KEY_PARAMETER, 'not json');
      await assert.rejects(
        system.run('Restore', { planId: PLAN, snapshot: 'latest', targetPath: join(work, 'r2') }, asHost),
        new RegExp(`parameter ${KEY_PARAMETER} does not hold JSON`),
      );
    } finally {
      system.ssm.parameters.set(KEY_PARAMETER, ENDPOINT_KEY);
    }
  });
});
