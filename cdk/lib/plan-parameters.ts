import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import { Construct } from 'constructs';
import { planParameterName, type Plan } from '../../agent/core/plan.ts';

export interface PlanParametersProps {
  envName: string;
  plans: readonly Plan[];
}

export function parameterKeyAliasName(envName: string): string {
  return `alias/cairn-${envName}-parameters`;
}

/**
 * One String parameter per plan at /cairn/<env>/plans/<planId>, holding the
 * validated plan JSON that functions and the agent read. Secrets are never in
 * it: the plan names their SecureString parameters, and readers fetch those.
 *
 * The SecureStrings are created by the operator with Cairn's parameter key
 * (docs/cdk.md): AmazonSSMManagedInstanceCore lets every host call
 * ssm:GetParameter on every parameter, so the per-plan boundary is this key:
 * a host may decrypt only the parameters its plan names (kms:EncryptionContext:PARAMETER_ARN,
 * in its host policy), and the key is usable only through SSM.
 */
export class PlanParameters extends Construct {
  readonly parameters: ReadonlyMap<string, ssm.StringParameter>;
  readonly key: kms.Key;

  constructor(scope: Construct, id: string, props: PlanParametersProps) {
    super(scope, id);
    const stack = Stack.of(this);
    this.key = new kms.Key(this, 'Key', {
      alias: parameterKeyAliasName(props.envName),
      description: `Cairn ${props.envName}: encrypts the secret parameters Cairn's plans name (passphrases, passwords)`,
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    // Whatever an IAM policy says (a broad kms:Decrypt on "*" included), the key decrypts and encrypts only
    // through Parameter Store: a ciphertext taken out of SSM does not decrypt with it directly.
    this.key.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'OnlyThroughParameterStore',
        effect: iam.Effect.DENY,
        principals: [new iam.AnyPrincipal()],
        actions: ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey*', 'kms:ReEncrypt*'],
        resources: ['*'],
        conditions: { StringNotEquals: { 'kms:ViaService': `ssm.${stack.region}.amazonaws.com` } },
      }),
    );
    const parameters = new Map<string, ssm.StringParameter>();
    for (const plan of props.plans) {
      const value = JSON.stringify(plan);
      parameters.set(
        plan.id,
        new ssm.StringParameter(this, `Plan-${plan.id}`, {
          parameterName: planParameterName(props.envName, plan.id),
          description: `Cairn ${props.envName}: plan ${plan.id} (${plan.engine})`,
          stringValue: value,
          // Standard parameters hold 4 KB; a larger plan needs the advanced tier.
          tier: Buffer.byteLength(value) > 4096 ? ssm.ParameterTier.ADVANCED : ssm.ParameterTier.STANDARD,
        }),
      );
    }
    this.parameters = parameters;
  }
}
