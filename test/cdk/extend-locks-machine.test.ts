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
  for (const state of Object.values(definition.States)) {
    delete state.TimeoutSecondsPath;
    delete state.HeartbeatSecondsPath;
  }
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
});
