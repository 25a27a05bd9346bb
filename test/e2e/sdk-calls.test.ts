import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CallBuilder } from '../../agent/core/aws-calls.ts';
import { parsePlan, type Plan } from '../../agent/core/plan.ts';
import { kmsUnwrapMasterKey } from '../../agent/keys/kms.ts';
import { PlanSource } from '../../agent/orchestration/plan-source.ts';
import { TaskReporter } from '../../agent/orchestration/task-reporter.ts';
import { openStorage } from '../../agent/storage/open.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { startS3rver, s3rverEnv, type S3rver } from '../helpers/s3rver.ts';
import { startSfnStandin, startSsmStandin, type SfnStandin, type SsmStandin } from './standins.ts';
import {
  PRELOAD,
  asPrincipal,
  e2eScope,
  functionOfModule,
  matches,
  startRecording,
  unlistedCalls,
  type Deployment,
  type RecordedCall,
} from './sdk-calls.ts';

/**
 * The recording of AWS SDK commands (agent/core/aws-call-record.ts, ./sdk-calls.ts) on the real
 * clients against s3rver and the SSM and Step Functions stand-ins: what is recorded, that no
 * secret is, that the agent's processes record through the preload, and that a call the
 * inventory lacks is reported by name while the calls it lists pass.
 */
const SECRET = 'a passphrase nobody may log 7f3a';
const BODY = 'object body nobody may log 9c1d';
const TOKEN = 'task-token-nobody-may-log-0b2e';
const PLAINTEXT_CIPHER = 'ciphertext-nobody-may-log';

