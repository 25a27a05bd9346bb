import type { EnvironmentConfigInput } from '../../agent/core/plan.ts';

/** prod: Object Lock in COMPLIANCE mode, replicated to a second region, three plans (the MariaDB one with point-in-time recovery). */
export const prod: EnvironmentConfigInput = {
  account: '222222222222',
  region: 'eu-central-1',
  repository: {
    objectLock: { mode: 'COMPLIANCE', days: 35 },
    noncurrentVersionDays: 90,
    abortIncompleteMultipartDays: 7,
    replica: { region: 'eu-west-1' },
  },
  alerts: { emails: ['oncall-backups@example.com'] },
  plans: [
    {
      id: 'orders-db',
      description: 'MariaDB primary, physical (mariabackup)',
      targets: { instanceIds: ['i-0a1b2c3d4e5f60718'] },
      engine: 'mariadb',
      engineOptions: {
        connection: { socket: '/run/mysqld/mysqld.sock', user: 'cairn_backup' },
        passwordParameter: '/cairn/prod/orders-db/db-password',
        owner: 'mysql',
      },
      schedule: { expression: 'cron(0 */6 * * ? *)', timeZone: 'Europe/Berlin' },
      retention: { keepLast: 4, keepDaily: 14, keepWeekly: 8, keepMonthly: 12 },
      keySource: { passphraseParameter: '/cairn/prod/orders-db/passphrase' },
      rpo: '7h',
      verification: { schedule: { expression: 'cron(0 4 ? * SUN *)', timeZone: 'Europe/Berlin' }, readDataSubset: 10, drill: true },
      timeouts: { heartbeatSeconds: 300, timeoutSeconds: 4 * 3600 },
      // Binlogs pushed every 5 minutes (the default schedule); the archive-lag alarm fires past 15.
      pitr: { enabled: true, maxArchiveLagMinutes: 15 },
    },
    {
      id: 'billing-pg',
      description: 'PostgreSQL billing database, logical (pg_dump)',
      targets: { tag: { key: 'cairn:plan', value: 'billing-pg' } },
      engine: 'pgdump',
      engineOptions: {
        connection: { host: '127.0.0.1', port: 5432, user: 'cairn_backup' },
        databases: ['billing'],
        passwordParameter: '/cairn/prod/billing-pg/db-password',
      },
      schedule: { expression: 'cron(15 2 * * ? *)', timeZone: 'Europe/Berlin' },
      retention: { keepDaily: 30, keepMonthly: 12, keepYearly: 3 },
      keySource: { passphraseParameter: '/cairn/prod/billing-pg/passphrase' },
      rpo: '26h',
      verification: { schedule: { expression: 'cron(0 5 ? * SAT *)', timeZone: 'Europe/Berlin' }, readDataSubset: 5, drill: false },
    },
    {
      id: 'k8s-etcd',
      description: 'etcd of the on-prem Kubernetes control plane',
      targets: { instanceIds: ['mi-0123456789abcdef0', 'mi-0fedcba9876543210'] },
      engine: 'etcd',
      engineOptions: { connection: { host: '127.0.0.1', port: 2379 } },
      schedule: { expression: 'rate(1 hour)' },
      retention: { keepHourly: 48, keepDaily: 14 },
      keySource: { passphraseParameter: '/cairn/prod/k8s-etcd/passphrase' },
      rpo: '3h',
      timeouts: { heartbeatSeconds: 120, timeoutSeconds: 3600 },
    },
  ],
};
