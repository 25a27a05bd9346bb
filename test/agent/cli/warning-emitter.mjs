// Preloaded (NODE_OPTIONS=--import) by process-warnings.test.ts: raises a process warning, as a
// library would, every 10 ms while the command runs: while main() holds its SIGTERM listener
// beside the bin's own (cairn.js adds one, main() a second, and routes warnings in the same step).
let n = 0;
setInterval(() => {
  if (process.listenerCount('SIGTERM') >= 2) process.emitWarning(`raised by a library (${n++})`, { type: 'TestWarning', code: 'TEST001' });
}, 10).unref();
