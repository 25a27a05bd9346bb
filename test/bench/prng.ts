import { createCipheriv, createHash } from 'node:crypto';

/**
 * A seeded, repeatable stream of pseudo-random bytes: AES-256-CTR over zeros with
 * a key derived from (seed, label). It runs at well over 1 GB/s, so generating a
 * GiB of benchmark data costs about a second, and the same seed gives the same
 * bytes on every machine (Math.random cannot be seeded).
 */
export class Prng {
  private readonly cipher: ReturnType<typeof createCipheriv>;
  // Small integers come from a buffered block: one cipher call per 64 KiB, not per number.
  private pool: Buffer = Buffer.alloc(0);
  private at = 0;

  constructor(seed: number, label: string) {
    const key = createHash('sha256').update(`cairn-bench:${seed}:${label}`).digest();
    this.cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  }

  /** n fresh bytes (a new Buffer the caller owns). */
  bytes(n: number): Buffer {
    return this.cipher.update(Buffer.alloc(n));
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    if (this.at + 4 > this.pool.length) {
      this.pool = this.bytes(1 << 16);
      this.at = 0;
    }
    const value = this.pool.readUInt32LE(this.at);
    this.at += 4;
    return value;
  }

  /** An integer in [0, max). The modulo bias is irrelevant for test data. */
  int(max: number): number {
    return this.u32() % max;
  }

  /** A float in [0, 1). */
  float(): number {
    return this.u32() / 2 ** 32;
  }
}
