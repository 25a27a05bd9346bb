// The entry of the single executable (`npm run build:sea`, agent/cli/build-sea.ts; docs/single-binary.md).
// Node 22 runs a single executable's main script as CommonJS, where cairn.js's top-level await is
// not allowed, so this is cairn.js's start-up in one async function; keep the two in step.
import { seaArgv } from './sea-argv.ts';

// Before the libuv pool starts, as in cairn.js: restores create files in parallel on it.
process.env.UV_THREADPOOL_SIZE ??= '16';

async function start(): Promise<void> {
  const argv = seaArgv(process.argv, process.execPath);
  process.argv.splice(0, process.argv.length, ...argv);
  // wal-push/wal-fetch take the short path, as in cairn.js (agent/pitr/wal-fast.ts).
  if (argv.includes('wal-push') || argv.includes('wal-fetch')) {
    const wal = await (await import('../pitr/wal-fast.ts')).runWalCommand(argv.slice(2), process.env);
    if (wal !== undefined) {
      process.exitCode = wal;
      return;
    }
  }
  // The passphrase's scrypt on libuv's pool while main.ts and the command load (early-unlock.ts). Before
  // the signal handlers: until they are installed a signal ends the process as usual.
  (await import('./early-unlock.ts')).startEarlyUnlock(argv.slice(2), process.env);
  // A second SIGINT/SIGTERM exits at once (130), as in cairn.js; main() handles the first.
  let signals = 0;
  const force = () => {
    if (++signals > 1) process.exit(130);
  };
  process.on('SIGINT', force);
  process.on('SIGTERM', force);
  (await import('./stdout-closed.ts')).exitQuietlyWhenStdoutCloses();
  const { main } = await import('./main.ts');
  process.exitCode = await main(argv);
  process.off('SIGINT', force);
  process.off('SIGTERM', force);
}

start().catch((error: unknown) => {
  // main() reports its own failures; this is a failure to start at all.
  process.stderr.write(`cairn: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
