import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RestoreWindow, WINDOW } from '../../../agent/files/restore-window.ts';

function window(queued = { files: 0, bytes: 0 }) {
  let changes = 0;
  const w = new RestoreWindow(queued, () => changes++);
  return { w, changes: () => changes };
}

describe('the restore window', () => {
  it('admits small files up to its file bound when they share frames', () => {
    const { w } = window();
    const slots = [];
    for (let i = 0; i < WINDOW.files; i++) {
      assert.equal(w.full, false, `file ${i}`);
      const slot = w.start(true);
      slot.hold(`pack:${i % 4}`);
      slots.push(slot);
    }
    assert.equal(w.full, true);
    slots[0]?.letGo();
    assert.equal(w.full, false);
  });

  it('counts the distinct frames small files still gathering hold, each once, until the last of them lets go', () => {
    const { w, changes } = window();
    const first = w.start(true);
    const second = w.start(true);
    first.hold('pack:0');
    second.hold('pack:0');
    second.hold('pack:0');
    const others = [];
    for (let frame = 1; frame < WINDOW.frames; frame++) {
      assert.equal(w.full, false, `frame ${frame}`);
      const slot = w.start(true);
      slot.hold(`pack:${frame}`);
      others.push(slot);
    }
    // Frames scattered over many files stop the window long before its file bound.
    assert.equal(w.full, true);
    first.letGo();
    assert.equal(w.full, true, 'frame 0 is still held by the second file');
    second.letGo();
    assert.equal(w.full, false);
    assert.equal(changes(), 2);
    // Letting go twice frees nothing twice; a hold after letting go holds nothing.
    second.letGo();
    second.hold('pack:new');
    assert.equal(changes(), 2);
    const last = w.start(true);
    last.hold('pack:last');
    assert.equal(w.full, true);
    others[0]?.letGo();
    assert.equal(w.full, false);
  });

  it('bounds files written through an open file, whose pieces hold no frames here', () => {
    const { w } = window();
    const slots = [];
    for (let i = 0; i < WINDOW.openFiles; i++) {
      assert.equal(w.full, false, `file ${i}`);
      const slot = w.start(false);
      assert.equal(slot.small, false);
      slot.hold(`pack:${i}`);
      slots.push(slot);
    }
    assert.equal(w.full, true);
    slots[3]?.letGo();
    assert.equal(w.full, false);
    // A small file beside them is not an open file, and only its frame counts.
    w.start(true).hold('pack:small');
    assert.equal(w.full, false);
  });

  it("stops at the writer thread's queue, in files and in bytes", () => {
    const queued = { files: 0, bytes: 0 };
    const { w } = window(queued);
    queued.files = WINDOW.queuedFiles;
    assert.equal(w.full, true);
    queued.files = WINDOW.queuedFiles - 1;
    assert.equal(w.full, false);
    queued.bytes = WINDOW.queuedBytes;
    assert.equal(w.full, true);
    queued.bytes = 0;
    assert.equal(w.full, false);
  });
});
