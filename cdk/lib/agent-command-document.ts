import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import { Construct } from 'constructs';
import { PLAN_ID_PATTERN, pitrOf, planParameterPrefix, walCairnArgs, type Plan } from '../../agent/core/plan.ts';
import type { AgentBundle } from './agent-bundle.ts';
import { repoRoot } from './paths.ts';

/** The operations the document accepts (docs/contracts.md, "Orchestration protocol"). */
export const AGENT_OPERATIONS = ['backup', 'restore', 'verify', 'drill', 'install', 'archive'] as const;

/** Where aws:downloadContent puts the bundle on the host before the script checks it. */
export const AGENT_DOWNLOAD_DIR = '/var/lib/cairn/download';

/** The document's parameters: every one validated by SSM, and passed as an environment variable, never as text. */
export const AGENT_DOCUMENT_PARAMETERS = {
  operation: {
    type: 'String',
    description: 'What the agent does.',
    allowedValues: [...AGENT_OPERATIONS],
    interpolationType: 'ENV_VAR',
  },
  planId: {
    type: 'String',
    description: 'The plan id (its config is read from Parameter Store by the agent).',
    allowedPattern: PLAN_ID_PATTERN.source,
    interpolationType: 'ENV_VAR',
  },
  taskToken: {
    type: 'String',
    description: 'The Step Functions task token the agent reports to (empty for a console install).',
    default: '',
    allowedPattern: '^[A-Za-z0-9+/=_-]{0,2048}$',
    interpolationType: 'ENV_VAR',
  },
  request: {
    type: 'String',
    description: "base64url of the operation's request JSON (validated by the agent's schema).",
    default: '',
    allowedPattern: '^[A-Za-z0-9_-]{0,16384}$',
    interpolationType: 'ENV_VAR',
  },
} as const;

/** The stable link the document installs (agent-document.sh): what the database server's own commands call. */
export const CAIRN_LINK = '/usr/local/bin/cairn';

/**
 * The postgresql.conf lines of a PostgreSQL PITR plan (stack outputs, docs/cdk.md):
 * the server archives every WAL segment through wal-push, and a restored server
 * fetches them back through wal-fetch.
 */
export function postgresArchiveSettings(plan: Plan, region: string): { archiveCommand: string; restoreCommand: string } {
  const cairn = [CAIRN_LINK, ...walCairnArgs(plan, region)].join(' ');
  const stream = pitrOf(plan)?.archiveStream;
  return {
    archiveCommand: `archive_command = '${cairn} wal-push${stream ? ` --stream ${stream}` : ''} %p'`,
    restoreCommand: `restore_command = '${cairn} wal-fetch${stream ? ` --stream ${stream}` : ''} %f "%p"'`,
  };
}

/** The script body, kept in its own file so that a test runs the real thing. */
export function agentDocumentScript(): string {
  return readFileSync(join(repoRoot, 'cdk', 'agent-document.sh'), 'utf8');
}

export interface AgentCommandDocumentProps {
  envName: string;
  bundle: AgentBundle;
}

/**
 * The SSM Command document the state machines send (schema 2.2): download the
 * agent (the bundle, or the single executable) from the CDK asset bucket, check
 * its SHA-256, install it, run `cairn agent <operation>`. Output beyond SSM's 24,000 characters goes to the
 * log group.
 */
export class AgentCommandDocument extends Construct {
  readonly document: ssm.CfnDocument;
  readonly documentName: string;
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: AgentCommandDocumentProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const asset = props.bundle.asset;
    this.documentName = `Cairn-${props.envName}-Agent`;
    this.logGroup = new logs.LogGroup(this, 'CommandOutput', {
      logGroupName: `/cairn/${props.envName}/agent`,
      retention: logs.RetentionDays.ONE_YEAR,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    const prelude = [
      `export CAIRN_AGENT_SHA256='${props.bundle.sha256}'`,
      `export CAIRN_AGENT_DOWNLOAD='${AGENT_DOWNLOAD_DIR}'`,
      `export CAIRN_AGENT_OBJECT='${asset.s3ObjectKey}'`,
      `export AWS_DEFAULT_REGION='${stack.region}'`,
      // Where the agent reads its plan (the plan parameters' path; cdk/lib/plan-parameters.ts).
      `export CAIRN_PLAN_PARAMETER_PREFIX='${planParameterPrefix(props.envName)}'`,
      // node: the ES module the host's Node runs; sea: the single executable (cdk/lib/agent-bundle.ts).
      // Last, so that the lines above keep their places (tests read them by index).
      `export CAIRN_AGENT_KIND='${props.bundle.kind}'`,
    ];
    this.document = new ssm.CfnDocument(this, 'Document', {
      name: this.documentName,
      documentType: 'Command',
      documentFormat: 'JSON',
      updateMethod: 'NewVersion',
      content: {
        schemaVersion: '2.2',
        description: `Cairn ${props.envName}: run the Cairn agent (backup, restore, verify, drill, install, archive) and report to Step Functions.`,
        parameters: AGENT_DOCUMENT_PARAMETERS,
        mainSteps: [
          {
            action: 'aws:downloadContent',
            name: 'DownloadAgent',
            precondition: { StringEquals: ['platformType', 'Linux'] },
            inputs: {
              sourceType: 'S3',
              sourceInfo: JSON.stringify({
                path: `https://s3.${stack.region}.${stack.urlSuffix}/${asset.s3BucketName}/${asset.s3ObjectKey}`,
              }),
              destinationPath: AGENT_DOWNLOAD_DIR,
            },
          },
          {
            action: 'aws:runShellScript',
            name: 'RunAgent',
            precondition: { StringEquals: ['platformType', 'Linux'] },
            inputs: {
              timeoutSeconds: '172800',
              runCommand: [...prelude, ...agentDocumentScript().split('\n')],
            },
          },
        ],
      },
    });
  }
}
