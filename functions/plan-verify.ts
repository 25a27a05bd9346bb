import { CairnError } from '../agent/core/errors.ts';
import { encodeRequest } from '../agent/core/orchestration.ts';
import { handlerOf, loadPlan, onlineInstances } from './runtime.ts';

export interface PlannedVerify {
  planId: string;
  operation: 'verify' | 'drill';
  instanceIds: string[];
  request: string;
  heartbeatSeconds: number;
  timeoutSeconds: number;
}

/** First state of the Verify machine: what the plan asks for (a read-back of a data subset, or a restore drill) and where. */
export async function planVerify(event: { planId?: unknown }): Promise<PlannedVerify> {
  const plan = await loadPlan(event.planId);
  const instances = await onlineInstances(plan);
  if (instances.length === 0)
    throw new CairnError('Cairn.InvalidInput', `no host of plan ${plan.id} is online in Systems Manager`, {
      hint: 'check the instances and their SSM agent',
    });
  const { heartbeatSeconds, timeoutSeconds } = plan.timeouts;
  const drill = plan.verification?.drill ?? false;
  const request = drill
    ? encodeRequest({ operation: 'drill', planId: plan.id, heartbeatSeconds })
    : encodeRequest({
        operation: 'verify',
        planId: plan.id,
        readDataSubset: (plan.verification?.readDataSubset ?? 0) / 100,
        heartbeatSeconds,
      });
  return {
    planId: plan.id,
    operation: drill ? 'drill' : 'verify',
    instanceIds: [instances[0] as string],
    request,
    heartbeatSeconds,
    timeoutSeconds,
  };
}

export const handler = handlerOf('plan-verify', planVerify);
