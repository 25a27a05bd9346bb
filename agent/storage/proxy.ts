import { Agent as HttpAgent, type AgentOptions as HttpAgentOptions } from 'node:http';
import { Agent as HttpsAgent, type AgentOptions as HttpsAgentOptions } from 'node:https';
import type { NodeHttpHandlerOptions } from '@smithy/node-http-handler';

/**
 * HTTP(S) agents for the cloud clients that honour HTTP_PROXY, HTTPS_PROXY and
 * NO_PROXY (and their lowercase forms) the way curl does: HTTP_PROXY for http://
 * targets, HTTPS_PROXY for https:// targets (through CONNECT), NO_PROXY a comma
 * list of hosts, `.domain` suffixes, `host:port` or `*`. The AWS SDK v3 ignores
 * these variables by itself; Node (22.21+) implements them in its agents when
 * given `proxyEnv`, so every AWS client built with `httpHandlerOptions()` honours
 * them. With none of the variables set, the agents connect directly.
 *
 * The Google Cloud Storage client reads the same variables itself (see gcs.ts).
 */

/** Keep-alive sockets, never queued behind a small pool (a queued request times out as a connection failure). */
const DEFAULT_AGENT_OPTIONS = { keepAlive: true, maxSockets: 64 };

type ProxyEnvOptions = { proxyEnv?: NodeJS.ProcessEnv };

/** The proxy variables of env, or undefined when none is set (the agents then skip the proxy logic entirely). */
export function proxyEnvironment(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv | undefined {
  const names = ['HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy'];
  const picked: NodeJS.ProcessEnv = {};
  for (const name of names) if (env[name] !== undefined && env[name] !== '') picked[name] = env[name];
  if (
    picked.HTTP_PROXY === undefined &&
    picked.http_proxy === undefined &&
    picked.HTTPS_PROXY === undefined &&
    picked.https_proxy === undefined
  )
    return undefined;
  return picked;
}

export function proxyAgents(
  env: NodeJS.ProcessEnv = process.env,
  options: HttpAgentOptions & HttpsAgentOptions = {},
): { httpAgent: HttpAgent; httpsAgent: HttpsAgent } {
  const proxyEnv = proxyEnvironment(env);
  const agentOptions: HttpAgentOptions & ProxyEnvOptions = { ...DEFAULT_AGENT_OPTIONS, ...options, ...(proxyEnv ? { proxyEnv } : {}) };
  return { httpAgent: new HttpAgent(agentOptions), httpsAgent: new HttpsAgent(agentOptions) };
}

/**
 * The `requestHandler` options for any AWS SDK v3 client (S3, SSM, KMS, SFN):
 * `new SSMClient({ requestHandler: new NodeHttpHandler(httpHandlerOptions()) })`,
 * or pass the object itself as `requestHandler`.
 */
export function httpHandlerOptions(
  env: NodeJS.ProcessEnv = process.env,
  agentOptions: HttpAgentOptions & HttpsAgentOptions = {},
): NodeHttpHandlerOptions {
  const { httpAgent, httpsAgent } = proxyAgents(env, agentOptions);
  return {
    httpAgent,
    httpsAgent,
    connectionTimeout: 10_000,
    // Inactivity, not duration: a stalled connection fails (and is retried); a slow upload does not.
    socketTimeout: 120_000,
  };
}
