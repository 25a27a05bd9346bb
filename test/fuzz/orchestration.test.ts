import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { SSMClient } from '@aws-sdk/client-ssm';
import fc from 'fast-check';
import {
  agentRequestSchema,
  decodeRequest,
  encodeRequest,
  parseOrExplain,
  restoreInputSchema,
  runSummarySchema,
  type AgentRequest,
} from '../../agent/core/orchestration.ts';
import { parseEnvironmentConfig, parsePlan, planSchema, type PlanInput } from '../../agent/core/plan.ts';
import { PlanSource } from '../../agent/orchestration/plan-source.ts';
import { decodes, decodesAsync, fuzz, fuzzAsync, jsonDocumentBytes, jsonValues, mutatedBytes } from './fuzz.ts';

/**
 * Plans and the orchestration messages. Clean means a CairnError with the code each
 * parser documents: Cairn.Config for plans and environment configs, Cairn.Usage for
 * the agent request (SSM document parameter), the console's restore input and the
 * run summary (parseOrExplain). A value that parses passes its schema again.
 *
 * SSM parameters: the agent decodes its request from the SSM document's base64url
 * parameter (decodeRequest) and reads its plan from a Parameter Store value
 * (PlanSource.plan, JSON then parsePlan); the latter is fed through an SSM client
 * that returns the fuzzed parameter value (the parsing is the agent's own).
 */
const planVariants: PlanInput[] = [
  {
    id: 'orders-db',
    targets: { instanceIds: ['i-0123456789abcdef0'] },
    engine: 'pgdump',
    engineOptions: { connection: { host: '127.0.0.1', port: 5432, user: 'backup' }, passwordParameter: '/cairn/test/orders-db/password' },
    schedule: { expression: 'cron(0 2 * * ? *)' },
    retention: { keepDaily: 7 },
    keySource: { passphraseParameter: '/cairn/test/orders-db/passphrase' },
    rpo: '26h',
  },
  {
    id: 'web-files',
    targets: { tag: { key: 'role', value: 'web' } },
    engine: 'files',
    engineOptions: { paths: ['/srv/www', '/etc'] },
    schedule: { expression: 'rate(6 hours)' },
    retention: { keepLast: 3, keepWeekly: 4 },
    keySource: { passphraseParameter: '/cairn/test/web/passphrase' },
    rpo: '7h',
  },
  {
    id: 'shop-maria',
    targets: { instanceIds: ['i-0123456789abcdef0', 'mi-0123456789abcdef0'] },
    engine: 'mariadb',
    engineOptions: { connection: { host: 'db', port: 3306, user: 'backup' }, passwordParameter: '/cairn/test/shop/password', parallel: 4 },
    schedule: { expression: 'cron(0 3 * * ? *)' },
    retention: { keepDaily: 14, keepWithinPitr: '3d' },
    keySource: { passphraseParameter: '/cairn/test/shop/passphrase' },
    rpo: '26h',
    pitr: { enabled: true },
  },
];

/** The plans as the agent reads them back from Parameter Store: resolved by the environment config's parser. */
const resolvedPlans = parseEnvironmentConfig(
  {
    account: '123456789012',
    region: 'eu-central-1',
    plans: planVariants,
  },
  'test',
).plans;
const validPlan = fc.constantFrom(...resolvedPlans).map((p) => JSON.parse(JSON.stringify(p)) as unknown);
const validEnv = fc
  .subarray(planVariants, { minLength: 1 })
  .map((plans) => ({ account: '123456789012', region: 'eu-central-1', plans, repository: { noncurrentVersionDays: 30 } }));

const snapshotId = 'ab'.repeat(32);
const validRequest: fc.Arbitrary<AgentRequest> = fc.constantFrom<AgentRequest>(
  { operation: 'backup', planId: 'orders-db', runId: 'run-1', scheduledTime: '2026-11-23T03:00:00Z', heartbeatSeconds: 300 },
  { operation: 'restore', planId: 'orders-db', snapshotId, targetPath: '/var/restore', heartbeatSeconds: 300 },
  {
    operation: 'restore',
    planId: 'shop-maria',
    snapshotId,
    pointInTime: '2026-11-23T03:00:00+01:00',
    stream: 'mariadb-shop',
    heartbeatSeconds: 600,
  },
  { operation: 'verify', planId: 'orders-db', readDataSubset: 0.1, heartbeatSeconds: 300 },
  { operation: 'drill', planId: 'orders-db', snapshotId, heartbeatSeconds: 300 },
  { operation: 'archive', planId: 'shop-maria', heartbeatSeconds: 300 },
);
const validRestoreInput = fc.constantFrom<unknown>(
  { planId: 'orders-db' },
  { planId: 'orders-db', snapshot: 'latest', targetInstanceId: 'i-0123456789abcdef0', targetPath: '/restore', dryRun: true },
  { planId: 'shop-maria', pointInTime: '2026-11-23T03:00:00Z', targetDatabase: 'shop_copy' },
  { planId: 'shards', sourceHost: 'ip-10-0-1-17', targetPath: '/restore' },
);
const validSummary = fc.constantFrom<unknown>(
  {
    operation: 'backup',
    planId: 'orders-db',
    host: 'db1',
    startedAt: '2026-11-23T03:00:00Z',
    finishedAt: '2026-11-23T03:10:00Z',
    snapshotId,
    engine: 'pgdump',
    bytesRead: 10,
    bytesAdded: 5,
    totalBytes: 10,
    files: { new: 1, changed: 0, unchanged: 3 },
    engineMetadata: { lsn: '0/1' },
  },
  {
    operation: 'verify',
    planId: 'orders-db',
    host: 'db1',
    startedAt: 'x',
    finishedAt: 'y',
    verify: { ok: true, problems: 0, packsRead: 2 },
  },
);

