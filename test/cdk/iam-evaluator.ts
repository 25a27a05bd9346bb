import { runSimulation, runUnsafeSimulation, type Simulation } from '@cloud-copilot/iam-simulate';
import type { AwsCall } from '../../agent/core/aws-calls.ts';

/**
 * Evaluates AWS calls against a synthesized CloudFormation template offline, with
 * @cloud-copilot/iam-simulate (AGPL, a devDependency used only here): the caller's identity
 * policies, the bucket policy of the bucket an S3 call names, the key policy of the key a KMS
 * call names. CloudFormation intrinsics are resolved to concrete ARNs for one account and region.
 *
 * What iam-simulate cannot evaluate, and what stands in for it:
 * - kms:EncryptionContext:<key> (aws:s3:arn, PARAMETER_ARN, cairn:repository) is dropped by its
 *   validated entry point, which matches a condition key's variable part only after a slash
 *   (aws:PrincipalTag/<key>), not after a colon. Every call is first run through runSimulation, which
 *   validates the action, the resource type and every other context key; the decision then comes
 *   from runUnsafeSimulation, the same engine with the raw context. When nothing was dropped,
 *   both decisions must agree.
 * - kms:ViaService and the encryption contexts S3 and SSM send are the inventory's claim
 *   (agent/core/aws-calls.ts), from the AWS documentation: iam-simulate only matches the values.
 * - S3's own rules are not modelled: object ownership and ACLs, Object Lock, versions and delete
 *   markers, and the 403-instead-of-404 that HeadObject/GetObject of a missing key answers when
 *   the caller may not list the bucket without a prefix.
 * - Keys outside the template (a plan's keySource.kmsKeyArn) get a stand-in key policy: the
 *   default one, which delegates to the account's IAM policies.
 * - No SCPs, RCPs, permission boundaries or session policies; functions' AWSLambdaBasicExecutionRole
 *   (logs only) is left out.
 */
export type Decision = 'Allowed' | 'ImplicitlyDenied' | 'ExplicitlyDenied';

type Json = Record<string, unknown>;
interface Resource {
  Type: string;
  Properties: Json;
}
export interface PolicyDocument {
  Version: string;
  Statement: Json[];
}

