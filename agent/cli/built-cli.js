// Where `npm run build:cli` (agent/cli/build.ts) puts the pre-built CLI, and whether that build is
// of the sources as they are now. Plain JavaScript: the bin (bin.js) reads it before choosing
// between the build and the TypeScript sources, and loading any .ts file costs Node its
// type-stripping compiler (about 0.1 s), the start-up the build exists to save (issue 21).
import { readFileSync, statSync } from 'node:fs';

/** The build's folder, under the repository root: node_modules/ (ignored by git, lint and tsc; `npm ci` empties it). */
export const BUILT_DIR = 'node_modules/.cache/cairn-cli/';
/** The bundle itself (one ES module, the CLI from agent/cli/cairn.js) and the list of what it was built from. */
export const BUILT_ENTRY = 'cairn.mjs';
export const BUILT_SOURCES = 'sources.json';

/**
 * The URL of the built CLI under `root` (a directory URL ending in '/') when every file it was
 * built from (sources.json: [path relative to root, size, mtimeMs]) is unchanged, else undefined
 * with the reason: not built, or a source changed since (edited, checked out, dependencies
 * reinstalled), when running the build would run old code.
 * @param {URL} root
 * @returns {{ entry: URL | undefined, stale: string | undefined }}
 */
export function builtCli(root) {
  const dir = new URL(BUILT_DIR, root);
  let files;
  try {
    files = JSON.parse(readFileSync(new URL(BUILT_SOURCES, dir), 'utf8')).files;
  } catch {
    return { entry: undefined, stale: undefined }; // never built (or the build was removed)
  }
  for (const [path, size, mtimeMs] of files) {
    let now;
    try {
      now = statSync(new URL(path, root));
    } catch {
      return { entry: undefined, stale: `${path} is gone` };
    }
    if (now.size !== size || now.mtimeMs !== mtimeMs) return { entry: undefined, stale: `${path} changed` };
  }
  return { entry: new URL(BUILT_ENTRY, dir), stale: undefined };
}
