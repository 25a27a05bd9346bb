import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EnvelopeKind } from '../../../agent/core/envelope.ts';
import * as layout from '../../../agent/core/layout.ts';
import { Codec, PACK_END, PACK_MAGIC, PieceType } from '../../../agent/core/pack.ts';

const DOC = readFileSync(join(import.meta.dirname, '../../../docs/repository-format.md'), 'utf8');

/** The rows of the markdown table whose header row starts with `| <first> |`, as arrays of cells with backquotes removed. */
function table(first: string): string[][] {
  const lines = DOC.split('\n');
  const start = lines.findIndex((line) => line.startsWith(`| ${first} |`));
  assert.ok(start >= 0, `docs/repository-format.md has a table headed "${first}"`);
  const rows: string[][] = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(
      line
        .split('|')
        .slice(1, -1)
        .map((cell) => cell.trim().replaceAll('`', '')),
    );
  }
  return rows;
}

/** name → number from a two-column-or-more table, checking no name is listed twice. */
function numbers(first: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, number] of table(first)) {
    assert.ok(name !== undefined && number !== undefined);
    assert.equal(out[name], undefined, `${name} listed twice under "${first}"`);
    out[name] = Number(number);
  }
  return out;
}

describe('the format document lists every object kind and name the code writes', () => {
  it('sealed object kinds: the same names and numbers as EnvelopeKind', () => {
    assert.deepEqual(numbers('sealed kind'), { ...EnvelopeKind });
  });

  it('each sealed kind is documented under the prefix layout.ts gives it', () => {
    const prefixes: Record<string, string> = {
      snapshot: layout.SNAPSHOTS_PREFIX,
      index: layout.INDEX_PREFIX,
      lock: layout.LOCKS_PREFIX,
      history: layout.HISTORY_PREFIX,
      pin: layout.PINS_PREFIX,
      log: layout.LOGS_PREFIX,
      logBatch: layout.LOGS_PREFIX,
    };
    for (const [kind, , name] of table('sealed kind')) {
      const prefix = prefixes[kind as string];
      assert.ok(prefix, `the test knows where ${kind} objects live: add it here when adding a kind`);
      assert.ok(name?.startsWith(prefix), `${kind}: ${name} starts with ${prefix}`);
    }
    assert.ok(
      table('sealed kind')
        .find(([k]) => k === 'log')?.[2]
        ?.includes(`/${layout.LOG_FILES_DIR}`),
    );
    assert.ok(
      table('sealed kind')
        .find(([k]) => k === 'logBatch')?.[2]
        ?.includes(`/${layout.LOG_BATCHES_DIR}`),
    );
  });

  it('piece types and frame codecs: the same as pack.ts', () => {
    assert.deepEqual(numbers('piece type'), { ...PieceType });
    assert.deepEqual(numbers('frame codec'), { ...Codec });
  });

  it('every name constant of layout.ts, with its value, and nothing else', () => {
    const code = Object.fromEntries(Object.entries(layout as Record<string, unknown>).filter(([, value]) => typeof value === 'string'));
    const doc: Record<string, string | undefined> = {};
    for (const [name, value] of table('constant')) doc[name ?? ''] = value;
    assert.deepEqual(doc, code);
  });

  it('the layout table at the top names every top-level prefix', () => {
    const top = table('object').map(([object]) => object ?? '');
    const prefixes = Object.entries(layout)
      .filter(([name, value]) => typeof value === 'string' && (name.endsWith('_PREFIX') || name.endsWith('_KEY')))
      .map(([, value]) => value as string)
      .filter((value) => !value.slice(0, -1).includes('/'));
    for (const prefix of prefixes)
      assert.ok(
        top.some((cell) => cell.includes(prefix)),
        `the Layout table mentions ${prefix}`,
      );
  });

  it('the pack and sealed-object magic the doc gives is the code’s', () => {
    const magic = (bytes: Buffer): string => `"${bytes.toString('latin1', 0, 3)}" 0x${bytes.toString('hex', 3, 4)}`;
    assert.ok(DOC.includes(`pack    = ${magic(PACK_MAGIC)} | salt[16]`));
    assert.ok(DOC.includes(`| u32 trailerLength | "${PACK_END.toString('latin1')}"`));
    assert.ok(DOC.includes(`${magic(Buffer.from('CRN\x01', 'latin1'))} | u8 kind | salt[16]`));
    assert.equal(layout.packKey('ab'.repeat(32)), `packs/ab/${'ab'.repeat(32)}`);
  });
});
