import { Stack, Validations, type CfnElement } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';

/**
 * cdk-nag 3.x acknowledges IAM4/IAM5 only by their exact `Rule[Finding]` id.
 * These helpers write those ids from the resources they name, so an
 * acknowledgement sits beside the grant it excuses, with its reason.
 */
export function acknowledgeFindings(
  scope: IConstruct,
  rule: 'AwsSolutions-IAM4' | 'AwsSolutions-IAM5',
  findings: readonly string[],
  reason: string,
): void {
  for (const finding of findings) Validations.of(scope).acknowledge({ id: `${rule}[${finding}]`, reason });
}

export function acknowledge(scope: IConstruct, id: string, reason: string): void {
  Validations.of(scope).acknowledge({ id, reason });
}

/** How cdk-nag prints `Fn::GetAtt` of a resource in a finding: `<LogicalId.Attr>`. */
export function attrFinding(element: CfnElement, attribute = 'Arn'): string {
  return `<${Stack.of(element).getLogicalId(element)}.${attribute}>`;
}

/** How cdk-nag prints a literal ARN built from the stack's partition. */
export function arnFinding(stack: Stack, rest: string): string {
  return `arn:<AWS::Partition>:${rest}`;
}
