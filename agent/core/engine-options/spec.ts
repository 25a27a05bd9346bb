import type { z } from 'zod';

/**
 * The pure part of an engine: its name, the schema of its options, the flags
 * that fill them and what it can do. Pure zod and data, no I/O, so core (plan
 * validation), the CDK app and the Lambda functions know every engine's
 * options without importing the engines, which spawn database tools. Each
 * engine file in agent/engines/ re-exports its spec as `engine.spec`.
 */
export interface EngineSpec {
  /** The name plans, snapshots (`engine` in the manifest) and `--engine` use. */
  readonly name: string;
  /** One line for `cairn engines`. */
  readonly description: string;
  /**
   * The options the engine takes, from CLI flags or a plan's engineOptions
   * (flattened: a plan's `connection` fields become host/port/socket/user).
   * A z.object that strips unknown keys (the CLI hands every engine the same
   * flag values); plans are checked against its strict form, so a key no
   * engine option matches is refused there, by name.
   */
  readonly schema: z.ZodObject;
  /** The CLI flags that fill the options, for the CLI to generate (agent/cli builds commander Options from these). */
  readonly flags: readonly EngineFlag[];
  readonly capabilities: EngineCapabilities;
}

export interface EngineCapabilities {
  /**
   * physical: a copy of the data directory, restored into an empty `--target DIR`;
   * logical: statements or keys written into a running server.
   */
  readonly kind: 'physical' | 'logical';
  /**
   * The database log this engine's snapshots can be the base of, for
   * point-in-time recovery (docs/pitr.md); absent when it has none. The
   * stream prefix names the archive's streams (`pg-<system identifier>`,
   * `mariadb-<name>`); each log kind has its chain analysis in core/log-chain.ts
   * and its replay in agent/pitr/replayers.ts.
   */
  readonly pitr?: { readonly log: PitrLogKind; readonly streamPrefix: string } | undefined;
  /** Whether `cairn drill` can prove a snapshot: restore it into a private scratch place (a private server where the engine needs one) and check it with the engine's tools. */
  readonly drill: boolean;
}

/** The log kinds Cairn can archive and replay. */
export type PitrLogKind = 'wal' | 'binlog';

/** The commands whose flags fill engine options (binlog-push reaches a MariaDB server with the mariadb engine's connection flags). */
export type EngineCommand = 'backup' | 'restore' | 'binlog-push';

/**
 * One CLI flag of an engine, in the shape commander takes:
 * `new Option(flag.flags, flag.description)`, `.env(flag.env)`,
 * `.argParser(flag.parse)`, `.default([])` when repeatable. The value lands
 * in the engine options under `key` (engineOptionsFromFlags in flags.ts does
 * that translation, the only one).
 */
export interface EngineFlag {
  /** Commander flag syntax: the long flag and, when it takes a value, `<name>` (e.g. `--db-host <host>`, `--clear-prefix`). */
  readonly flags: string;
  readonly description: string;
  /** Help for one command where it differs from the description (e.g. what --etcd-prefix selects on backup and on restore). */
  readonly help?: Partial<Record<EngineCommand, string>> | undefined;
  /** The engine option the value fills. */
  readonly key: string;
  /** The commands that take the flag. */
  readonly commands: readonly EngineCommand[];
  /** An environment variable read when the flag is not given (commander's Option.env). */
  readonly env?: string | undefined;
  /**
   * Turns the flag's text into the option value, with commander's argParser
   * signature (the previous value is the array so far for repeatable flags).
   * Absent: the text itself, or true for a flag without a value.
   */
  readonly parse?: ((value: string, previous: unknown) => unknown) | undefined;
  /** Repeatable (`--db-name a --db-name b`): the value is an array, [] until given, and left out of the options while empty. */
  readonly repeatable?: boolean | undefined;
  /**
   * The command defines this flag for every engine itself (restore's
   * `--force`): the CLI does not add it again, but its value still fills `key`.
   */
  readonly commandFlag?: boolean | undefined;
}

/** Typed identity: keeps a spec's literal schema type for the engine that re-exports it. */
export function defineEngineSpec<S extends EngineSpec>(spec: S): S {
  return spec;
}
