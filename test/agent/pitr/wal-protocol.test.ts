import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  decodeRequest,
  decodeResponse,
  encodeLine,
  ProtocolError,
  type WalRequest,
  type WalResponse,
} from '../../../agent/pitr/wal-protocol.ts';

const requests: WalRequest[] = [
  { v: 1, op: 'push', path: '/data/pg_wal/000000010000000000000003', dataDir: '/data' },
  { v: 1, op: 'fetch', name: '000000010000000000000003', dest: '/data/pg_wal/RECOVERYXLOG' },
  {
    v: 1,
    op: 'fetch',
    name: '000000010000000000000003',
    dest: '/data/pg_wal/RECOVERYXLOG',
    stage: '/data/cairn-wal-stage.0123456789abcdef',
  },
  { v: 1, op: 'status' },
  { v: 1, op: 'stop' },
];
const responses: WalResponse[] = [
  { ok: true, op: 'push', outcome: 'stored' },
  { ok: true, op: 'fetch', found: false },
  { ok: true, op: 'fetch', found: true, source: 'prefetch' },
  { ok: true, op: 'stop' },
  { ok: false, error: { code: 'Cairn.AlreadyExists', message: 'x is already archived', hint: 'investigate' } },
  { ok: false, error: { code: 'Cairn.Cancelled', message: 'the WAL daemon is stopping', retry: true } },
];

/** Random edits of a valid line: the decoders answer or throw ProtocolError, nothing else. */
function mutate(line: string, seed: Buffer): string {
  const chars = Array.from(line);
  for (let i = 0; i < seed.length - 1; i += 2) {
    const at = (seed[i] as number) % (chars.length + 1);
    const b = seed[i + 1] as number;
    if (b < 80) chars.splice(at, 1);
    else if (b < 160) chars.splice(at, 0, String.fromCharCode(32 + (b % 95)));
    else chars[at] = ['"', '{', '}', ':', ',', '1', 'null', '[]', '\\u0000', '/'][b % 10] as string;
  }
  return chars.join('');
}

describe('WAL daemon protocol', () => {
  it('round-trips every request and answer', () => {
    for (const r of requests) assert.deepEqual(decodeRequest(encodeLine(r).trim()), r);
    for (const r of responses) assert.deepEqual(JSON.parse(JSON.stringify(decodeResponse(encodeLine(r).trim()))), r);
  });

  it('refuses relative paths, unknown operations and versions, and over-long lines', () => {
    assert.throws(() => decodeRequest('{"v":1,"op":"push","path":"pg_wal/x","dataDir":"/d"}'), ProtocolError);
    assert.throws(() => decodeRequest('{"v":1,"op":"fetch","name":"x","dest":"relative"}'), ProtocolError);
    assert.throws(() => decodeRequest('{"v":1,"op":"fetch","name":"x","dest":"/d","stage":"relative"}'), ProtocolError);
    assert.throws(() => decodeRequest('{"v":2,"op":"status"}'), ProtocolError);
    assert.throws(() => decodeRequest('{"v":1,"op":"rm"}'), ProtocolError);
    assert.throws(() => decodeRequest(`{"v":1,"op":"push","path":"/${'a'.repeat(70_000)}","dataDir":"/"}`), ProtocolError);
    assert.throws(() => decodeResponse('{"ok":true,"op":"push","outcome":"maybe"}'), ProtocolError);
  });

  it('fuzz: mutated lines decode or fail with ProtocolError, never anything else', () => {
    const lines = [...requests, ...responses].map((m) => encodeLine(m).trim());
    for (let i = 0; i < 4000; i++) {
      const line = mutate(lines[i % lines.length] as string, randomBytes(2 + (i % 12) * 2));
      for (const decode of [decodeRequest, decodeResponse]) {
        try {
          decode(line);
        } catch (error) {
          assert.ok(error instanceof ProtocolError, `${line} → ${String(error)}`);
        }
      }
    }
  });
});
