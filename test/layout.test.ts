// native/layout.h is the one source of every shared-memory offset: each
// constant must reach JS unchanged, and lib/layout.ts must derive from them.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { native } from '../dist/native.js';
import * as layout from '../dist/layout.js';
import { SMALL_BYTES } from '../dist/codec.js';
import { root } from './helpers.js';

function headerConstants(): Map<string, number> {
  const source = readFileSync(join(root, 'native', 'layout.h'), 'utf8');
  const out = new Map<string, number>();
  for (const [, name, expr] of source.matchAll(/constexpr\s+uint32_t\s+(\w+)\s*=\s*([^;]+);/g)) {
    const known = [...out.entries()].map(([k, v]) => `const ${k} = ${v};`).join('');
    out.set(name, Number(new Function(`${known} return (${expr.replace(/(\d)u\b/g, '$1')}) >>> 0;`)()));
  }
  return out;
}

describe('shared-memory layout', () => {
  it('exports every constant of native/layout.h with the same value', () => {
    const header = headerConstants();
    expect(header.size).toBeGreaterThan(20);
    for (const [name, value] of header) expect(native.layout[name], name).toBe(value);
    expect(Object.keys(native.layout).sort()).toEqual([...header.keys()].sort());
  });

  it('lib/layout.ts turns byte offsets into word indices of the same constants', () => {
    const L = native.layout;
    expect(layout.LOCK_WORD * 4).toBe(L.kLockWord);
    expect(layout.LOCK_DEPTH * 4).toBe(L.kLockDepth);
    expect(layout.SEM_HOLDERS * 4).toBe(L.kSemHolders);
    expect(layout.SEM_LOCK * 4).toBe(L.kSemLock);
    expect(layout.SEM_INTENT_AFTER * 4).toBe(L.kSemIntentAfter);
    expect(layout.SEM_HOLDER_WORDS * 4).toBe(L.kSemHolderSize);
    expect(layout.COND_TOKENS * 4).toBe(L.kCondTokens);
    expect(layout.BARRIER_COUNT * 4).toBe(L.kBarrierCount);
    expect(layout.EVENT_SLEEPERS * 4).toBe(L.kEventSleepers);
    expect(layout.EVENT_WAKER_CPU * 4).toBe(L.kEventWakerCpu);
    expect(layout.SEM_WAKER_CPU * 4).toBe(L.kSemWakerCpu);
    expect(layout.POOL_TASKER_CPU * 4).toBe(L.kPoolTaskerCpu);
    expect(layout.POOL_MORE * 4).toBe(L.kPoolMore);
    expect(layout.POOL_ANSWER_SEQ * 4).toBe(L.kPoolAnswerSeq);
    expect(layout.POOL_ANSWER_WATCHED * 4).toBe(L.kPoolAnswerWatched);
    expect(layout.POOL_MAILBOX_WORDS * 4).toBe(L.kPoolMailboxSize);
  });

  it("a Pool mailbox's slots take small-format messages, and its words do not overlap", () => {
    const L = native.layout;
    expect(L.kPoolSlotBytes).toBeGreaterThanOrEqual(64);
    expect(L.kPoolSlotBytes).toBeLessThanOrEqual(SMALL_BYTES);
    expect(L.kPoolMailboxSize).toBeLessThanOrEqual(L.kArenaChunkSize / 16);
    expect(L.kPoolSlots & (L.kPoolSlots - 1)).toBe(0);
    // The pool's words, the worker's words and the slots, in that order, the two sides' words in different cache lines.
    expect(L.kPoolTaskLengths + 4 * L.kPoolSlots).toBeLessThanOrEqual(L.kPoolAnswerWatched);
    expect(L.kPoolAnswerWatched + 4).toBeLessThanOrEqual(L.kPoolTaskerCpu);
    expect(L.kPoolTaskerCpu + 4).toBeLessThanOrEqual(L.kPoolMore);
    expect(L.kPoolMore + 4).toBeLessThanOrEqual(L.kCellSize);
    expect(L.kPoolRunning).toBe(L.kCellSize);
    expect(L.kPoolAnswerLengths + 4 * L.kPoolSlots).toBeLessThanOrEqual(L.kPoolTaskBytes);
  });

  it('fits every object in the cells it claims', () => {
    const L = native.layout;
    expect(L.kSemHolders + L.kSemHolderSlots * L.kSemHolderSize).toBeLessThanOrEqual(L.kSemCells * L.kCellSize);
    expect(L.kLockDepth + 4).toBeLessThanOrEqual(L.kLockCells * L.kCellSize);
    expect(L.kCondTokens + 4).toBeLessThanOrEqual(L.kCondCells * L.kCellSize);
    expect(L.kPidMask & L.kWaitersBit).toBe(0);
    // Each CPU word sits in the cache line its writer writes anyway.
    expect(L.kSemWakerCpu + 4).toBeLessThanOrEqual(L.kSemLock);
    expect(L.kEventWakerCpu + 4).toBeLessThanOrEqual(L.kEventCells * L.kCellSize);
    expect(L.kQueuePutterCpu + 4).toBeLessThanOrEqual(L.kQueueHead);
    expect(L.kQueueGetterCpu + 4).toBeLessThanOrEqual(L.kQueueRecoverer);
  });
});
