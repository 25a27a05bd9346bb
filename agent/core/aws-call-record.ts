/**
 * A TEST HOOK on the real AWS SDK clients: every client Cairn creates (agent/storage/s3.ts,
 * agent/keys/kms.ts, agent/orchestration/*, functions/runtime.ts) gets `recordAwsCalls`, a
 * middleware that reports each command it sends to the process's AWS call sink, when one is
 * installed. Nothing in Cairn installs one: the end-to-end tests do (test/e2e/sdk-calls*.ts), in
 * their own process for the in-process functions and through a `node --import` preload for the
 * agent's process, and then check every call against the inventory (aws-calls.ts). Without a
 * sink the middleware only looks up an absent global and passes the command on.
 *
 * What is recorded is an allow-list of request fields that name a resource or carry a condition:
 * service and command, bucket, key, list prefix, conditional headers (If-None-Match, If-Match),
 * KMS key id and encryption context, the parameter name and whether it is decrypted. Never a body,
 * a plaintext or ciphertext, a parameter value, a task token or a task's output: a recording can
 * be read by anyone without learning a secret. Pure and SDK-free (core): the client is typed by
 * the one method used, and the sink is a function a test puts on globalThis (a bundled agent and
 * a preload hold different copies of this module; the global is what they share).
 */

/** One SDK command as sent (before retries: one record per `send`). */
export interface AwsCallRecord {
  /** The SDK client's service: S3, KMS, SSM, SFN, … (the client name without "Client"). */
  service: string;
  /** The command without "Command": PutObject, Decrypt, GetParameter, SendTaskSuccess. */
  command: string;
  bucket?: string;
  key?: string;
  /** ListObjectsV2's Prefix. */
  prefix?: string;
  /** S3 conditional headers: the request asks for create-if-absent or compare-and-swap. */
  ifNoneMatch?: string;
  ifMatch?: string;
  /** A versioned request (DeleteObject with VersionId): only whether, never which. */
  versioned?: boolean;
  /** KMS KeyId (an ARN, id or alias: not secret). */
  keyId?: string;
  /** KMS encryption context (repository and plan ids: CloudTrail shows it in the clear). */
  encryptionContext?: Record<string, string>;
  /** SSM parameter name. */
  parameter?: string;
  withDecryption?: boolean;
}

/** What a test installs: called once per command with the record (the test adds who made it). */
export type AwsCallSink = (record: AwsCallRecord) => void;

const SINK = Symbol.for('cairn.test.aws-call-sink');

type Global = typeof globalThis & { [SINK]?: AwsCallSink };

/** Installs (or with undefined removes) the process's sink. Tests only. */
export function setAwsCallSink(sink: AwsCallSink | undefined): void {
  (globalThis as Global)[SINK] = sink;
}

function sink(): AwsCallSink | undefined {
  return (globalThis as Global)[SINK];
}

const text = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** The record of a command's input: only the fields listed in AwsCallRecord, whatever else the input holds. */
export function awsCallRecord(clientName: string, commandName: string, input: unknown): AwsCallRecord {
  const i = (typeof input === 'object' && input !== null ? input : {}) as Record<string, unknown>;
  const record: AwsCallRecord = { service: clientName.replace(/Client$/, ''), command: commandName.replace(/Command$/, '') };
  const fields: Array<[keyof AwsCallRecord, string | undefined]> = [
    ['bucket', text(i.Bucket)],
    ['key', text(i.Key)],
    ['prefix', text(i.Prefix)],
    ['ifNoneMatch', text(i.IfNoneMatch)],
    ['ifMatch', text(i.IfMatch)],
    ['keyId', text(i.KeyId)],
    ['parameter', text(i.Name)],
  ];
  for (const [field, value] of fields) if (value !== undefined) (record as unknown as Record<string, unknown>)[field] = value;
  if (i.VersionId !== undefined) record.versioned = true;
  if (typeof i.WithDecryption === 'boolean') record.withDecryption = i.WithDecryption;
  const context = i.EncryptionContext;
  if (typeof context === 'object' && context !== null) {
    record.encryptionContext = Object.fromEntries(
      Object.entries(context as Record<string, unknown>).flatMap(([k, v]) => (typeof v === 'string' ? [[k, v]] : [])),
    );
  }
  return record;
}

type Handler = (args: { input: unknown }) => Promise<unknown>;
type Middleware = (next: Handler, context: { clientName?: string; commandName?: string }) => Handler;
/** An SDK v3 client, by the one method used (its overloads take middleware typed by the client's own input types). */
interface Recordable {
  middlewareStack: { add(middleware: never, options: { step: 'initialize'; name: string; override: boolean }): void };
}

/**
 * Adds the recording middleware to an SDK v3 client (at the initialize step: once per `send`,
 * retries not repeated, a refused call recorded all the same). Returns the client.
 */
export function recordAwsCalls<C extends Recordable>(client: C): C {
  const middleware: Middleware = (next, context) => (args) => {
    const report = sink();
    if (report !== undefined) report(awsCallRecord(context.clientName ?? 'Unknown', context.commandName ?? 'Unknown', args.input));
    return next(args);
  };
  client.middlewareStack.add(middleware as never, { step: 'initialize', name: 'cairnRecordAwsCalls', override: true });
  return client;
}
