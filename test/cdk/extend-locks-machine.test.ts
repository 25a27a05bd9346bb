import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { StateMachine } from 'aws-local-stepfunctions';
import { resourcesOf, synthEnvironment } from './synth-helpers.ts';

/**
 * The Backup machine's ExtendLocks loop as synthesized for prod (Object Lock on), run by
 * aws-local-stepfunctions with recording stand-ins for the Lambda tasks (the handler itself is
 * tested in test/functions/extend-locks.test.ts): the state gets the finalized snapshot and its
 * own previous result, is called again until it says done, and retention runs only after.
 */
const prod = synthEnvironment('prod');

/** Template text (Fn::Join, Ref, Fn::GetAtt) as a string; ARNs need only be well formed here. */
function resolve(value: unknown): string {
  if (typeof value === 'string') return value;
  const v = value as Record<string, unknown>;
  if (Array.isArray(v['Fn::Join'])) {
    const [separator, parts] = v['Fn::Join'] as [string, unknown[]];
    return parts.map(resolve).join(separator);
  }
  if (typeof v.Ref === 'string')
    return (
      ({ 'AWS::Region': 'eu-central-1', 'AWS::AccountId': '222222222222', 'AWS::Partition': 'aws' } as Record<string, string>)[v.Ref] ??
      v.Ref
    );
  if (Array.isArray(v['Fn::GetAtt'])) return `arn:aws:lambda:eu-central-1:222222222222:function:${(v['Fn::GetAtt'] as string[])[0]}`;
  throw new Error(`cannot resolve ${JSON.stringify(value)}`);
}

const CONTEXT = {
  Execution: { Id: 'arn:aws:states:eu-central-1:222222222222:execution:cairn-prod-backup:run-1' },
  Task: { Token: 'token' },
};

function backupDefinition(): Record<string, unknown> {
  const found = resourcesOf(prod.json, 'AWS::StepFunctions::StateMachine').find(([, m]) =>
    String(m.Properties.StateMachineName).endsWith('-backup'),
  );
  const definition = JSON.parse(resolve(found![1].Properties.DefinitionString)) as { States: Record<string, Record<string, unknown>> };
  // The stand-in agent answers at once: RunAgent's heartbeat and timeout (from the input) are not needed.
  // Its timers would also keep the test process alive after the run.
  const strip = (states: Record<string, Record<string, unknown>>): void => {
    for (const state of Object.values(states)) {
      delete state.TimeoutSecondsPath;
      delete state.HeartbeatSecondsPath;
      // The states inside an each plan's BackupHosts Map too.
      const processor = state.ItemProcessor as { States: Record<string, Record<string, unknown>> } | undefined;
      if (processor !== undefined) strip(processor.States);
    }
  };
  strip(definition.States);
  return definition;
}

