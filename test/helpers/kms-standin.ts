import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A STAND-IN for AWS KMS, not KMS: a small HTTP server speaking the subset of
 * the KMS JSON 1.1 protocol that the real @aws-sdk/client-kms sends
 * (POST /, `X-Amz-Target: TrentService.Encrypt | Decrypt | GenerateDataKey`,
 * JSON bodies with base64 blobs; errors as `{ "__type": "...Exception" }`).
 * Tests point the real KMSClient (in the real CLI subprocess) at it with
 * AWS_ENDPOINT_URL_KMS and dummy credentials.
 *
 * What it enforces, as KMS does:
 * - Decrypt needs the exact encryption context of Encrypt (it is the AES-GCM
 *   AAD here), else InvalidCiphertextException;
 * - a KeyId given at Decrypt must be the key of the ciphertext, else IncorrectKeyException;
 * - a disabled key answers DisabledException, a key whose grant was revoked
 *   (`deny`) answers AccessDeniedException, an unknown key NotFoundException;
 * - every request must carry a SigV4 Authorization header for the test's access key.
 * It counts calls per operation and per key. It does not check signatures
 * cryptographically, key policies, grants or quotas.
 */
export interface KmsStandIn {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  readonly region: string;
  /** Calls per `Operation` (e.g. "Decrypt") and per `Operation key-arn`, including refused ones. */
  readonly calls: Map<string, number>;
  createKey(): string;
  disable(arn: string): void;
  enable(arn: string): void;
  /** Revokes this caller's permissions on the key: AccessDeniedException from now on. */
  deny(arn: string): void;
  /** Env for a client or CLI subprocess: endpoint, dummy credentials. */
  env(): Record<string, string>;
  count(operation: string, arn?: string): number;
  close(): Promise<void>;
}

export const STANDIN_ACCESS_KEY = 'AKIDSTANDIN000000000';

interface StandInKey {
  arn: string;
  secret: Buffer;
  state: 'Enabled' | 'Disabled';
  denied: boolean;
}

class KmsFault extends Error {
  readonly type: string;
  constructor(type: string, message: string) {
    super(message);
    this.type = type;
  }
}

const MAGIC = Buffer.from('SKMS');

const str = (value: unknown): string => (typeof value === 'string' ? value : '');

function contextAad(context: unknown): Buffer {
  const entries = context && typeof context === 'object' ? Object.entries(context as Record<string, string>) : [];
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return Buffer.from(JSON.stringify(entries), 'utf8');
}

