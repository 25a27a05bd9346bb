import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ThreadPool, ThreadStoppedError } from '../../../agent/pipeline/thread-pool.ts';

/** The pool behind the restore's writer and frame threads (pipeline/thread-pool.ts). */
const SOURCE = `
const { parentPort } = process.getBuiltinModule('node:worker_threads');
let salt = '';
parentPort.on('message', (m) => {
  if (m.salt) { salt = m.salt; return; }
  if (m.die) process.exit(3);
  if (m.throw) throw new Error('boom');
  if (m.hold) return;
  parentPort.postMessage({ id: m.id, echo: salt + m.text, bytes: m.bytes ? m.bytes.byteLength : 0 });
});
`;

interface Echo {
  id: number;
  echo: string;
  bytes: number;
}

const options = { source: SOURCE, what: 'a test thread', hint: 'try again', init: { salt: '>' } };

describe('thread pool', () => {
  it('answers each request with its own reply, after the init message, moving what it is told to', async () => {
    const pool = new ThreadPool<Echo>({ ...options, count: 2 });
    const moved = new ArrayBuffer(1 << 16);
    const replies = await Promise.all([
      ...Array.from({ length: 50 }, (_, i) => pool.request({ text: `n${i}` })),
      pool.request({ text: 'big', bytes: moved }, [moved]),
    ]);
    assert.deepEqual(
      replies.map((r) => r.echo),
      [...Array.from({ length: 50 }, (_, i) => `>n${i}`), '>big'],
    );
    assert.equal(replies.at(-1)?.bytes, 1 << 16);
    assert.equal(moved.byteLength, 0, 'the buffer was moved to the thread, not copied');
    await pool.close();
  });

  it('a thread that stops fails what it had in flight and every later request with one clear error', async () => {
    const pool = new ThreadPool<Echo>({ ...options, count: 1 });
    assert.equal((await pool.request({ text: 'first' })).echo, '>first');
    const stopped = (error: unknown): boolean => {
      // A ThreadStoppedError: what the restore treats as stopping it, whatever --ignore-errors says.
      assert.ok(error instanceof ThreadStoppedError, String(error));
      assert.equal(error.message, 'a test thread stopped: exit code 3');
      assert.equal(error.hint, 'try again');
      return true;
    };
    await assert.rejects(pool.request({ die: true }), stopped);
    await assert.rejects(pool.request({ text: 'later' }), stopped);
    await pool.close();
  });

  it('a thread whose program throws fails its request with ThreadStoppedError', async () => {
    const pool = new ThreadPool<Echo>({ ...options, count: 1 });
    await assert.rejects(
      pool.request({ throw: true }),
      (error: unknown) => error instanceof ThreadStoppedError && /a test thread stopped: boom/.test(error.message),
    );
    await pool.close();
  });

  it('close fails the requests still out and refuses later ones (it starts no new thread)', async () => {
    const pool = new ThreadPool<Echo>({ ...options, count: 1 });
    const held = assert.rejects(
      pool.request({ hold: true }),
      (error: unknown) => error instanceof ThreadStoppedError && /a test thread was stopped/.test(error.message),
    );
    await pool.close();
    await held;
    await assert.rejects(pool.request({ text: 'later' }), ThreadStoppedError);
  });

  it('an idle pool never keeps the process from exiting; one with a request out does', async () => {
    // A child process whose only work is one request: it must print the reply (the pool held it open), then exit on its own.
    const { execFileSync } = await import('node:child_process');
    const script = `
      import { ThreadPool } from ${JSON.stringify(new URL('../../../agent/pipeline/thread-pool.ts', import.meta.url).href)};
      const pool = new ThreadPool({ source: ${JSON.stringify(SOURCE)}, count: 1, what: 't', hint: 'h' });
      pool.request({ text: 'out' }).then((r) => console.log(r.echo));
    `;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(out.trim(), 'out');
  });
});