/** The default key policy (root delegates to IAM): the stand-in for keys the template does not hold. */
export function defaultKeyPolicy(account: string): PolicyDocument {
  return {
    Version: '2012-10-17',
    Statement: [{ Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${account}:root` }, Action: 'kms:*', Resource: '*' }],
  };
}

export class TemplateModel {
  readonly account: string;
  readonly region: string;
  private readonly resources: Record<string, Resource>;

  constructor(json: Json, account: string, region: string) {
    this.account = account;
    this.region = region;
    this.resources = json.Resources as Record<string, Resource>;
  }

  resource(logicalId: string): Resource {
    const r = this.resources[logicalId];
    if (r === undefined) throw new Error(`no resource ${logicalId} in the template`);
    return r;
  }

  /** Fn::GetAtt of a resource's Arn (and a few other attributes) for the test account and region. */
  private attribute(logicalId: string, attribute: string): string {
    const r = this.resource(logicalId);
    const p = r.Properties;
    if (attribute !== 'Arn') return `${logicalId}.${attribute}`;
    const at = (service: string, rest: string): string => `arn:aws:${service}:${this.region}:${this.account}:${rest}`;
    switch (r.Type) {
      case 'AWS::S3::Bucket':
        return `arn:aws:s3:::${this.text(p.BucketName ?? logicalId.toLowerCase())}`;
      case 'AWS::KMS::Key':
        return at('kms', `key/${logicalId}`);
      case 'AWS::IAM::Role':
        return `arn:aws:iam::${this.account}:role/${logicalId}`;
      case 'AWS::Logs::LogGroup':
        return at('logs', `log-group:${this.text(p.LogGroupName ?? logicalId)}:*`);
      case 'AWS::Lambda::Function':
        return at('lambda', `function:${logicalId}`);
      case 'AWS::StepFunctions::StateMachine':
        return at('states', `stateMachine:${this.text(p.StateMachineName ?? logicalId)}`);
      default:
        return at(r.Type.split('::')[1]!.toLowerCase(), logicalId);
    }
  }

  private ref(name: string): string {
    const pseudo: Record<string, string> = {
      'AWS::Partition': 'aws',
      'AWS::Region': this.region,
      'AWS::AccountId': this.account,
      'AWS::URLSuffix': 'amazonaws.com',
      'AWS::StackName': 'CairnTest',
    };
    if (pseudo[name] !== undefined) return pseudo[name];
    const r = this.resource(name);
    switch (r.Type) {
      case 'AWS::S3::Bucket':
        return this.text(r.Properties.BucketName ?? name.toLowerCase());
      case 'AWS::KMS::Key':
        return name;
      case 'AWS::IAM::ManagedPolicy':
        return `arn:aws:iam::${this.account}:policy/${this.text(r.Properties.ManagedPolicyName ?? name)}`;
      case 'AWS::StepFunctions::StateMachine':
        return this.attribute(name, 'Arn');
      case 'AWS::SSM::Parameter':
        return this.text(r.Properties.Name ?? name);
      case 'AWS::SecretsManager::Secret':
        // A secret's Ref is its ARN, which ends in the name and six random characters.
        return `arn:aws:secretsmanager:${this.region}:${this.account}:secret:${this.text(r.Properties.Name ?? name)}-AbC123`;
      default:
        return name;
    }
  }

  /** Resolves Ref, Fn::GetAtt, Fn::Join, Fn::Sub, Fn::Select and Fn::Split to a string. */
  text(value: unknown): string {
    if (typeof value === 'string') return value;
    if (typeof value === 'number' || typeof value === 'boolean') return String(value);
    const o = value as Json;
    if ('Ref' in o) return this.ref(o.Ref as string);
    if ('Fn::GetAtt' in o) {
      const [id, attr] = o['Fn::GetAtt'] as [string, string];
      return this.attribute(id, attr);
    }
    if ('Fn::Join' in o) {
      const [sep, parts] = o['Fn::Join'] as [string, unknown[]];
      return parts.map((p) => this.text(p)).join(sep);
    }
    if ('Fn::Sub' in o) {
      const arg = o['Fn::Sub'];
      const [template, vars] = typeof arg === 'string' ? [arg, {}] : (arg as [string, Json]);
      return template.replace(/\$\{([^}]+)\}/g, (_, name: string) => {
        if (name in vars) return this.text(vars[name]);
        const [id, attr] = name.split('.');
        return attr === undefined ? this.ref(id!) : this.attribute(id!, attr);
      });
    }
    if ('Fn::Select' in o) {
      const [index, list] = o['Fn::Select'] as [number, unknown];
      return this.list(list)[index]!;
    }
    throw new Error(`cannot resolve ${JSON.stringify(value)}`);
  }

  private list(value: unknown): string[] {
    if (Array.isArray(value)) return value.map((v) => this.text(v));
    const o = value as Json;
    if ('Fn::Split' in o) {
      const [sep, source] = o['Fn::Split'] as [string, unknown];
      return this.text(source).split(sep);
    }
    throw new Error(`cannot resolve a list from ${JSON.stringify(value)}`);
  }

  /** A policy document with every intrinsic resolved (strings stay strings, arrays stay arrays). */
  resolve(value: unknown): unknown {
    if (Array.isArray(value)) return value.map((v) => this.resolve(v));
    if (value === null || typeof value !== 'object') return value;
    const o = value as Json;
    const keys = Object.keys(o);
    if (keys.length === 1 && (keys[0] === 'Ref' || keys[0]!.startsWith('Fn::'))) return this.text(o);
    return Object.fromEntries(keys.map((k) => [k, this.resolve(o[k])]));
  }

  /** The inline policies (AWS::IAM::Policy) attached to a role, resolved. */
  rolePolicies(roleLogicalId: string): PolicyDocument[] {
    return Object.values(this.resources)
      .filter((r) => r.Type === 'AWS::IAM::Policy')
      .filter((r) => (r.Properties.Roles as unknown[]).some((role) => JSON.stringify(role) === JSON.stringify({ Ref: roleLogicalId })))
      .map((r) => this.resolve(r.Properties.PolicyDocument) as PolicyDocument);
  }

  managedPolicy(logicalId: string): PolicyDocument {
    return this.resolve(this.resource(logicalId).Properties.PolicyDocument) as PolicyDocument;
  }

  /** The resource policy that governs a call's resource: a bucket policy or a key policy. */
  resourcePolicyFor(call: AwsCall): PolicyDocument | undefined {
    if (call.action.startsWith('s3:')) {
      const bucket = /^arn:aws:s3:::([^/]+)/.exec(call.resource)?.[1];
      for (const r of Object.values(this.resources)) {
        if (r.Type === 'AWS::S3::BucketPolicy' && this.text(r.Properties.Bucket) === bucket)
          return this.resolve(r.Properties.PolicyDocument) as PolicyDocument;
      }
      return undefined;
    }
    if (call.action.startsWith('kms:')) {
      for (const [id, r] of Object.entries(this.resources)) {
        if (r.Type === 'AWS::KMS::Key' && this.attribute(id, 'Arn') === call.resource)
          return this.resolve(r.Properties.KeyPolicy) as PolicyDocument;
      }
      return defaultKeyPolicy(this.account);
    }
    return undefined;
  }
}

export interface Caller {
  principal: string;
  policies: Array<{ name: string; policy: PolicyDocument }>;
}

/** Requests go over TLS 1.3 from the caller's account: the bucket policy's TLS denials must not fire. */
const TRANSPORT = { 'aws:SecureTransport': 'true', 's3:TlsVersion': '1.3' };

export async function evaluate(model: TemplateModel, caller: Caller, call: AwsCall): Promise<Decision> {
  const resourcePolicy = model.resourcePolicyFor(call);
  const context = { ...(call.action.startsWith('s3:') ? TRANSPORT : { 'aws:SecureTransport': 'true' }), ...call.context };
  const simulation: Simulation = {
    request: {
      principal: caller.principal,
      action: call.action,
      resource: { resource: call.resource, accountId: model.account },
      contextVariables: context,
    },
    identityPolicies: caller.policies,
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    ...(resourcePolicy === undefined ? {} : { resourcePolicy }),
  };
  const checked = await runSimulation(simulation, {});
  if (checked.resultType === 'error')
    throw new Error(`iam-simulate refused ${call.api} ${call.action} ${call.resource}: ${JSON.stringify(checked.errors)}`);
  if (checked.resultType !== 'single') throw new Error(`${call.action} on ${call.resource}: expected one resource, got a wildcard result`);
  const dropped = checked.result.ignoredContextKeys ?? [];
  const unexpected = dropped.filter((k) => !/^kms:EncryptionContext:./i.test(k));
  if (unexpected.length > 0)
    throw new Error(`${call.api} ${call.action}: context keys the action does not carry: ${unexpected.join(', ')}`);
  // The validated entry point dropped nothing: its decision is the decision.
  if (dropped.length === 0) return checked.overallResult;
  return runUnsafeSimulation(
    {
      ...simulation,
      // runUnsafeSimulation reads a resource policy's name from a validated policy's metadata.
      ...(resourcePolicy === undefined
        ? {}
        : { resourcePolicy: { __validated: true, policyDocument: resourcePolicy, metadata: { name: 'resource-policy' } } }),
    },
    {},
  );
}
