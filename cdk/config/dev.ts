import type { EnvironmentConfigInput } from '../../agent/core/plan.ts';

/** dev: one account, no Object Lock, no replica, short noncurrent-version expiry. */
export const dev: EnvironmentConfigInput = {
  account: '111111111111',
  region: 'eu-central-1',
  repository: { noncurrentVersionDays: 7, abortIncompleteMultipartDays: 2 },
  alerts: { emails: [] },
  plans: [
    {
      id: 'app-db',
      description: 'the dev PostgreSQL, logical dump',
      targets: { tag: { key: 'cairn:plan', value: 'app-db' } },
      engine: 'pgdump',
      engineOptions: {
        connection: { host: '127.0.0.1', port: 5432, user: 'cairn_backup' },
        databases: ['app'],
        passwordParameter: '/cairn/dev/app-db/db-password',
      },
      schedule: { expression: 'cron(30 1 * * ? *)', timeZone: 'UTC' },
      retention: { keepDaily: 7 },
      keySource: { passphraseParameter: '/cairn/dev/app-db/passphrase' },
      rpo: '26h',
    },
  ],
};
