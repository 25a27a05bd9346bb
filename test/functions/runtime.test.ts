import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

process.env.POWERTOOLS_TRACE_ENABLED = 'false';
const { handlerOf, logger } = await import('../../functions/runtime.ts');

/** Runs fn while copying stdout; returns the JSON log lines Powertools printed meanwhile. */
async function logLines(fn: () => Promise<void>): Promise<Array<Record<string, unknown>>> {
  const printed: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = (chunk: string | Uint8Array, ...rest: never[]) => {
    printed.push(String(chunk));
    return write(chunk, ...rest);
  };
  try {
    await fn();
  } finally {
    process.stdout.write = write;
  }
  // The test runner may print on the same line first: a log record runs from its own '{"level"' to the line's end.
  return printed
    .join('')
    .split('\n')
    .flatMap((line) => (line.includes('{"level"') ? [JSON.parse(line.slice(line.indexOf('{"level"'))) as Record<string, unknown>] : []));
}

describe('functions/runtime handlerOf', () => {
  it('logs the handler key on every invocation, not only the first (resetKeys clears temporary keys)', async () => {
    const first = handlerOf('first-handler', async (event: { n: number }) => {
      logger.info('first ran', { n: event.n, temporary: 'only this invocation' });
      return event.n;
    });
    const second = handlerOf('second-handler', async (event: { n: number }) => {
      logger.info('second ran', { n: event.n });
      return event.n;
    });
    const lines = await logLines(async () => {
      assert.equal(await first({ n: 1 }), 1);
      assert.equal(await first({ n: 2 }), 2);
      assert.equal(await second({ n: 3 }), 3);
      assert.equal(await first({ n: 4 }), 4);
    });
    assert.deepEqual(
      lines.map((l) => [l.message, l.n, l.handler]),
      [
        ['first ran', 1, 'first-handler'],
        ['first ran', 2, 'first-handler'],
        ['second ran', 3, 'second-handler'],
        ['first ran', 4, 'first-handler'],
      ],
    );
    // The keys a line adds for itself stay on that line.
    assert.equal(lines[0]?.temporary, 'only this invocation');
    assert.equal(lines[2]?.temporary, undefined);
  });
});
