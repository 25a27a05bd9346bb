import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';

const ROOT = join(import.meta.dirname, '..', '..');
const LIMIT = 400;

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return e.name === 'node_modules' ? [] : sources(path);
    return /\.(ts|js)$/.test(e.name) ? [path] : [];
  });
}

describe('file size', () => {
  it(`no file in agent/, functions/ or cdk/ is over ${LIMIT} lines without a comment at its top saying why it is one unit`, () => {
    const offenders = ['agent', 'functions', 'cdk']
      .flatMap((d) => sources(join(ROOT, d)))
      .filter((path) => {
        const text = readFileSync(path, 'utf8');
        if (text.split('\n').length <= LIMIT) return false;
        // The reason must open the file: the first comment lines, before any code.
        const head = text.split('\n').slice(0, 8).join('\n');
        return !(/^(\/\/|\/\*|#!)/.test(text) && /one unit/i.test(head));
      })
      .map((path) => relative(ROOT, path));
    assert.deepEqual(offenders, [], `split these by what their parts do, or say at their top why each is one unit`);
  });
});
