import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  applyPolicy,
  bucketKey,
  retentionPolicySchema,
  subtractDuration,
  type RetentionCandidate,
  type RetentionPolicy,
} from '../../../agent/core/retention.ts';
import { Random } from '../../helpers/tree.ts';

interface GoldenCase {
  name: string;
  policy: RetentionPolicy;
  snapshots: Array<{ id: string; time: string; tags?: string[]; pinned?: boolean; damaged?: boolean }>;
  keep: Record<string, string[]>;
  remove: string[];
}

const golden = JSON.parse(readFileSync(new URL('golden/retention.json', import.meta.url), 'utf8')) as GoldenCase[];

describe('retention policy', () => {
  for (const c of golden) {
    it(`golden: ${c.name}`, () => {
      const result = applyPolicy(
        c.snapshots.map((s) => ({ tags: [], ...s })),
        retentionPolicySchema.parse(c.policy),
      );
      assert.deepEqual(Object.fromEntries(result.keep.map((d) => [d.id, d.reasons])), c.keep);
      assert.deepEqual(
        result.remove.map((d) => d.id),
        c.remove,
      );
    });
  }

  it('holds its invariants over random histories and policies', () => {
    const rnd = new Random(2024);
    for (let round = 0; round < 500; round++) {
      const count = rnd.int(60);
      const start = Date.UTC(2024, 0, 1);
      const snapshots: RetentionCandidate[] = Array.from({ length: count }, (_, i) => ({
        id: `s${i}`,
        time: new Date(start + rnd.int(400 * 86_400) * 1000).toISOString(),
        tags: rnd.int(10) === 0 ? ['keep'] : [],
        pinned: rnd.int(20) === 0,
        damaged: rnd.int(8) === 0,
      }));
      const pick = (): number | undefined => (rnd.int(3) === 0 ? undefined : rnd.int(6));
      const policy: RetentionPolicy = {
        keepLast: pick(),
        keepHourly: pick(),
        keepDaily: pick(),
        keepWeekly: pick(),
        keepMonthly: pick(),
        keepYearly: pick(),
        ...(rnd.int(3) === 0 ? { keepWithin: rnd.pick(['1d', '2w', '3M', '36h']) } : {}),
        ...(rnd.int(2) === 0 ? { keepTags: ['keep'] } : {}),
      };
      const { keep, remove } = applyPolicy(snapshots, policy);
      const label = `round ${round}`;
      assert.equal(keep.length + remove.length, snapshots.length, `${label}: kept + removed = all`);
      assert.deepEqual(new Set([...keep, ...remove].map((d) => d.id)), new Set(snapshots.map((s) => s.id)), label);
      for (const d of [...keep, ...remove]) assert.ok(d.reasons.length > 0, `${label}: ${d.id} has a reason`);
      const good = snapshots.filter((s) => !s.damaged).sort((a, b) => Date.parse(b.time) - Date.parse(a.time) || (a.id < b.id ? 1 : -1));
      if (good[0])
        assert.ok(
          keep.some((d) => d.id === good[0]!.id),
          `${label}: newest good snapshot kept`,
        );
      for (const s of snapshots) {
        if (s.damaged || s.pinned || (policy.keepTags && s.tags.includes('keep')))
          assert.ok(
            keep.some((d) => d.id === s.id),
            `${label}: ${s.id} protected`,
          );
      }
      for (const [rule, limit] of [
        ['last', policy.keepLast],
        ['hourly', policy.keepHourly],
        ['daily', policy.keepDaily],
        ['weekly', policy.keepWeekly],
        ['monthly', policy.keepMonthly],
        ['yearly', policy.keepYearly],
      ] as const) {
        const kept = keep.filter((d) => d.reasons.some((r) => r.startsWith(`${rule} `))).length;
        assert.ok(kept <= (limit ?? 0), `${label}: ${rule} keeps ${kept} ≤ ${limit}`);
      }
      for (const d of keep) {
        const s = snapshots.find((x) => x.id === d.id)!;
        if (s.damaged)
          assert.ok(
            d.reasons.every((r) => r.startsWith('damaged') || r === 'pinned' || r.startsWith('tag ')),
            `${label}: a damaged snapshot is never counted`,
          );
      }
    }
  });

  it('buckets and durations follow the calendar in UTC', () => {
    assert.equal(bucketKey(new Date('2026-01-01T00:00:00Z'), 'weekly'), '2026-W01');
    assert.equal(bucketKey(new Date('2027-01-01T00:00:00Z'), 'weekly'), '2026-W53');
    assert.equal(bucketKey(new Date('2026-11-23T14:59:59Z'), 'hourly'), '2026-11-23T14');
    assert.equal(subtractDuration(new Date('2026-03-31T00:00:00Z'), '1M1d').toISOString(), '2026-03-02T00:00:00.000Z');
    assert.throws(() => subtractDuration(new Date(), '7 days'), /invalid duration/);
    assert.equal(retentionPolicySchema.safeParse({ keepWithin: 'forever' }).success, false);
    assert.equal(retentionPolicySchema.safeParse({ keepLastt: 1 }).success, false);
  });

  it('orders by storage time when hosts’ clocks are off, and counts each period once', () => {
    const minute = 60_000;
    const t0 = Date.parse('2026-12-04T23:50:00Z');
    // Stored one per 5 minutes; a, b fast by 10 minutes, c on time, d slow by 10 minutes (the newest).
    const at = (stored: number, skew: number) => ({
      stored: t0 + stored * minute,
      time: new Date(t0 + (stored - 1 + skew) * minute).toISOString(),
    });
    const snaps: RetentionCandidate[] = [
      { id: 'a', tags: [], ...at(0, 10) },
      { id: 'b', tags: [], ...at(5, 10) },
      { id: 'c', tags: [], ...at(10, 0) },
      { id: 'd', tags: [], ...at(15, -10) },
    ];
    const last2 = applyPolicy(snaps, { keepLast: 2 });
    assert.deepEqual(last2.keep.map((d) => d.id).sort(), ['c', 'd'], 'keep-last follows the order the storage stored them in');
    assert.ok(last2.keep.find((d) => d.id === 'd')?.reasons.includes('newest good snapshot'));
    // In storage order the manifest days interleave (d 12-04, c 12-04, b 12-05 by a fast clock, a 12-04):
    // two days, each kept once by its newest-stored snapshot, even when the rule allows three.
    const daily = applyPolicy(snaps, { keepDaily: 3 });
    assert.deepEqual(daily.keep.map((d) => d.id).sort(), ['b', 'd']);
    // Without storage times (a snapshot not read through a repository) the manifest time still orders.
    const bare = applyPolicy(
      snaps.map((s) => ({ id: s.id, time: s.time, tags: s.tags })),
      { keepLast: 1 },
    );
    assert.deepEqual(
      bare.keep.map((d) => d.id),
      ['b'],
    );
  });
});
