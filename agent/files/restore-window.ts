/**
 * Files a restore starts before the earlier ones are done (restorer.ts), bounded by what they hold.
 * Small files of one piece (nearly all small files) do not come this way: they are queued and read
 * frame by frame (small-file-plan.ts). The rest do: larger files, and small files of several slices.
 *
 * Small files are bound by per-file system calls and round trips, not bandwidth: the writer thread
 * takes them in batches (small-file-writers.ts), and a frame is read only once a file in it is
 * started. With 32 files in flight the main thread waited for each batch before it could gather
 * the next and the reads went one frame at a time: no thread of a 20,000-file restore was more
 * than half busy (docs/performance-notes.md). Hundreds of small files may be in flight, but what
 * they hold is bounded apart:
 * - a small file's piece keeps its whole frame (~1 MiB) until the file's bytes are copied out, so
 *   the distinct frames held by files still gathering their pieces are counted (files scattered
 *   over many frames, as deduplication against older backups lays them out, stop the window
 *   early);
 * - a file larger than the small-file size holds an open file until it is complete;
 * - gathered files waiting for the writer thread hold copies of their bytes (SmallFileWriters.queued).
 */
export const WINDOW = {
  /** Files started and not yet done or handed to the writer thread. */
  files: 512,
  /** Of those, files written by the main thread through an open file; well below the usual limit of 1,024. */
  openFiles: 32,
  /** Distinct frames the files still gathering their pieces read from. */
  frames: 32,
  /** Files gathered and waiting for the writer thread, and their bytes. */
  queuedFiles: 4096,
  queuedBytes: 32 << 20,
};

/** One started file's place in the window. */
export interface WindowSlot {
  /** Whether the file is gathered whole for the writer thread (only such files hold frames here). */
  readonly small: boolean;
  /** The file read a piece of this frame, which it holds until let go. */
  readonly hold: (frame: string) => void;
  /** The file no longer holds frames or an open file: handed to the writer thread, done, or failed. Idempotent. */
  readonly letGo: () => void;
}

export class RestoreWindow {
  private files = 0;
  private openFiles = 0;
  /** Frame → files still gathering that read from it. */
  private readonly frames = new Map<string, number>();
  private readonly queued: { readonly files: number; readonly bytes: number };
  private readonly changed: () => void;

  /** `queued`: the writer thread's queue; `changed`: called when room was made. */
  constructor(queued: { readonly files: number; readonly bytes: number }, changed: () => void) {
    this.queued = queued;
    this.changed = changed;
  }

  /** Whether the next file must wait (the walk waits, so nothing past the bounds is read). */
  get full(): boolean {
    return (
      this.files >= WINDOW.files ||
      this.openFiles >= WINDOW.openFiles ||
      this.frames.size >= WINDOW.frames ||
      this.queued.files >= WINDOW.queuedFiles ||
      this.queued.bytes >= WINDOW.queuedBytes
    );
  }

  /** `small`: gathered whole and handed to the writer thread; otherwise written here through an open file. */
  start(small: boolean): WindowSlot {
    this.files++;
    if (!small) this.openFiles++;
    const mine = new Set<string>();
    let held = true;
    return {
      small,
      hold: (frame) => {
        // A larger file's pieces are written and released one by one, within the read-ahead.
        if (!small || !held || mine.has(frame)) return;
        mine.add(frame);
        this.frames.set(frame, (this.frames.get(frame) ?? 0) + 1);
      },
      letGo: () => {
        if (!held) return;
        held = false;
        this.files--;
        if (!small) this.openFiles--;
        for (const frame of mine) {
          const left = (this.frames.get(frame) ?? 1) - 1;
          if (left > 0) this.frames.set(frame, left);
          else this.frames.delete(frame);
        }
        mine.clear();
        this.changed();
      },
    };
  }
}
