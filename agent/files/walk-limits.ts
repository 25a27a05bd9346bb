import { existsSync, type BigIntStats } from 'node:fs';

/**
 * Where a backup's walk stops, besides --exclude, as restic's `--one-file-system` and
 * `--exclude-if-present` have it:
 * - one file system: a directory on another device than the directory holding it (a mount
 *   point: /proc, a tmpfs, an NFS share) is stored as an empty directory, its own metadata kept,
 *   so a restore recreates the mount point without what was mounted on it;
 * - a marker file (`.nobackup`, `CACHEDIR.TAG`): a directory holding one is left out whole.
 */
export interface WalkLimitOptions {
  oneFileSystem?: boolean | undefined;
  excludeIfPresent?: readonly string[] | undefined;
}

export class WalkLimits {
  private readonly oneFileSystem: boolean;
  private readonly markers: readonly string[];

  constructor(options: WalkLimitOptions) {
    this.oneFileSystem = options.oneFileSystem === true;
    this.markers = options.excludeIfPresent ?? [];
  }

  /** The device of the directory being read, when --one-file-system needs it. */
  deviceOf(dir: BigIntStats): bigint | undefined {
    return this.oneFileSystem ? dir.dev : undefined;
  }

  /** A child directory on another file system than its parent (`parentDevice` from deviceOf). */
  isMountPoint(st: BigIntStats, parentDevice: bigint | undefined): boolean {
    return parentDevice !== undefined && st.isDirectory() && st.dev !== parentDevice;
  }

  /** The marker a child directory holds, if any (it is then left out). */
  markerIn(dir: Buffer, st: BigIntStats): string | undefined {
    if (this.markers.length === 0 || !st.isDirectory()) return undefined;
    return this.markers.find((marker) => existsSync(Buffer.concat([dir, Buffer.from(`/${marker}`)])));
  }
}
