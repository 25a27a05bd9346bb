import assert from 'node:assert/strict';
import { appendFileSync } from 'node:fs';
import fc from 'fast-check';
import { CairnError, type ErrorCode } from '../../agent/core/errors.ts';

/**
 * Shared parts of the decoder fuzzers (docs/reliability.md, "Fuzzing").
 *
 * Every fuzzer feeds a decoder arbitrary bytes and mutations of valid encodings
 * and checks one property: the decoder returns a value that passes its own
 * schema or invariants, or throws a clean error — a CairnError with one of the
 * codes that decoder is documented to use. Anything else (TypeError,
 * RangeError, a zlib or zod error escaping unwrapped, a hang) fails the run.
 *
 * Counts and seeds: `npm test` runs the small count each fuzzer names;
 * CAIRN_FUZZ_RUNS=N runs N inputs per property (the soak, test/soak/fuzz.ts).
 * The seed is random unless CAIRN_FUZZ_SEED is set, and is always printed; a
 * failure prints fast-check's seed and path, and re-running with that seed
 * reproduces it. With CAIRN_FUZZ_REPORT=FILE each property appends one JSON line
 * (name, runs, seed, milliseconds) to FILE, which the soak turns into a table.
 */

export function fuzzRuns(small: number): number {
  const text = process.env.CAIRN_FUZZ_RUNS;
  if (text === undefined || text === '') return small;
  const runs = Number(text);
  assert.ok(Number.isSafeInteger(runs) && runs > 0, `CAIRN_FUZZ_RUNS must be a positive integer, got ${JSON.stringify(text)}`);
  return runs;
}

function fuzzSeed(): number {
  const text = process.env.CAIRN_FUZZ_SEED;
  if (text !== undefined && text !== '') return Number(text) | 0;
  return (Math.random() * 0x7fffffff) | 0;
}

function report(name: string, runs: number, seed: number, started: number): void {
  const ms = Math.round(performance.now() - started);
  console.log(`fuzz ${name}: ${runs} inputs, seed ${seed}, ${ms} ms`);
  const file = process.env.CAIRN_FUZZ_REPORT;
  if (file) appendFileSync(file, `${JSON.stringify({ name, runs, seed, ms })}\n`);
}

/** Runs a synchronous property over `small` inputs (or CAIRN_FUZZ_RUNS), seeded and reported. */
export function fuzz<T>(name: string, arbitrary: fc.Arbitrary<T>, check: (input: T) => void, small = 500): void {
  const runs = fuzzRuns(small);
  const seed = fuzzSeed();
  const started = performance.now();
  console.log(`fuzz ${name}: seed ${seed} (CAIRN_FUZZ_SEED=${seed} reproduces)`);
  fc.assert(fc.property(arbitrary, check), { numRuns: runs, seed });
  report(name, runs, seed, started);
}

/** The asynchronous form; each input must settle within `timeoutMs` (a hang is a failure). */
export async function fuzzAsync<T>(
  name: string,
  arbitrary: fc.Arbitrary<T>,
  check: (input: T) => Promise<void>,
  small = 300,
  timeoutMs = 10_000,
): Promise<void> {
  const runs = fuzzRuns(small);
  const seed = fuzzSeed();
  const started = performance.now();
  console.log(`fuzz ${name}: seed ${seed} (CAIRN_FUZZ_SEED=${seed} reproduces)`);
  await fc.assert(fc.asyncProperty(arbitrary, check), { numRuns: runs, seed, timeout: timeoutMs });
  report(name, runs, seed, started);
}

function describeError(error: unknown): string {
  if (error instanceof CairnError) return `CairnError ${error.code}: ${error.message}`;
  if (error instanceof Error) return `${error.name}: ${error.message}\n${error.stack ?? ''}`;
  return String(error);
}

