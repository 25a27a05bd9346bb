import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { describe, it } from 'node:test';

/**
 * The repository's docs and code stand alone: nothing points a reader at design notes kept
 * outside it (the contracts are in docs/contracts.md), and every relative link in the
 * docs leads to a file that exists.
 */

const ROOT = join(import.meta.dirname, '..', '..');
const SKIP_DIRS = new Set(['node_modules', 'cdk.out', '.git']);

/** Case-sensitive on purpose: docs/contracts.md is the repository's own file and may be named. */
const OUTSIDE_REFERENCES: ReadonlyArray<[string, RegExp]> = [
  ['../shared', /\.\.\/shared/],
  ['shared/CONTRACTS', /shared\/CONTRACTS/],
  ['CONTRACTS.md', /CONTRACTS\.md/],
  ['CONTRACTS §', /CONTRACTS §/],
  ['shared/<NAME>.md', /shared\/[A-Z][A-Z_]*\.md/],
];

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return SKIP_DIRS.has(e.name) ? [] : filesUnder(path);
    return e.isFile() ? [path] : [];
  });
}

function outsideReferences(text: string): string[] {
  const found: string[] = [];
  text.split('\n').forEach((line, i) => {
    for (const [name, pattern] of OUTSIDE_REFERENCES) if (pattern.test(line)) found.push(`line ${i + 1}: ${name}`);
  });
  return found;
}

/** The targets of inline links `[text](target)` and reference definitions `[x]: target`, outside code. */
function linkTargets(markdown: string): string[] {
  const prose = markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '').replace(/`[^`\n]*`/g, '');
  const inline = [...prose.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1] as string);
  const definitions = [...prose.matchAll(/^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/gm)].map((m) => m[1] as string);
  return [...inline, ...definitions];
}

/** Relative links whose file does not exist (anchors and external addresses are not checked). */
function brokenLinks(file: string): string[] {
  return linkTargets(readFileSync(file, 'utf8')).filter((target) => {
    if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('#')) return false;
    const path = decodeURIComponent(target.replace(/[#?].*$/, ''));
    return !existsSync(path.startsWith('/') ? join(ROOT, path) : join(dirname(file), path));
  });
}

function markdownDocs(): string[] {
  const docs = readdirSync(join(ROOT, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .map((name) => join(ROOT, 'docs', name));
  return [...docs, join(ROOT, 'README.md')];
}

describe('docs stand alone', () => {
  it('the checks recognise what they look for', () => {
    assert.deepEqual(outsideReferences('ok\nsee ../../shared/CONTRACTS.md §6'), [
      'line 2: ../shared',
      'line 2: shared/CONTRACTS',
      'line 2: CONTRACTS.md',
      'line 2: shared/<NAME>.md',
    ]);
    assert.deepEqual(outsideReferences('(CONTRACTS §4)'), ['line 1: CONTRACTS §']);
    assert.deepEqual(outsideReferences('(shared/PERFORMANCE.md)'), ['line 1: shared/<NAME>.md']);
    assert.deepEqual(outsideReferences('see [contracts.md](contracts.md#keys) and docs/contracts.md'), []);
    assert.deepEqual(linkTargets('[a](a.md) [b](b.md#x "t") `[c](c.md)`\n```\n[d](d.md)\n```\n[e]: e.md\n'), ['a.md', 'b.md#x', 'e.md']);
    const dir = mkdtempSync(join(tmpdir(), 'cairn-links-'));
    try {
      writeFileSync(join(dir, 'here.md'), '');
      writeFileSync(join(dir, 'doc.md'), '[a](here.md#x) [b](gone.md) [c](https://example.com/x.md) [d](#top)\n');
      assert.deepEqual(brokenLinks(join(dir, 'doc.md')), ['gone.md']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('no file under docs/, agent/, functions/ or cdk/, nor README.md, points at design notes outside the repository', () => {
    const files = [...['docs', 'agent', 'functions', 'cdk'].flatMap((d) => filesUnder(join(ROOT, d))), join(ROOT, 'README.md')];
    assert.ok(files.length > 100, `expected the repository's sources, found ${files.length} files`);
    const offenders = files.flatMap((file) => outsideReferences(readFileSync(file, 'utf8')).map((hit) => `${relative(ROOT, file)} ${hit}`));
    assert.deepEqual(offenders, [], 'link to docs/contracts.md (or the doc that holds the fact) instead');
  });

  it('every relative link in docs/*.md and README.md points at a file that exists', () => {
    const docs = markdownDocs();
    assert.ok(
      docs.some((file) => file.endsWith('contracts.md')),
      'docs/contracts.md exists',
    );
    const broken = docs.flatMap((file) => brokenLinks(file).map((target) => `${relative(ROOT, file)} → ${target}`));
    assert.deepEqual(broken, [], 'fix or remove these links');
  });
});
