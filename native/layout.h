// Every layout nodemp keeps in shared memory, in one place. Offsets are bytes
// from the start of an object's cell; addon.cc exports all of them to JS as
// native.layout, and lib/layout.ts reads them from there (a test checks that
// each name below reaches JS with the same value).
//
// Small objects live in cells carved out of per-process arena chunks (see
// lib/arena.ts). A cell is one cache line, so two locks never share a line
// and contend on each other's traffic.
#pragma once
#include <cstdint>

namespace nodemp {
namespace layout {

constexpr uint32_t kCellSize = 64;
constexpr uint32_t kArenaChunkSize = 64 * 1024;

// A process id lives in the low 30 bits of a lock word (Linux pid_max is at
// most 2^22, macOS pids stay below 100000); bit 30 says that someone sleeps
// or is about to sleep on the word.
constexpr uint32_t kPidMask = (1u << 30) - 1;
constexpr uint32_t kWaitersBit = 1u << 30;

// Lock and RLock: one cell.
constexpr uint32_t kLockWord = 0;   // 0 free; else holder pid | kWaitersBit
constexpr uint32_t kLockDepth = 4;  // RLock recursion depth, written by the holder only
constexpr uint32_t kLockCells = 1;

// Semaphore and BoundedSemaphore: four cells. The holder table remembers, per
// process, how many slots it holds, so the slots of a process that died can
// be given back. The count and the table change together under a short
// bookkeeping lock (the pid of its holder), each change written as an intent
// first: a process killed between the two writes leaves an intent that the
// next taker of the lock completes, so no slot is ever lost or counted twice.
// The lock, the intent and the first five rows share a cache line apart from
// kSemValue: a waiter spinning on kSemValue would otherwise take that line
// back after each of their stores, and an operation touches two lines, as
// before the lock (the ping-pong between two processes was 4 times slower
// with all in one line, 2 times with lock, intent and rows in three).
constexpr uint32_t kSemValue = 0;          // free slots: the futex word
constexpr uint32_t kSemSleepers = 4;       // processes asleep (or going to sleep) on kSemValue
constexpr uint32_t kSemWakerCpu = 8;       // 1 + the CPU of the latest releaser (0: not known), for spin decisions (sched.cc)
constexpr uint32_t kSemLock = 64;          // 0, or the pid changing kSemValue and the table
constexpr uint32_t kSemIntentRow = 68;     // 0, or 1 + the row being changed
constexpr uint32_t kSemIntentValue = 72;   // kSemValue before the change
constexpr uint32_t kSemIntentBefore = 76;  // the row's count before the change
constexpr uint32_t kSemIntentAfter = 80;   // the row's count after it
constexpr uint32_t kSemHolders = 84;       // kSemHolderSlots pairs of (pid, slots held)
constexpr uint32_t kSemHolderSlots = 14;
constexpr uint32_t kSemHolderPid = 0;      // within a pair: 0 free
constexpr uint32_t kSemHolderCount = 4;
constexpr uint32_t kSemHolderSize = 8;
constexpr uint32_t kSemCells = 4;  // 84 + 14 * 8 = 196 bytes

// Event: one cell.
constexpr uint32_t kEventWord = 0;      // (generation << 1) | set
constexpr uint32_t kEventSleepers = 4;
constexpr uint32_t kEventWakerCpu = 8;  // 1 + the CPU of the latest set() (0: not known)
constexpr uint32_t kEventCells = 1;

// Condition: one cell (its lock has its own).
constexpr uint32_t kCondSeq = 0;        // bumped by every notify: the futex word
constexpr uint32_t kCondSleepers = 4;   // processes asleep (or going to sleep) on kCondSeq
constexpr uint32_t kCondWaiters = 8;    // waiters registered under the lock
constexpr uint32_t kCondTokens = 12;    // notifications granted and not yet taken
constexpr uint32_t kCondCells = 1;

// Barrier: one cell (its Condition and lock have their own).
constexpr uint32_t kBarrierState = 0;   // 0 filling, 1 draining, -1 resetting, -2 broken
constexpr uint32_t kBarrierCount = 4;   // processes inside wait()
constexpr uint32_t kBarrierCells = 1;

// ShareableList (lib/shareable-list.ts): a whole named segment of its own,
// not a cell. A header, one entry per item, then each item's storage, 8-byte
// aligned. Numbers are little-endian. Not Python's ShareableList layout.
constexpr uint32_t kListMagic = 0x4c534d4e;  // "NMSL"; written last, once the list is complete
constexpr uint32_t kListMagicWord = 0;       // uint32: kListMagic
constexpr uint32_t kListLength = 4;          // uint32: number of items, fixed at creation
constexpr uint32_t kListEntries = 8;         // the first entry
constexpr uint32_t kListEntrySize = 16;
constexpr uint32_t kListEntryOffset = 0;     // within an entry, uint32: the item's storage, from the segment start
constexpr uint32_t kListEntryCapacity = 4;   // uint32: storage bytes, a multiple of kListAlign (at least 8)
constexpr uint32_t kListEntryLength = 8;     // uint32: bytes a string or bytes item uses
constexpr uint32_t kListEntryType = 12;      // uint32: a kListType code
constexpr uint32_t kListAlign = 8;
constexpr uint32_t kListTypeNull = 0;
constexpr uint32_t kListTypeBool = 1;        // storage: one byte, 0 or 1
constexpr uint32_t kListTypeInt = 2;         // int64, read back as a number
constexpr uint32_t kListTypeFloat = 3;       // float64
constexpr uint32_t kListTypeBigInt = 4;      // int64, read back as a bigint
constexpr uint32_t kListTypeString = 5;      // UTF-8
constexpr uint32_t kListTypeBytes = 6;

// Queue (lib/queue.ts): one mapping of its own. A header, then kQueueMetaSize
// bytes of metadata per slot, then the slots' data (kQueueSlotSize bytes
// each). A message takes one or more consecutive slots (wrapping around the
// end of the data); its first slot's sequence word says whether it is free
// for position p (== p), published at p (== p + 1), or still in use by the
// previous lap. Positions count slots and wrap at 2^32; they are compared by
// 32-bit difference.
//
// Queue recovery: the protocol's invariants (native/ring.cc implements the
// recovery for lib/queue.ts and the feeder alike).
//  1. Rows. A row belongs to the identity in its owner word, (pid, start
//     time), claimed with one 8-byte compare-and-swap; a row is written only
//     by its owner. A row whose owner is dead (gone, a zombie, or its pid now
//     a different process) is free to claim whatever state it was left in:
//     recovery never needs a dead process's row.
//  2. Intent. A process marks its row busy (putting, getting, releasing)
//     before every count change and every compare-and-swap on the tail or
//     head, records the position it is after before that compare-and-swap,
//     and marks it idle again on every way out: published, released, or
//     given up (no room, nothing to take, a value where bytes were asked).
//     So a live process's reservation or claim is always visible in its row
//     to anyone who saw the tail or head already past it.
//  3. What recovery may rewrite. A position is recovered only when the ring
//     itself shows it stuck (the head reserved and not published; a slot
//     still held a lap behind the tail by a message the head is past) and
//     no live row is busy at it. Rows of dead processes only decide whether
//     a taken-back message had already been counted as taken.
//  4. Exclusion. Only the holder of the recovery lock (kQueueRecoverer, an
//     identity; taken over once its holder is dead) recovers, and it first
//     moves the message's first sequence word from the value it judged stuck
//     to p - kQueueSeqRecovering with a compare-and-swap, so a position is
//     recovered once, and never after its owner published or released it.
//     A holder that dies halfway leaves that mark; the next one finishes.
//  5. Skips. A dead producer's reservation at the head is published as a
//     message of tag SKIP covering its slots (up to the next live
//     reservation, published message or the tail; a dead producer's row
//     starting further on splits it), taken and counted like any message:
//     each reservation was counted once in kQueuePuts and is counted once in
//     kQueueGets.
//  6. Counts. kQueuePuts - kQueueGets is the queue's size but for processes
//     busy now and those killed between a count and the ring (or during a
//     recovery); when a waiter finds the ring idle and empty (head == tail,
//     every slot free for its next lap, no live row busy, nothing moved
//     during the check) it sets kQueuePuts to kQueueGets, so such errors do
//     not add up.
//  7. Sleepers announce the sequence they sleep on (kQueueGetSleepSeq,
//     kQueuePutSleepSeq), not a count: a killed sleeper costs one wake.
//  8. Limits: 32 rows, one per process plus one per process whose feeder
//     thread runs; a process that finds no row works unrecorded and is not
//     recovered should it die mid-operation, and marks kQueueUnrecorded: from
//     then on rule 3 also asks for a dead row recording the position, so that
//     a live unrecorded process is never taken for dead. The JoinableQueue
//     count is not repaired.
// Each side counts its own messages on its own cache line, so that puts and
// gets never contend for one counter; the queue's size is their difference.
constexpr uint32_t kQueueTail = 0;            // cell 0, producers: the next position to reserve
constexpr uint32_t kQueuePuts = 4;            // messages put (a bounded put counts itself before reserving)
// 0 running; 1 shut down (no more puts; gets until empty); 2 shut down
// immediately (drained as well). Only ever grows. In the producers' cell:
// every put reads it, no get does until the queue looks empty.
constexpr uint32_t kQueueShutdown = 8;
constexpr uint32_t kQueuePutterCpu = 12;      // 1 + the CPU of the latest producer to publish (0: not known), for spin decisions
constexpr uint32_t kQueueHead = 64;           // cell 1, consumers: the next position to claim
constexpr uint32_t kQueueGets = 68;           // messages taken (or skipped)
constexpr uint32_t kQueueGetterCpu = 72;      // 1 + the CPU of the latest consumer to take a message (0: not known)
// The recovery lock (8 bytes): 0, or the identity (see kQueuePartyPid) of
// the one process that is recovering a position; taken over once it is dead.
constexpr uint32_t kQueueRecoverer = 128;
// 1 once any process found no free row and works unrecorded: from then on a
// position is recovered only where a dead process's row records it (such a
// process, alive, must not be taken for dead). Never cleared.
constexpr uint32_t kQueueUnrecorded = 136;
constexpr uint32_t kQueuePutSeq = 140;        // bumped when a message is published and a consumer sleeps
constexpr uint32_t kQueueGetSeq = 144;        // bumped when room is made and a producer sleeps
constexpr uint32_t kQueueUnfinished = 148;    // JoinableQueue: put and not yet taskDone(); join() sleeps on it
constexpr uint32_t kQueueJoinSleepers = 152;
// Sleepers announce themselves by sequence, not by count (a count of
// sleepers drifts up for good with every sleeper killed): the newest
// kQueuePutSeq value a consumer read before going to sleep. A producer wakes
// consumers only while it equals kQueuePutSeq: once a wake has bumped the
// sequence, every consumer asleep on the old value has been woken (all of
// them are), and the puts that follow need no system call until a consumer
// goes to sleep again. A sleeper killed leaves at most one needless wake.
// Both start at -1 (the sequences at 0), since nobody sleeps on a new queue.
constexpr uint32_t kQueueGetSleepSeq = 156;
constexpr uint32_t kQueuePutSleepSeq = 160;   // the same for producers, on kQueueGetSeq
// Each process writes its entry twice per message; one cache line per entry
// keeps a producer's writes from stealing the line a consumer writes to.
// A row's owner is an identity, (pid, start time) as one 8-byte word, so
// that a pid the system reuses is never taken for the dead owner's; it is
// claimed and taken over with one 8-byte compare-and-swap (see the recovery
// protocol below). A process owns one row, and one more for its feeder thread.
constexpr uint32_t kQueueParties = 192;       // cells 3..: what each process is doing, for recovery after its death
constexpr uint32_t kQueuePartySlots = 32;
constexpr uint32_t kQueuePartySize = 64;
constexpr uint32_t kQueuePartyPid = 0;        // within an entry: 0 free
constexpr uint32_t kQueuePartyStart = 4;      // the owner's start time (0: unknown, judged by its pid alone)
constexpr uint32_t kQueuePartyKind = 8;       // a kQueueKind code
constexpr uint32_t kQueuePartyPos = 12;       // the position it is reserving or has claimed
constexpr uint32_t kQueueKindIdle = 0;
constexpr uint32_t kQueueKindPutting = 1;     // from before counting itself in kQueuePuts until published (or given up)
constexpr uint32_t kQueueKindGetting = 2;     // from before claiming until counted in kQueueGets
constexpr uint32_t kQueueKindReleasing = 3;   // counted, handing the slots back
constexpr uint32_t kQueueHeaderSize = kQueueParties + kQueuePartySlots * kQueuePartySize;
// Slot s's metadata is entry (s % 8) * (slots / 8) + s / 8: consecutive slots
// use different cache lines, so a consumer handing back slot p does not pull
// away the line a producer writes slot p + 1's sequence word into.
constexpr uint32_t kQueueMetaSize = 8;
constexpr uint32_t kQueueMetaSeq = 0;         // within a slot's metadata
constexpr uint32_t kQueueMetaInfo = 4;        // first slot of a message: (encoding tag << 24) | byte length
constexpr uint32_t kQueueSlotSize = 64;
// A first slot's sequence word while the recovery lock's holder rewrites
// that message (p - 1 for position p: no side acts on it).
constexpr uint32_t kQueueSeqRecovering = 1;

// Pool (lib/pool.ts): each worker's mailbox, beside its task Queue. Small
// tasks (lib/codec.ts's small format) for a worker that holds no task sent
// through its ring are written here, not into the ring, and so are their
// answers: kPoolSlots fixed slots each way, taken in turn, one sequence word
// and one wake per message, none of the ring's bookkeeping. Every mailed
// task is answered with a count in kPoolAnswerSeq, the answer itself in its
// slot or, when it does not fit (a failure, a large value), in the result
// ring first. Each word has one writer: the pool writes cell 0, the worker
// cell 1; each side counts what it has read in its own memory. A side never
// writes slot n % kPoolSlots before the other has read message
// n - kPoolSlots: the pool mails no more than kPoolSlots tasks it has no
// answer for.
constexpr uint32_t kPoolSlots = 4;
constexpr uint32_t kPoolTaskSeq = 0;          // pool: tasks written
constexpr uint32_t kPoolTaskLengths = 4;      // pool: each task slot's length, kPoolSlots words
constexpr uint32_t kPoolAnswerWatched = 20;   // pool: while it sleeps on kPoolAnswerSeq, a tag of the count it waits for (0: none); the worker that publishes that count takes it and wakes the pool
constexpr uint32_t kPoolTaskerCpu = 24;       // pool: 1 + the CPU it last mailed a task from (0: not known), for the worker's spin decision
constexpr uint32_t kPoolMore = 28;            // pool: 1 if it had more tasks to hand out when it sent this worker its latest one (the worker then sleeps as SCHED_BATCH)
constexpr uint32_t kPoolRunning = 64;         // worker: the batch it runs, or minus the batch it finished
constexpr uint32_t kPoolAnswerSeq = 68;       // worker: answers written
constexpr uint32_t kPoolAnswerLengths = 72;   // worker: each answer slot's length, kPoolSlots words; 0: the answer went through the ring
// A slot's bytes: most tasks and answers of small values fit; a larger one
// (the small format goes to 1 KiB) takes the rings. A mailbox is 2 KiB of
// an arena chunk (kArenaChunkSize), not 8: a pool that replaces its workers
// often takes a new one for each.
constexpr uint32_t kPoolSlotBytes = 256;
constexpr uint32_t kPoolTaskBytes = 128;
constexpr uint32_t kPoolAnswerBytes = kPoolTaskBytes + kPoolSlots * kPoolSlotBytes;
constexpr uint32_t kPoolMailboxSize = kPoolAnswerBytes + kPoolSlots * kPoolSlotBytes;

}  // namespace layout
}  // namespace nodemp