describe('the Backup machine keeps Object Lock before retention (prod)', () => {
  test('ExtendLocks is called with the snapshot and its own last result until done, then retention runs', async () => {
    const calls: Array<{ state: string; event: Record<string, unknown> }> = [];
    const record =
      (state: string, answer: (event: Record<string, unknown>) => unknown) =>
      (event: unknown): Promise<never> => {
        calls.push({ state, event: event as Record<string, unknown> });
        return Promise.resolve(answer(event as Record<string, unknown>) as never);
      };
    let extendCalls = 0;
    const machine = new StateMachine(backupDefinition() as never, { validationOptions: { checkArn: false } });
    const execution = machine.run(
      { planId: 'orders-db' },
      {
        overrides: {
          taskResourceLocalHandlers: {
            PlanBackup: record('PlanBackup', () => ({
              instanceIds: ['i-0a1b2c3d4e5f60718'],
              request: 'e30',
              heartbeatSeconds: 60,
              timeoutSeconds: 600,
            })),
            EnsureRepository: record('EnsureRepository', () => ({ planId: 'orders-db', created: false })),
            RunAgent: record('RunAgent', () => ({ snapshotId: 'c0ffee00' })),
            FinalizeBackup: record('FinalizeBackup', () => ({ snapshotId: 'c0ffee00' })),
            ExtendLocks: record('ExtendLocks', (event) => {
              extendCalls++;
              return { planId: event.planId, snapshotId: event.snapshotId, done: extendCalls === 3, after: `k${extendCalls}` };
            }),
            ApplyRetention: record('ApplyRetention', () => ({ gc: { generation: 'g1', prefixes: [] }, graceSeconds: 0 })),
            SweepPrefix: record('SweepPrefix', () => ({})),
            RecordFailure: record('RecordFailure', () => ({})),
          },
          waitTimeOverrides: { WaitGrace: 0 },
        },
        context: CONTEXT,
      },
    );
    const output = (await execution.result) as { locks: { done: boolean; after: string } };

    const order = calls.map((c) => c.state);
    assert.deepEqual(order, [
      'PlanBackup',
      'EnsureRepository',
      'RunAgent',
      'FinalizeBackup',
      'ExtendLocks',
      'ExtendLocks',
      'ExtendLocks',
      'ApplyRetention',
    ]);
    const extends_ = calls.filter((c) => c.state === 'ExtendLocks').map((c) => c.event);
    assert.deepEqual(extends_[0], { planId: 'orders-db', snapshotId: 'c0ffee00', locks: {} }, 'the first call starts from nothing');
    assert.deepEqual(
      extends_[1]?.locks,
      { planId: 'orders-db', snapshotId: 'c0ffee00', done: false, after: 'k1' },
      'the next call gets the previous result (its cursor)',
    );
    assert.equal((extends_[2]?.locks as { after: string }).after, 'k2');
    assert.deepEqual([output.locks.done, output.locks.after], [true, 'k3']);
  });

  test('a failing ExtendLocks ends in RecordFailure and Failed, and retention does not run', async () => {
    const seen: string[] = [];
    let failure: { error?: { Error?: string } } | undefined;
    const machine = new StateMachine(backupDefinition() as never, { validationOptions: { checkArn: false } });
    const stub = (state: string, answer: () => unknown) => (): Promise<never> => {
      seen.push(state);
      return Promise.resolve(answer() as never);
    };
    const execution = machine.run(
      { planId: 'orders-db' },
      {
        overrides: {
          taskResourceLocalHandlers: {
            PlanBackup: stub('PlanBackup', () => ({
              instanceIds: ['i-0a1b2c3d4e5f60718'],
              request: 'e30',
              heartbeatSeconds: 60,
              timeoutSeconds: 600,
            })),
            EnsureRepository: stub('EnsureRepository', () => ({})),
            RunAgent: stub('RunAgent', () => ({ snapshotId: 'c0ffee00' })),
            FinalizeBackup: stub('FinalizeBackup', () => ({ snapshotId: 'c0ffee00' })),
            ExtendLocks: (): Promise<never> => {
              seen.push('ExtendLocks');
              const error = new Error('snapshot c0ffee00 uses 1 object(s) that do not exist');
              error.name = 'Cairn.Damaged';
              return Promise.reject(error);
            },
            ApplyRetention: stub('ApplyRetention', () => ({})),
            RecordFailure: (event: unknown): Promise<never> => {
              seen.push('RecordFailure');
              failure = event as { error?: { Error?: string } };
              return Promise.resolve({} as never);
            },
          },
          waitTimeOverrides: { WaitGrace: 0 },
        },
        context: CONTEXT,
      },
    );
    await assert.rejects(() => execution.result, /uses 1 object\(s\) that do not exist/);
    assert.equal(failure?.error?.Error, 'Cairn.Damaged', 'RecordFailure gets the error (the BackupFailed alarm)');
    assert.deepEqual(seen, ['PlanBackup', 'EnsureRepository', 'RunAgent', 'FinalizeBackup', 'ExtendLocks', 'RecordFailure']);
  });

  test('an each plan extends each host’s snapshot on its own; a host whose ExtendLocks fails is recorded as failed, the others are not', async () => {
    const hosts = ['i-0000000000000000a', 'i-0000000000000000b'];
    const calls: Array<{ state: string; event: Record<string, unknown> }> = [];
    const record =
      (state: string, answer: (event: Record<string, unknown>) => unknown) =>
      (event: unknown): Promise<never> => {
        calls.push({ state, event: event as Record<string, unknown> });
        const value = answer(event as Record<string, unknown>);
        return (value instanceof Error ? Promise.reject(value) : Promise.resolve(value)) as Promise<never>;
      };
    // RunHostAgent gets the SSM command's parameters, FinalizeHostBackup the Map item's whole state.
    const snapshotOf = (event: Record<string, unknown>): string =>
      `snap-${((event.InstanceIds as string[] | undefined)?.[0] ?? (event.plan as { instanceId: string }).instanceId).slice(-1)}`;
    const extendCalls = new Map<string, number>();
    const machine = new StateMachine(backupDefinition() as never, { validationOptions: { checkArn: false } });
    const execution = machine.run(
      { planId: 'fleet' },
      {
        overrides: {
          taskResourceLocalHandlers: {
            PlanBackup: record('PlanBackup', () => ({
              mode: 'each',
              hosts: hosts.map((instanceId) => ({
                instanceId,
                instanceIds: [instanceId],
                request: 'e30',
                heartbeatSeconds: 60,
                timeoutSeconds: 600,
              })),
            })),
            EnsureRepository: record('EnsureRepository', () => ({})),
            RunHostAgent: record('RunHostAgent', (event) => ({ snapshotId: snapshotOf(event) })),
            FinalizeHostBackup: record('FinalizeHostBackup', (event) => ({ snapshotId: snapshotOf(event), host: snapshotOf(event) })),
            HostExtendLocks: record('HostExtendLocks', (event) => {
              const snapshotId = event.snapshotId as string;
              if (snapshotId === 'snap-b') {
                const error = new Error('snapshot snap-b uses 1 object(s) that do not exist');
                error.name = 'Cairn.Damaged';
                return error;
              }
              const n = (extendCalls.get(snapshotId) ?? 0) + 1;
              extendCalls.set(snapshotId, n);
              return { snapshotId, done: n === 2 };
            }),
            RecordHostFailure: record('RecordHostFailure', () => ({})),
            ApplyRetention: record('ApplyRetention', () => ({ gc: { generation: 'g1', prefixes: [] }, graceSeconds: 0 })),
            SweepPrefix: record('SweepPrefix', () => ({})),
            RecordFailure: record('RecordFailure', () => ({})),
          },
          waitTimeOverrides: { WaitGrace: 0 },
        },
        context: CONTEXT,
      },
    );
    await assert.rejects(() => execution.result, /one or more hosts failed/);
    const extendsOf = (id: string) => calls.filter((c) => c.state === 'HostExtendLocks' && c.event.snapshotId === id);
    assert.equal(extendsOf('snap-a').length, 2, 'host a: called again with its own result until done');
    assert.deepEqual(extendsOf('snap-a')[1]?.event.locks, { snapshotId: 'snap-a', done: false });
    assert.equal(extendsOf('snap-b').length, 1);
    const failures = calls.filter((c) => c.state === 'RecordHostFailure');
    assert.deepEqual(
      failures.map((c) => [c.event.instanceId, (c.event.error as { Error?: string }).Error]),
      [['i-0000000000000000b', 'Cairn.Damaged']],
      'only host b is recorded as failed, with its error',
    );
    assert.ok(
      calls.some((c) => c.state === 'ApplyRetention'),
      'retention still runs for the fleet',
    );
    assert.equal(calls.filter((c) => c.state === 'RecordFailure').length, 0, 'the plan-level failure is not recorded again');
  });
});