describe('AWS SDK call recording', { timeout: 120_000 }, () => {
  let s3: S3rver;
  let proxy: FaultProxy;
  let ssm: SsmStandin;
  let sfn: SfnStandin;
  let work: string;
  let env: NodeJS.ProcessEnv;
  let plan: Plan;
  let deployment: Deployment;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'cairn-sdk-calls-'));
    s3 = await startS3rver();
    proxy = await startFaultProxy(s3.endpoint);
    ssm = await startSsmStandin();
    sfn = await startSfnStandin();
    env = {
      ...s3rverEnv(),
      AWS_REGION: 'eu-central-1',
      AWS_ENDPOINT_URL_SSM: ssm.endpoint,
      AWS_ENDPOINT_URL_SFN: sfn.endpoint,
      // The SSM stand-in refuses KMS's operations: the call fails, and is still recorded (a refused call is a call).
      AWS_ENDPOINT_URL_KMS: ssm.endpoint,
      CAIRN_S3_ENDPOINT: proxy.endpoint,
      CAIRN_S3_PATH_STYLE: 'true',
    };
    Object.assign(process.env, env);
    plan = parsePlan(
      {
        id: 'rec-plan',
        targets: { instanceIds: ['i-0123456789abcdef0'] },
        engine: 'files',
        engineOptions: { paths: ['/srv'] },
        schedule: { expression: 'rate(1 day)' },
        retention: { keepLast: 2 },
        keySource: { passphraseParameter: '/cairn/rec/rec-plan/passphrase' },
        rpo: '26h',
        repository: { url: `s3://${s3.bucket}/plans/rec-plan/` },
      },
      'test plan',
    );
    deployment = { region: 'eu-central-1', account: '123456789012', envName: 'rec', plans: [plan] };
    ssm.parameters.set('/cairn/rec/rec-plan/passphrase', SECRET);
    ssm.parameters.set('/cairn/rec/plans/rec-plan', JSON.stringify({ id: 'rec-plan' }));
  });
  after(async () => {
    await Promise.all([proxy.stop(), ssm.close(), sfn.close()]);
    await s3.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('records command, bucket, key, prefix, If-None-Match, parameter, KMS key and context; never a body, value, token or ciphertext', async () => {
    const recording = startRecording(join(work, 'none.jsonl'));
    try {
      const storage = await openStorage(`s3://${s3.bucket}/plans/rec-plan/`, env);
      await asPrincipal('planBackup', async () => {
        await storage.put('orchestration/runs/r1', Buffer.from(BODY), { ifAbsent: true });
        await storage.get('orchestration/runs/r1');
        for await (const o of storage.list('orchestration/')) assert.ok(o.key);
        const source = new PlanSource({ CAIRN_PLAN_PARAMETER_PREFIX: '/cairn/rec/plans/' });
        assert.equal(await source.secret('/cairn/rec/rec-plan/passphrase'), SECRET);
      });
      const reporter = new TaskReporter({ token: TOKEN, heartbeatSeconds: 60, onGone: () => undefined, onWarning: () => undefined });
      await reporter.heartbeat();
      const kmsKey = 'arn:aws:kms:eu-central-1:123456789012:key/0d2a3e7b-1111-2222-3333-444455556666';
      await assert.rejects(
        kmsUnwrapMasterKey(
          {
            kind: 'kms',
            keyArn: kmsKey,
            ciphertext: Buffer.from(PLAINTEXT_CIPHER).toString('base64'),
            created: '',
            host: '',
            user: '',
          } as never,
          'repo1',
          'rec-plan',
        ),
      );
      const calls = recording.calls();
      const strip = (c: RecordedCall): Partial<RecordedCall> => ({ ...c });
      assert.deepEqual(calls.map(strip), [
        {
          principal: 'planBackup',
          service: 'S3',
          command: 'PutObject',
          bucket: s3.bucket,
          key: 'plans/rec-plan/orchestration/runs/r1',
          ifNoneMatch: '*',
        },
        { principal: 'planBackup', service: 'S3', command: 'GetObject', bucket: s3.bucket, key: 'plans/rec-plan/orchestration/runs/r1' },
        { principal: 'planBackup', service: 'S3', command: 'ListObjectsV2', bucket: s3.bucket, prefix: 'plans/rec-plan/orchestration/' },
        {
          principal: 'planBackup',
          service: 'SSM',
          command: 'GetParameter',
          parameter: '/cairn/rec/rec-plan/passphrase',
          withDecryption: true,
        },
        { principal: 'test', service: 'SFN', command: 'SendTaskHeartbeat' },
        {
          principal: 'test',
          service: 'KMS',
          command: 'Decrypt',
          keyId: kmsKey,
          encryptionContext: { 'cairn:repository': 'repo1', 'cairn:plan': 'rec-plan' },
        },
      ]);
      const text = JSON.stringify(calls);
      for (const secret of [SECRET, BODY, TOKEN, Buffer.from(PLAINTEXT_CIPHER).toString('base64')])
        assert.ok(!text.includes(secret), `the recording holds no ${secret}`);
    } finally {
      recording.stop();
    }
  });

  it("the agent's processes record through the preload, as the plan's host for the document's operation", async () => {
    const file = join(work, 'agent.jsonl');
    const script = `
      import { openStorage } from ${JSON.stringify(fileURLToPath(new URL('../../agent/storage/open.ts', import.meta.url)))};
      const storage = await openStorage(${JSON.stringify(`s3://${s3.bucket}/plans/rec-plan/`)}, process.env);
      await storage.put('snapshots/abc', Buffer.from(${JSON.stringify(BODY)}), { ifAbsent: true });
      await storage.stat('snapshots/abc');
    `;
    // Not spawnSync: the conditional-write proxy in front of s3rver runs in this process.
    await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
      env: {
        ...process.env,
        NODE_OPTIONS: `--import=${PRELOAD}`,
        CAIRN_RECORD_AWS_CALLS: file,
        SSM_planId: 'rec-plan',
        SSM_operation: 'backup',
      },
    });
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    assert.deepEqual(
      lines.map((l) => JSON.parse(l) as RecordedCall),
      [
        {
          principal: 'host',
          planId: 'rec-plan',
          operation: 'backup',
          service: 'S3',
          command: 'PutObject',
          bucket: s3.bucket,
          key: 'plans/rec-plan/snapshots/abc',
          ifNoneMatch: '*',
        },
        {
          principal: 'host',
          planId: 'rec-plan',
          operation: 'backup',
          service: 'S3',
          command: 'HeadObject',
          bucket: s3.bucket,
          key: 'plans/rec-plan/snapshots/abc',
        },
      ],
    );
    assert.ok(!readFileSync(file, 'utf8').includes(BODY));
    // And the inventory lists both for the host's backup.
    assert.deepEqual(
      unlistedCalls(
        lines.map((l) => JSON.parse(l) as RecordedCall),
        deployment,
      ),
      [],
    );
  });

  it('a call the inventory lacks is named; the calls it lists pass', () => {
    const key = (k: string): string => `plans/rec-plan/${k}`;
    const host = { principal: 'host', planId: 'rec-plan', operation: 'backup', service: 'S3', bucket: s3.bucket };
    const unlisted: RecordedCall[] = [
      // A host deleting, overwriting (no If-None-Match), writing the control plane's records, another plan's prefix.
      { ...host, command: 'DeleteObject', key: key('snapshots/abc') },
      { ...host, command: 'PutObject', key: key('snapshots/abc') },
      { ...host, command: 'PutObject', key: key('orchestration/lease'), ifNoneMatch: '*' },
      { ...host, command: 'GetObject', key: 'plans/other-plan/config' },
      { ...host, command: 'DeleteObject', key: key('snapshots/abc'), versioned: true },
      // A function calling what no function's entry lists.
      { principal: 'planBackup', service: 'S3', command: 'PutObject', bucket: s3.bucket, key: key('snapshots/abc'), ifNoneMatch: '*' },
      { principal: 'gcSweep', service: 'KMS', command: 'Encrypt', keyId: 'arn:aws:kms:eu-central-1:123456789012:key/x' },
      // A parameter read with decryption the inventory lists only without.
      { principal: 'planVerify', service: 'SSM', command: 'GetParameter', parameter: '/cairn/rec/plans/rec-plan', withDecryption: true },
    ];
    const listed: RecordedCall[] = [
      { ...host, command: 'PutObject', key: key('snapshots/abc'), ifNoneMatch: '*' },
      { ...host, command: 'ListObjectsV2', prefix: key('snapshots/') },
      { principal: 'host', planId: 'rec-plan', operation: 'backup', service: 'SFN', command: 'SendTaskSuccess' },
      { principal: 'planVerify', service: 'SSM', command: 'GetParameter', parameter: '/cairn/rec/plans/rec-plan', withDecryption: false },
      { principal: 'gcSweep', service: 'S3', command: 'DeleteObject', bucket: s3.bucket, key: key('packs/ab/ab00cd') },
      // The test's own calls are not a component's.
      { principal: 'test', service: 'S3', command: 'DeleteObject', bucket: s3.bucket, key: key('config') },
    ];
    assert.deepEqual(unlistedCalls(listed, deployment), []);
    const named = unlistedCalls(unlisted, deployment);
    assert.equal(named.length, unlisted.length, named.join('\n'));
    assert.ok(named.some((n) => n.startsWith('host of rec-plan (backup): S3 DeleteObject') && !n.includes('VersionId')));
    assert.ok(named.some((n) => n.includes('S3 PutObject') && n.includes('snapshots/abc') && !n.includes('If-None-Match')));
    // The matcher compares the conditional header both ways.
    const scope = e2eScope(deployment, plan);
    const create = new CallBuilder(scope).create('snapshots/{id}')[0]!;
    assert.ok(matches(listed[0]!, create, scope));
    assert.ok(!matches(unlisted[1]!, create, scope));
  });

  it('names functions by their handler module', () => {
    assert.equal(functionOfModule('../../functions/plan-backup.ts'), 'planBackup');
    assert.equal(functionOfModule('../../functions/create-repository.ts'), 'createRepository');
    assert.equal(functionOfModule('../../functions/gc-sweep.ts'), 'gcSweep');
  });
});