/** Fails unless `error` is a CairnError with one of `codes`. */
export function assertClean(error: unknown, codes: readonly ErrorCode[]): void {
  if (error instanceof CairnError && codes.includes(error.code)) return;
  assert.fail(`not a clean error (expected a CairnError ${codes.join(' or ')}): ${describeError(error)}`);
}

/** Calls a decoder: a returned value goes to `valid` (which asserts its invariants), a thrown error must be clean. */
export function decodes<T>(decode: () => T, codes: readonly ErrorCode[], valid: (value: T) => void = () => undefined): void {
  let value: T;
  try {
    value = decode();
  } catch (error) {
    assertClean(error, codes);
    return;
  }
  valid(value);
}

export async function decodesAsync<T>(
  decode: () => Promise<T>,
  codes: readonly ErrorCode[],
  valid: (value: T) => void = () => undefined,
): Promise<void> {
  let value: T;
  try {
    value = await decode();
  } catch (error) {
    assertClean(error, codes);
    return;
  }
  valid(value);
}

// ---------------------------------------------------------------- byte mutations

/** Values that break length and count fields: zero, one, the edges of signed and unsigned widths. */
const INTERESTING = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff];

type Mutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; byte: number }
  | { op: 'int'; at: number; width: 1 | 2 | 4; value: number }
  | { op: 'truncate'; at: number }
  | { op: 'extend'; bytes: Uint8Array }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  | { op: 'delete'; at: number; length: number }
  | { op: 'duplicate'; from: number; to: number; length: number }
  | { op: 'swap'; a: number; b: number; length: number };

