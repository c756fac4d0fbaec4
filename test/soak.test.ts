// The soak's checker (bench/soak/ledger.js) must catch every kind of broken
// history it claims to catch; a checker that passes everything proves
// nothing. The soak itself runs in CI (`npm run soak -- --seconds 60`).
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { MessageLedger, checkFailure } from '../bench/soak/ledger.js';
import { bucketOf, makeRng, quantileMs, BUCKETS } from '../bench/soak/rng.js';
import { inspectMessage } from '../bench/soak/roles.js';
import { RemoteTraceback, WorkerDiedError } from '../dist/index.js';

function ledgerWith(acked: number, survived = true): MessageLedger {
  const l = new MessageLedger('q');
  l.producerStarted(1);
  expect(l.producerEnded(1, survived, acked)).toBe(null);
  return l;
}

describe('soak ledger', () => {
  it('accepts every message once, in order, across consumers', () => {
    const l = ledgerWith(4);
    expect(l.receive(10, 1, 0, true, 5)).toBe(null);
    expect(l.receive(11, 1, 2, true, 5)).toBe(null);
    expect(l.receive(10, 1, 1, true, 5)).toBe(null);
    expect(l.receive(11, 1, 3, true, 5)).toBe(null);
    expect(l.finish().violations).toEqual([]);
    // Fully received: folded into the counts.
    expect(l.producers.size).toBe(0);
  });

  it('catches a duplicate, even after the producer was folded away', () => {
    const l = ledgerWith(2);
    expect(l.receive(10, 1, 0, true, 1)).toBe(null);
    expect(l.receive(11, 1, 0, true, 1)).toMatch(/arrived twice/);
    expect(l.receive(10, 1, 1, true, 1)).toBe(null);
    expect(l.receive(12, 1, 1, true, 1)).toMatch(/after every message/);
  });

  it('catches a consumer that sees a producer out of order', () => {
    const l = ledgerWith(3);
    expect(l.receive(10, 1, 2, true, 1)).toBe(null);
    expect(l.receive(10, 1, 1, true, 1)).toMatch(/took 1\/1 after 1\/2/);
  });

  it('catches damage, and messages nobody put', () => {
    const l = ledgerWith(1);
    expect(l.receive(10, 1, 0, false, 1)).toMatch(/damaged/);
    expect(l.receive(10, 7, 0, true, 1)).toMatch(/never started/);
    expect(l.receive(10, 1, 1, true, 1)).toMatch(/had 1 puts return/);
  });

  it('allows a killed producer one message past its last acknowledged put, and no more', () => {
    const l = ledgerWith(2, false);
    expect(l.receive(10, 1, 2, true, 1)).toBe(null);
    expect(l.receive(10, 1, 3, true, 1)).toMatch(/had 2 puts return/);
    // Its missing messages are not counted: they may have died in its feeder.
    expect(l.finish().violations).toEqual([]);
  });

  it('counts a survivor\'s missing messages against the consumers killed', () => {
    const l = ledgerWith(3);
    expect(l.receive(10, 1, 0, true, 1)).toBe(null);
    expect(l.receive(10, 1, 2, true, 1)).toBe(null);
    const short = l.finish();
    expect(short.missing).toBe(1);
    expect(short.violations[0]).toMatch(/1 messages of producers that survived never arrived .*more than the 0 consumers killed/);
    l.consumerEnded(10, true);
    expect(l.finish().violations).toEqual([]);
  });

  it('reports a producer that never ended', () => {
    const l = new MessageLedger('q');
    l.producerStarted(1);
    expect(l.finish().violations[0]).toMatch(/producer 1 never ended/);
  });
});

describe('soak checks of pool failures', () => {
  it('accepts WorkerDiedError and a task\'s own error with its RemoteTraceback, nothing else', () => {
    expect(checkFailure('x', new WorkerDiedError('gone', 5, -9), new Set())).toBe(null);
    const own = Object.assign(new Error('task 3 failed on purpose', { cause: new RemoteTraceback('stack', 'worker') }), { name: 'SoakTaskError' });
    expect(checkFailure('x', own, new Set([3]))).toBe(null);
    expect(checkFailure('x', own, new Set([4]))).toMatch(/failed with SoakTaskError/);
    expect(checkFailure('x', Object.assign(new Error('task 3 failed on purpose'), { name: 'SoakTaskError' }), new Set([3]))).toMatch(/RemoteTraceback/);
    expect(checkFailure('x', new Error('ECHILD'), new Set())).toMatch(/failed with Error: ECHILD/);
  });
});

describe('soak messages and figures', () => {
  it('a message read back intact passes its checksum; one changed byte does not', () => {
    const m = Buffer.alloc(16 + 8);
    m.writeUInt32LE(1, 0);
    m.writeUInt32LE(2, 4);
    m.writeUInt32LE(8, 8);
    const seed = (Math.imul(1, 2654435761) + 2) >>> 0;
    m.writeUInt32LE(crc32(m.subarray(16), seed), 12);
    expect(inspectMessage(m)).toEqual([1, 2, 1, 8]);
    m[20] ^= 1;
    expect(inspectMessage(m)[2]).toBe(0);
  });

  it('one seed gives one sequence of choices', () => {
    const a = makeRng(42);
    const b = makeRng(42);
    const xs = Array.from({ length: 100 }, () => a.logInt(1, 1 << 20));
    expect(Array.from({ length: 100 }, () => b.logInt(1, 1 << 20))).toEqual(xs);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(1);
    expect(Math.max(...xs)).toBeLessThanOrEqual(1 << 20);
  });

  it('reads quantiles off the latency histogram', () => {
    const hist = new Int32Array(BUCKETS);
    for (let i = 0; i < 99; i++) hist[bucketOf(100)]++;
    hist[bucketOf(50_000)]++;
    expect(quantileMs(hist, 0.5)).toBeGreaterThanOrEqual(0.1);
    expect(quantileMs(hist, 0.5)).toBeLessThan(0.13);
    expect(quantileMs(hist, 1)).toBeGreaterThanOrEqual(50);
    expect(quantileMs(new Int32Array(BUCKETS), 0.5)).toBe(null);
  });
});