export async function startKmsStandIn(options: { region?: string; account?: string } = {}): Promise<KmsStandIn> {
  const region = options.region ?? 'eu-west-1';
  const account = options.account ?? '111122223333';
  const keys = new Map<string, StandInKey>(); // by key id (uuid)
  const calls = new Map<string, number>();
  const bump = (name: string): void => {
    calls.set(name, (calls.get(name) ?? 0) + 1);
  };

  const find = (keyId: unknown): StandInKey => {
    const text = str(keyId);
    const id = text.includes(':key/') ? text.slice(text.indexOf(':key/') + 5) : text;
    const key = keys.get(id);
    if (!key || (text.startsWith('arn:') && text !== key.arn)) throw new KmsFault('NotFoundException', `Key '${text}' does not exist`);
    return key;
  };
  const usable = (key: StandInKey, action: string): void => {
    if (key.denied)
      throw new KmsFault(
        'AccessDeniedException',
        `User: arn:aws:iam::${account}:user/standin is not authorized to perform: ${action} on resource: ${key.arn} because no identity-based policy allows the ${action} action`,
      );
    if (key.state === 'Disabled') throw new KmsFault('DisabledException', `${key.arn} is disabled.`);
  };
  const encrypt = (key: StandInKey, plaintext: Buffer, context: unknown): Buffer => {
    const nonce = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key.secret, nonce);
    cipher.setAAD(contextAad(context));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const id = Buffer.from(key.arn.slice(key.arn.indexOf(':key/') + 5), 'utf8');
    return Buffer.concat([MAGIC, Buffer.from([id.length]), id, nonce, cipher.getAuthTag(), body]);
  };

  const handlers: Record<string, (body: Record<string, unknown>) => Record<string, unknown>> = {
    Encrypt(body) {
      const key = find(body.KeyId);
      bump(`Encrypt ${key.arn}`);
      usable(key, 'kms:Encrypt');
      const plaintext = Buffer.from(str(body.Plaintext), 'base64');
      if (plaintext.length === 0 || plaintext.length > 4096) throw new KmsFault('ValidationException', 'Plaintext must be 1 to 4096 bytes');
      return {
        CiphertextBlob: encrypt(key, plaintext, body.EncryptionContext).toString('base64'),
        KeyId: key.arn,
        EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
      };
    },
    GenerateDataKey(body) {
      const key = find(body.KeyId);
      bump(`GenerateDataKey ${key.arn}`);
      usable(key, 'kms:GenerateDataKey');
      const bytes = typeof body.NumberOfBytes === 'number' ? body.NumberOfBytes : body.KeySpec === 'AES_128' ? 16 : 32;
      const plaintext = randomBytes(bytes);
      return {
        CiphertextBlob: encrypt(key, plaintext, body.EncryptionContext).toString('base64'),
        Plaintext: plaintext.toString('base64'),
        KeyId: key.arn,
      };
    },
    Decrypt(body) {
      const blob = Buffer.from(str(body.CiphertextBlob), 'base64');
      if (blob.length < MAGIC.length + 1 + 12 + 16 || !blob.subarray(0, 4).equals(MAGIC))
        throw new KmsFault('InvalidCiphertextException', 'The ciphertext is invalid');
      const idLength = blob[4] as number;
      const id = blob.subarray(5, 5 + idLength).toString('utf8');
      const key = keys.get(id);
      if (!key) throw new KmsFault('InvalidCiphertextException', 'The ciphertext refers to a customer master key that does not exist');
      bump(`Decrypt ${key.arn}`);
      if (body.KeyId !== undefined && find(body.KeyId) !== key)
        throw new KmsFault('IncorrectKeyException', 'The key ID in the request does not identify the key that encrypted the ciphertext');
      usable(key, 'kms:Decrypt');
      let at = 5 + idLength;
      const nonce = blob.subarray(at, (at += 12));
      const tag = blob.subarray(at, (at += 16));
      const decipher = createDecipheriv('aes-256-gcm', key.secret, nonce);
      decipher.setAAD(contextAad(body.EncryptionContext));
      decipher.setAuthTag(tag);
      let plaintext: Buffer;
      try {
        plaintext = Buffer.concat([decipher.update(blob.subarray(at)), decipher.final()]);
      } catch {
        throw new KmsFault('InvalidCiphertextException', 'The ciphertext or its encryption context is invalid');
      }
      return { Plaintext: plaintext.toString('base64'), KeyId: key.arn, EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' };
    },
  };

  const reply = (res: ServerResponse, status: number, body: Record<string, unknown>, errorType?: string): void => {
    const data = Buffer.from(JSON.stringify(body));
    res.writeHead(status, {
      'content-type': 'application/x-amz-json-1.1',
      'content-length': data.length,
      'x-amzn-requestid': randomUUID(),
      ...(errorType ? { 'x-amzn-errortype': errorType } : {}),
    });
    res.end(data);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const target = str(req.headers['x-amz-target']);
    const operation = target.startsWith('TrentService.') ? target.slice('TrentService.'.length) : '';
    bump(operation || 'unknown');
    try {
      const auth = req.headers.authorization ?? '';
      if (!auth.startsWith(`AWS4-HMAC-SHA256 Credential=${STANDIN_ACCESS_KEY}/`) || !auth.includes(`/${region}/kms/aws4_request`)) {
        throw new KmsFault('UnrecognizedClientException', 'The security token included in the request is invalid.');
      }
      const handler = handlers[operation];
      if (req.method !== 'POST' || !handler)
        throw new KmsFault('UnknownOperationException', `operation ${target} is not supported by this stand-in`);
      reply(res, 200, handler(JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>));
    } catch (error) {
      const fault = error instanceof KmsFault ? error : new KmsFault('KMSInternalException', String(error));
      reply(res, fault.type === 'KMSInternalException' ? 500 : 400, { __type: fault.type, message: fault.message }, fault.type);
    }
  };

  const server: Server = createServer((req, res) => {
    void handle(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    region,
    calls,
    createKey() {
      const id = randomUUID();
      const arn = `arn:aws:kms:${region}:${account}:key/${id}`;
      keys.set(id, { arn, secret: randomBytes(32), state: 'Enabled', denied: false });
      return arn;
    },
    disable(arn) {
      find(arn).state = 'Disabled';
    },
    enable(arn) {
      find(arn).state = 'Enabled';
    },
    deny(arn) {
      find(arn).denied = true;
    },
    env() {
      return {
        AWS_ENDPOINT_URL_KMS: url,
        AWS_ACCESS_KEY_ID: STANDIN_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY: 'standin-secret-key-not-a-real-one',
        AWS_EC2_METADATA_DISABLED: 'true',
      };
    },
    count(operation, arn) {
      return calls.get(arn ? `${operation} ${arn}` : operation) ?? 0;
    },
    close() {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
