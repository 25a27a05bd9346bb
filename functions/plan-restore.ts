/** Placeholder until the orchestration handlers land: the CDK app bundles this entry. */
export const handler = (): Promise<never> => Promise.reject(new Error('functions/plan-restore.ts is not implemented yet'));
