import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CairnError } from '../../agent/core/errors.ts';
import { buildApp, loadEnvironmentConfig } from '../../cdk/lib/app.ts';
import { environments } from '../../cdk/config/index.ts';
import { prod } from '../../cdk/config/prod.ts';

const root = new URL('../../', import.meta.url).pathname;

function rejects(fn: () => unknown): CairnError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof CairnError, String(error));
    return error;
  }
  assert.fail('expected a config error');
}

describe('CDK app entry', () => {
  test('every shipped environment config is valid', () => {
    for (const name of Object.keys(environments)) assert.equal(loadEnvironmentConfig(name).envName, name);
  });

  test('an unknown environment is refused, naming it and the available ones', () => {
    const error = rejects(() => buildApp('staging', { nag: false }));
    assert.equal(error.code, 'Cairn.Config');
    assert.match(error.message, /unknown environment "staging" \(available: dev, prod\)/);
    assert.match(rejects(() => buildApp(undefined, { nag: false })).message, /run with -c env=<name> \(available: dev, prod\)/);
  });

  test('a broken plan fails the build with the environment, plan and field named, before any stack exists', () => {
    const broken = { ...prod, plans: [prod.plans[0], { ...prod.plans[1]!, schedule: { expression: 'daily at 2' } }, prod.plans[2]] };
    const error = rejects(() => buildApp('prod', { known: { prod: broken }, nag: false }));
    assert.match(error.message, /^env prod, plan billing-pg: schedule\.expression: an EventBridge Scheduler expression/);
  });

  test('`npx cdk synth -c env=dev` succeeds offline, and the document checks the real agent bundle', () => {
    const out = mkdtempSync(join(tmpdir(), 'cairn-cdk-synth-'));
    const r = spawnSync('npx', ['cdk', 'synth', '-c', 'env=dev', '-q', '-o', out], {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, CDK_DISABLE_VERSION_CHECK: '1', CDK_DISABLE_CLI_TELEMETRY: 'true' },
    });
    assert.equal(r.status, 0, r.stderr);
    const template = JSON.parse(readFileSync(join(out, 'Cairn-dev.template.json'), 'utf8')) as {
      Resources: Record<string, { Type: string; Properties: Record<string, unknown> }>;
    };
    const doc = Object.values(template.Resources).find((res) => res.Type === 'AWS::SSM::Document')!;
    const lines = (doc.Properties.Content as { mainSteps: Array<{ inputs: { runCommand?: string[] } }> }).mainSteps[1]!.inputs.runCommand!;
    const sha = /^export CAIRN_AGENT_SHA256='([0-9a-f]{64})'$/.exec(lines[0]!)![1];
    const object = /^export CAIRN_AGENT_OBJECT='(.+)'$/.exec(lines[2]!)![1]!;
    assert.ok(readdirSync(out).includes(`asset.${object.replace(/\.mjs$/, '')}.mjs`) || readdirSync(out).some((f) => f.endsWith('.mjs')));
    const bundleFile = readdirSync(out).find((f) => f.startsWith('asset.') && f.endsWith('.mjs'))!;
    const bundle = readFileSync(join(out, bundleFile));
    assert.equal(createHash('sha256').update(bundle).digest('hex'), sha, 'the document names the SHA-256 of the uploaded bundle');
    assert.ok(bundle.length > 100_000, 'a real bundle, not the placeholder');
  });

  test('`npx cdk synth` with an unknown environment exits non-zero and says which exist', () => {
    const r = spawnSync('npx', ['cdk', 'synth', '-c', 'env=nope', '-q', '-o', mkdtempSync(join(tmpdir(), 'cairn-cdk-synth-'))], {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, CDK_DISABLE_VERSION_CHECK: '1', CDK_DISABLE_CLI_TELEMETRY: 'true' },
    });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /unknown environment "nope" \(available: dev, prod\)/);
  });
});
