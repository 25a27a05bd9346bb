#!/usr/bin/env node
// The `cairn` bin (package.json). It runs the CLI built by `npm run build:cli` when that build is of
// the sources as they are now: one pre-compiled JavaScript file, which starts several times faster
// than the TypeScript sources (no type stripping, no module graph to resolve; issue 21). Otherwise
// it runs the sources through cairn.js, as before the build existed.
import * as nodeModule from 'node:module';
import { builtCli } from './built-cli.js';

// Before the bundle is compiled: cairn.js enables the cache too, but in the bundle that runs only
// after the bundle's own compilation, which is the part worth caching.
nodeModule.enableCompileCache?.();
const { entry, stale } = builtCli(new URL('../../', import.meta.url));
if (stale && process.stderr.isTTY) {
  // Only on a terminal: stderr is JSON lines for scripts.
  process.stderr.write(`cairn: running the sources, not the build (${stale}); \`npm run build:cli\` makes start-up fast again\n`);
}
await import(entry ? entry.href : './cairn.js');