const position = fc.nat();
const shortLength = fc.integer({ min: 1, max: 64 });
const mutationArbitrary: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant('flip' as const), at: position, bit: fc.integer({ min: 0, max: 7 }) }) },
  fc.record({ op: fc.constant('set' as const), at: position, byte: fc.integer({ min: 0, max: 255 }) }),
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('int' as const),
      at: position,
      width: fc.constantFrom(1 as const, 2 as const, 4 as const),
      value: fc.constantFrom(...INTERESTING),
    }),
  },
  fc.record({ op: fc.constant('truncate' as const), at: position }),
  fc.record({ op: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
  fc.record({ op: fc.constant('insert' as const), at: position, bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  fc.record({ op: fc.constant('delete' as const), at: position, length: shortLength }),
  fc.record({ op: fc.constant('duplicate' as const), from: position, to: position, length: shortLength }),
  fc.record({ op: fc.constant('swap' as const), a: position, b: position, length: shortLength }),
);

function applyMutation(data: Buffer, m: Mutation): Buffer {
  const n = data.length;
  const at = (x: number): number => (n === 0 ? 0 : x % n);
  switch (m.op) {
    case 'flip': {
      if (n === 0) return data;
      const out = Buffer.from(data);
      out[at(m.at)] = (out[at(m.at)] as number) ^ (1 << m.bit);
      return out;
    }
    case 'set': {
      if (n === 0) return data;
      const out = Buffer.from(data);
      out[at(m.at)] = m.byte;
      return out;
    }
    case 'int': {
      if (n < m.width) return data;
      const out = Buffer.from(data);
      const where = m.at % (n - m.width + 1);
      out.writeUIntLE(m.value % 2 ** (8 * m.width), where, m.width);
      return out;
    }
    case 'truncate':
      return data.subarray(0, at(m.at));
    case 'extend':
      return Buffer.concat([data, m.bytes]);
    case 'insert':
      return Buffer.concat([data.subarray(0, at(m.at)), m.bytes, data.subarray(at(m.at))]);
    case 'delete':
      return Buffer.concat([data.subarray(0, at(m.at)), data.subarray(at(m.at) + m.length)]);
    case 'duplicate': {
      const piece = data.subarray(at(m.from), at(m.from) + m.length);
      return Buffer.concat([data.subarray(0, at(m.to)), piece, data.subarray(at(m.to))]);
    }
    case 'swap': {
      if (n === 0) return data;
      const length = Math.min(m.length, n);
      const a = m.a % (n - length + 1);
      const b = m.b % (n - length + 1);
      const out = Buffer.from(data);
      data.copy(out, b, a, a + length);
      data.copy(out, a, b, b + length);
      return out;
    }
  }
}

/** A valid encoding with one to `max` byte-level mutations applied (flips, field overwrites, truncations, extensions, swaps); never the encoding unchanged. */
export function mutatedBytes(valid: fc.Arbitrary<Buffer>, max = 4): fc.Arbitrary<Buffer> {
  return fc.tuple(valid, fc.array(mutationArbitrary, { minLength: 1, maxLength: max })).map(([data, mutations]) => {
    const out = mutations.reduce(applyMutation, data);
    // A mutation always changes something (a byte set to its own value, or swapped regions that were equal, change nothing).
    if (!out.equals(data)) return out;
    return data.length === 0 ? Buffer.from([0]) : applyMutation(data, { op: 'flip', at: 0, bit: 0 });
  });
}

/** Arbitrary bytes, up to `maxLength`. */
export function anyBytes(maxLength = 1024): fc.Arbitrary<Buffer> {
  return fc.uint8Array({ maxLength }).map((a) => Buffer.from(a));
}

// ---------------------------------------------------------------- JSON mutations

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Values that tend to slip past loose checks: wrong types, edges, prototype names, long strings. */
const oddValue: fc.Arbitrary<Json> = fc.oneof(
  fc.constantFrom<Json>(null, true, false, 0, -1, 1.5, 1e308, -1e308, 2 ** 53, '', ' ', '0', 'NaN', '__proto__', 'constructor', [], {}),
  fc.constantFrom<Json>({ __proto__: null } as unknown as Json, 'x'.repeat(70_000), '\u0000', '\ud800', '../../etc', '/'),
  fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>,
);

type JsonMutation =
  | { op: 'replace'; at: number; value: Json }
  | { op: 'delete'; at: number }
  | { op: 'add'; at: number; key: string; value: Json }
  | { op: 'swap'; a: number; b: number }
  | { op: 'wrap'; at: number }
  | { op: 'retype'; at: number };

const jsonMutationArbitrary: fc.Arbitrary<JsonMutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('replace' as const), at: position, value: oddValue }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('delete' as const), at: position }) },
  fc.record({
    op: fc.constant('add' as const),
    at: position,
    key: fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('__proto__', 'constructor', 'toString')),
    value: oddValue,
  }),
  { weight: 2, arbitrary: fc.record({ op: fc.constant('swap' as const), a: position, b: position }) },
  fc.record({ op: fc.constant('wrap' as const), at: position }),
  { weight: 2, arbitrary: fc.record({ op: fc.constant('retype' as const), at: position }) },
);

type Path = Array<string | number>;

function paths(value: Json, prefix: Path = [], out: Path[] = []): Path[] {
  out.push(prefix);
  if (Array.isArray(value)) value.forEach((v, i) => paths(v, [...prefix, i], out));
  else if (value !== null && typeof value === 'object') for (const [k, v] of Object.entries(value)) paths(v, [...prefix, k], out);
  return out;
}

function getAt(root: Json, path: Path): Json {
  let value = root;
  for (const step of path) value = (value as Record<string | number, Json>)[step] as Json;
  return value;
}

/** Returns a new root with the value at `path` replaced (undefined deletes it). */
function setAt(root: Json, path: Path, replacement: Json | undefined): Json {
  if (path.length === 0) return replacement ?? null;
  const [step, ...rest] = path as [string | number, ...Path];
  if (Array.isArray(root)) {
    const copy = [...root];
    if (rest.length === 0 && replacement === undefined) copy.splice(step as number, 1);
    else copy[step as number] = setAt(copy[step as number] as Json, rest, replacement);
    return copy;
  }
  const copy: Record<string, Json> = {};
  for (const [k, v] of Object.entries(root as Record<string, Json>))
    Object.defineProperty(copy, k, { value: v, enumerable: true, writable: true });
  if (rest.length === 0 && replacement === undefined) Reflect.deleteProperty(copy, step);
  else
    Object.defineProperty(copy, step, { value: setAt(copy[step as string] as Json, rest, replacement), enumerable: true, writable: true });
  return copy;
}

