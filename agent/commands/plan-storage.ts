import type { Plan } from '../core/plan.ts';
import type { DeletableStorage } from '../core/storage.ts';
import type { PlanSource } from '../orchestration/plan-source.ts';
import { openEndpointStorage } from '../storage/s3-endpoint.ts';

/**
 * The storage of a plan's repository on its host: an AWS S3 prefix as the URL names it (the
 * instance role signs), or a bucket at an S3-compatible endpoint signed with the access key of
 * the plan's SecureString parameter (docs/cdk.md, "S3-compatible endpoints"). `openStorage` gets
 * the ready endpoint storage as `base`, to put the CLI's limits, cancellation and storage hook
 * around it as around any other.
 */
export async function openPlanStorage(
  plan: Plan,
  source: PlanSource,
  options: { env: NodeJS.ProcessEnv; openStorage: (url: string, base?: DeletableStorage) => Promise<DeletableStorage> },
): Promise<DeletableStorage> {
  // The hosts' key: the endpoint lets it read, list and create, never delete (the control plane's key deletes).
  const credentials = await source.endpointCredentials(plan, 'host');
  if (credentials === undefined) return options.openStorage(plan.repository.url);
  return options.openStorage(plan.repository.url, openEndpointStorage(plan.repository.url, credentials, options.env));
}
