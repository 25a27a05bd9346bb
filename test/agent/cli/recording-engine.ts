import { Readable } from 'node:stream';
import type { EngineSpec } from '../../../agent/core/engine-options/spec.ts';
import type { Engine } from '../../../agent/engines/engine.ts';
import { parseEngineOptions } from '../../../agent/engines/engine-helpers.ts';

/** One call an engine received: the options after its own schema parsed them. */
export interface RecordedCall {
  operation: 'backup' | 'restore';
  options: Record<string, unknown>;
}

/**
 * An engine with a shipped engine's spec (so its flags, schema and plan
 * validation are the real ones) that talks to no server: backup stores one
 * small file, and both operations record the options they were handed. Tests
 * put it in a registry of their own with createEngineRegistry and check what
 * reached the engine from CLI flags or from a plan.
 */
export function recordingEngine(spec: EngineSpec): { engine: Engine<never>; calls: RecordedCall[] } {
  const calls: RecordedCall[] = [];
  const engine: Engine = {
    name: spec.name,
    description: `test only: records its options (${spec.name}'s spec)`,
    spec,
    requires: [],
    parseOptions: (raw): Record<string, unknown> => parseEngineOptions(spec.name, spec.schema, raw),
    async check() {},
    async backup(options, sink) {
      calls.push({ operation: 'backup', options });
      await sink.addStream('recorded.txt', Readable.from([Buffer.from(`${spec.name} backup\n`)]));
      return { recorded: true };
    },
    async restore(options) {
      calls.push({ operation: 'restore', options });
    },
  };
  return { engine: engine as Engine<never>, calls };
}