function retype(value: Json): Json {
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string') return /^-?\d+(\.\d+)?$/.test(value) ? Number(value) : value.length;
  if (typeof value === 'boolean') return value ? 1 : 0;
  if (Array.isArray(value)) return Object.fromEntries(value.map((v, i) => [String(i), v]));
  if (value === null) return 'null';
  return Object.values(value);
}

function applyJsonMutation(root: Json, m: JsonMutation): Json {
  const all = paths(root);
  const pick = (n: number): Path => all[n % all.length] as Path;
  switch (m.op) {
    case 'replace':
      return setAt(root, pick(m.at), m.value);
    case 'delete': {
      const path = pick(m.at);
      return path.length === 0 ? root : setAt(root, path, undefined);
    }
    case 'add': {
      const path = pick(m.at);
      const target = getAt(root, path);
      if (target === null || typeof target !== 'object') return root;
      return setAt(root, Array.isArray(target) ? [...path, target.length] : [...path, m.key], m.value);
    }
    case 'swap': {
      const a = pick(m.a);
      const b = pick(m.b);
      if (a.length === 0 || b.length === 0) return root;
      const va = getAt(root, a);
      const vb = getAt(root, b);
      // Swapping a value with one inside it makes no sense; keep the first replacement only then.
      const swapped = setAt(root, a, vb);
      return a.join('\u0000').startsWith(b.join('\u0000')) || b.join('\u0000').startsWith(a.join('\u0000'))
        ? swapped
        : setAt(swapped, b, va);
    }
    case 'wrap': {
      const path = pick(m.at);
      return setAt(root, path, [getAt(root, path)]);
    }
    case 'retype': {
      const path = pick(m.at);
      return setAt(root, path, retype(getAt(root, path)));
    }
  }
}

/** A valid JSON document with one to `max` structural mutations (fields replaced, deleted, added, swapped, retyped). */
export function mutatedJson(valid: fc.Arbitrary<unknown>, max = 3): fc.Arbitrary<unknown> {
  return fc.tuple(valid, fc.array(jsonMutationArbitrary, { minLength: 1, maxLength: max })).map(([value, mutations]) => {
    const start = JSON.parse(JSON.stringify(value)) as Json;
    return mutations.reduce(applyJsonMutation, start);
  });
}

/**
 * The inputs for a decoder of JSON bytes: arbitrary bytes, arbitrary JSON, the
 * valid documents mutated structurally, and their text mutated byte by byte.
 */
export function jsonDocumentBytes(valid: fc.Arbitrary<unknown>): fc.Arbitrary<Buffer> {
  const text = (v: unknown): Buffer => Buffer.from(JSON.stringify(v) ?? 'null', 'utf8');
  return fc.oneof(
    anyBytes(512),
    fc.jsonValue({ maxDepth: 3 }).map(text),
    { weight: 4, arbitrary: mutatedJson(valid).map(text) },
    { weight: 2, arbitrary: mutatedBytes(valid.map(text)) },
    fc.integer({ min: 1, max: 100_000 }).map((depth) => Buffer.from('['.repeat(depth) + ']'.repeat(depth))),
  );
}

/** The inputs for a decoder of parsed JSON values (schemas fed by JSON.parse elsewhere). */
export function jsonValues(valid: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> {
  return fc.oneof(fc.jsonValue({ maxDepth: 3 }), { weight: 5, arbitrary: mutatedJson(valid) }, valid);
}