describe('fuzz: plans and orchestration messages', () => {
  it('the valid samples are valid', () => {
    assert.equal(resolvedPlans.length, planVariants.length);
  });

  it('plans (parsePlan): mutated and arbitrary values parse to schema-valid plans or fail as Cairn.Config', () => {
    fuzz(
      'plan/parse',
      jsonValues(validPlan),
      (value) => {
        decodes(
          () => parsePlan(value, 'fuzz'),
          ['Cairn.Config'],
          (plan) => assert.ok(planSchema.safeParse(plan).success),
        );
      },
      1000,
    );
  });

  it('environment configs (parseEnvironmentConfig): parse to resolved configs or fail as Cairn.Config', () => {
    fuzz(
      'plan/environment',
      fc.tuple(jsonValues(validEnv), fc.constantFrom('test', 'prod', 'Bad Env', '')),
      ([value, env]) => {
        decodes(
          () => parseEnvironmentConfig(value, env),
          ['Cairn.Config'],
          (config) => {
            for (const plan of config.plans) assert.ok(planSchema.safeParse(JSON.parse(JSON.stringify(plan))).success);
            assert.ok(config.repository.bucketName.length <= 63);
          },
        );
      },
      1000,
    );
  });

  it('agent requests (the SSM document parameter): decodeRequest gives a schema-valid request or fails as Cairn.Usage', () => {
    const encoded = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.base64String({ maxLength: 200 }),
      jsonDocumentBytes(validRequest).map((b) => b.toString('base64url')),
      mutatedBytes(validRequest.map((r) => Buffer.from(encodeRequest(r)))).map((b) => b.toString('latin1')),
      fc.constant('A'.repeat(8001)),
    );
    fuzz(
      'orchestration/request',
      encoded,
      (text) => {
        decodes(
          () => decodeRequest(text),
          ['Cairn.Usage'],
          (request) => {
            assert.ok(agentRequestSchema.safeParse(request).success);
            assert.deepEqual(decodeRequest(encodeRequest(request)), request);
          },
        );
      },
      1500,
    );
  });

  it('restore inputs and run summaries (parseOrExplain) parse to schema-valid values or fail as Cairn.Usage', () => {
    fuzz(
      'orchestration/restore-input',
      jsonValues(validRestoreInput),
      (value) => {
        decodes(
          () => parseOrExplain(restoreInputSchema, value, 'restore input'),
          ['Cairn.Usage'],
          (v) => assert.ok(restoreInputSchema.safeParse(v).success),
        );
      },
      1000,
    );
    fuzz(
      'orchestration/run-summary',
      jsonValues(validSummary),
      (value) => {
        decodes(
          () => parseOrExplain(runSummarySchema, value, 'agent summary'),
          ['Cairn.Usage'],
          (v) => assert.ok(runSummarySchema.safeParse(v).success),
        );
      },
      1000,
    );
  });

  it('plan parameters read from Parameter Store (PlanSource.plan) give schema-valid plans or fail as Cairn.Config', async () => {
    let value = '';
    const client = { send: () => Promise.resolve({ Parameter: { Value: value } }) } as unknown as SSMClient;
    const source = new PlanSource({ CAIRN_PLAN_PARAMETER_PREFIX: '/cairn/test/plans/' }, client);
    await fuzzAsync(
      'ssm/plan-parameter',
      jsonDocumentBytes(validPlan),
      async (data) => {
        value = data.toString('utf8');
        await decodesAsync(
          () => source.plan('orders-db'),
          ['Cairn.Config'],
          (plan) => assert.ok(planSchema.safeParse(plan).success),
        );
      },
      500,
    );
  });
});
