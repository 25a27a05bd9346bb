import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Template } from 'aws-cdk-lib/assertions';
import { buildApp, type CairnApp } from '../../cdk/lib/app.ts';

export interface Synthesized extends CairnApp {
  template: Template;
  json: Record<string, unknown>;
  replicaTemplate: Template | undefined;
  outdir: string;
}

/**
 * Synthesizes one environment with bundling skipped (a placeholder agent
 * bundle and no Lambda bundling) and cdk-nag's AwsSolutions checks on: a
 * finding makes synth throw, with the validation report's path in the message.
 */
export function synthEnvironment(envName: string, known?: Readonly<Record<string, unknown>>): Synthesized {
  const outdir = mkdtempSync(join(tmpdir(), 'cairn-cdk-test-'));
  const built = buildApp(envName, {
    appProps: { outdir, context: { 'aws:cdk:bundling-stacks': [] } },
    ...(known === undefined ? {} : { known }),
  });
  try {
    built.app.synth();
  } catch (error) {
    const report = join(outdir, 'validation-report.json');
    if (existsSync(report)) throw new Error(`cdk-nag findings:\n${summarizeReport(readFileSync(report, 'utf8'))}`, { cause: error });
    throw error;
  }
  const template = Template.fromStack(built.stack);
  return {
    ...built,
    template,
    json: template.toJSON(),
    replicaTemplate: built.replicaStack === undefined ? undefined : Template.fromStack(built.replicaStack),
    outdir,
  };
}

function summarizeReport(text: string): string {
  const report = JSON.parse(text) as {
    pluginReports: { violations: { ruleName: string; violatingConstructs: { constructPath: string }[] }[] }[];
  };
  return report.pluginReports
    .flatMap((p) => p.violations.flatMap((v) => v.violatingConstructs.map((c) => `${v.ruleName} at ${c.constructPath}`)))
    .join('\n');
}

/** All resources of one type in a template JSON, by logical id. */
export function resourcesOf(
  json: Record<string, unknown>,
  type: string,
): Array<[string, { Properties: Record<string, unknown> } & Record<string, unknown>]> {
  const resources = json.Resources as Record<string, { Type: string; Properties: Record<string, unknown> }>;
  return Object.entries(resources).filter(([, r]) => r.Type === type);
}
