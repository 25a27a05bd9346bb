import * as ssm from 'aws-cdk-lib/aws-ssm';
import { Construct } from 'constructs';
import { planParameterName, type Plan } from '../../agent/core/plan.ts';

export interface PlanParametersProps {
  envName: string;
  plans: readonly Plan[];
}

/**
 * One String parameter per plan at /cairn/<env>/plans/<planId>, holding the
 * validated plan JSON that functions and the agent read. Secrets are never in
 * it: the plan names their SecureString parameters, and readers fetch those.
 */
export class PlanParameters extends Construct {
  readonly parameters: ReadonlyMap<string, ssm.StringParameter>;

  constructor(scope: Construct, id: string, props: PlanParametersProps) {
    super(scope, id);
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
