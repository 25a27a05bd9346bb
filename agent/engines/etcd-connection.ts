import { CairnError } from '../core/errors.ts';
import { withoutCredentials } from '../core/url-credentials.ts';
import { databasePassword } from '../process/db-password.ts';

/**
 * How both etcd engines reach a member, resolved once from their options with
 * etcdctl's own variables as the fallback (ETCDCTL_ENDPOINTS, ETCDCTL_CACERT,
 * ETCDCTL_CERT, ETCDCTL_KEY, ETCDCTL_USER): the endpoint URLs in the order
 * they are tried, the TLS files and the login. An endpoint without a scheme
 * gets https when TLS files are given, http otherwise.
 */
export interface EtcdConnectionOptions {
  host: string;
  port: number;
  endpoints?: string | string[] | undefined;
  cacert?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
  user?: string | undefined;
  passwordFile?: string | undefined;
}

export interface EtcdConnection {
  endpoints: URL[];
  cacert: string | undefined;
  cert: string | undefined;
  key: string | undefined;
  user: string | undefined;
  password: string | undefined;
}

export async function resolveEtcdConnection(options: EtcdConnectionOptions, env: NodeJS.ProcessEnv): Promise<EtcdConnection> {
  const cacert = options.cacert ?? env.ETCDCTL_CACERT;
  const cert = options.cert ?? env.ETCDCTL_CERT;
  const key = options.key ?? env.ETCDCTL_KEY;
  const scheme = cacert || cert ? 'https' : 'http';
  const list = options.endpoints ?? env.ETCDCTL_ENDPOINTS ?? `${scheme}://${options.host}:${options.port}`;
  const endpoints = (Array.isArray(list) ? list : list.split(','))
    .map((e) => e.trim())
    .filter(Boolean)
    .map((e) => {
      // Never repeated whole: what sits before an '@' may be a password.
      const shown = JSON.stringify(withoutCredentials(e));
      let url: URL;
      try {
        url = new URL(e.includes('://') ? e : `${scheme}://${e}`);
      } catch {
        throw new CairnError('Cairn.Usage', `etcd endpoint ${shown} is not a URL`, {
          hint: 'give --etcd-endpoints https://host:2379,...',
        });
      }
      if (url.username || url.password)
        throw new CairnError('Cairn.Usage', `etcd endpoint ${shown} carries credentials, which do not belong in a URL`, {
          hint: 'give the user with --db-user (or ETCDCTL_USER) and the password with --db-password-file (or CAIRN_DB_PASSWORD)',
        });
      return url;
    });
  if (endpoints.length === 0)
    throw new CairnError('Cairn.Usage', 'no etcd endpoint given', { hint: 'give --etcd-endpoints URL,... or --db-host/--db-port' });
  let user = options.user ?? env.ETCDCTL_USER;
  let password = await databasePassword(options.passwordFile, env, 'ETCDCTL_PASSWORD');
  // etcdctl's own form: ETCDCTL_USER=name:password.
  if (user?.includes(':') && password === undefined)
    [user, password] = [user.slice(0, user.indexOf(':')), user.slice(user.indexOf(':') + 1)];
  return { endpoints, cacert, cert, key, user, password };
}

/**
 * The environment etcdctl runs with: the connection as its ETCDCTL_*
 * variables, never as flags (the password stays out of argv, and a variable
 * inherited from the caller cannot conflict with a flag).
 */
export function etcdctlEnvironment(connection: EtcdConnection, base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const inherited = new Set(['ETCDCTL_ENDPOINTS', 'ETCDCTL_CACERT', 'ETCDCTL_CERT', 'ETCDCTL_KEY', 'ETCDCTL_USER', 'ETCDCTL_PASSWORD']);
  const env: NodeJS.ProcessEnv = { ...Object.fromEntries(Object.entries(base).filter(([name]) => !inherited.has(name))), ETCDCTL_API: '3' };
  env.ETCDCTL_ENDPOINTS = connection.endpoints.map((u) => u.origin).join(',');
  if (connection.cacert) env.ETCDCTL_CACERT = connection.cacert;
  if (connection.cert) env.ETCDCTL_CERT = connection.cert;
  if (connection.key) env.ETCDCTL_KEY = connection.key;
  if (connection.user !== undefined) env.ETCDCTL_USER = `${connection.user}:${connection.password ?? ''}`;
  return env;
}
