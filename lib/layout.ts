// The shared-memory layouts of native/layout.h, as word indices into an
// Int32Array over an object's cell. native.layout is the only source.
import { native } from './native.js';

const L = native.layout;
const word = (byteOffset: number): number => byteOffset / 4;

export const CELL_SIZE = L.kCellSize;
export const ARENA_CHUNK_SIZE = L.kArenaChunkSize;
export const PID_MASK = L.kPidMask;
export const WAITERS_BIT = L.kWaitersBit;

export const LOCK_CELLS = L.kLockCells;
export const LOCK_WORD = word(L.kLockWord);
export const LOCK_DEPTH = word(L.kLockDepth);

export const SEM_CELLS = L.kSemCells;
export const SEM_VALUE = word(L.kSemValue);
export const SEM_SLEEPERS = word(L.kSemSleepers);
export const SEM_WAKER_CPU = word(L.kSemWakerCpu);
export const SEM_LOCK = word(L.kSemLock);
export const SEM_INTENT_ROW = word(L.kSemIntentRow);
export const SEM_INTENT_VALUE = word(L.kSemIntentValue);
export const SEM_INTENT_BEFORE = word(L.kSemIntentBefore);
export const SEM_INTENT_AFTER = word(L.kSemIntentAfter);
export const SEM_HOLDERS = word(L.kSemHolders);
export const SEM_HOLDER_SLOTS = L.kSemHolderSlots;
export const SEM_HOLDER_PID = word(L.kSemHolderPid);
export const SEM_HOLDER_COUNT = word(L.kSemHolderCount);
export const SEM_HOLDER_WORDS = word(L.kSemHolderSize);

export const EVENT_CELLS = L.kEventCells;
export const EVENT_WORD = word(L.kEventWord);
export const EVENT_SLEEPERS = word(L.kEventSleepers);
export const EVENT_WAKER_CPU = word(L.kEventWakerCpu);

export const COND_CELLS = L.kCondCells;
export const COND_SEQ = word(L.kCondSeq);
export const COND_SLEEPERS = word(L.kCondSleepers);
export const COND_WAITERS = word(L.kCondWaiters);
export const COND_TOKENS = word(L.kCondTokens);

export const BARRIER_CELLS = L.kBarrierCells;
export const BARRIER_STATE = word(L.kBarrierState);
export const BARRIER_COUNT = word(L.kBarrierCount);

export const POOL_SLOTS = L.kPoolSlots;
export const POOL_TASK_SEQ = word(L.kPoolTaskSeq);
export const POOL_TASK_LENGTHS = word(L.kPoolTaskLengths);
export const POOL_ANSWER_WATCHED = word(L.kPoolAnswerWatched);
export const POOL_TASKER_CPU = word(L.kPoolTaskerCpu);
export const POOL_MORE = word(L.kPoolMore);
export const POOL_RUNNING = word(L.kPoolRunning);
export const POOL_ANSWER_SEQ = word(L.kPoolAnswerSeq);
export const POOL_ANSWER_LENGTHS = word(L.kPoolAnswerLengths);
export const POOL_SLOT_BYTES = L.kPoolSlotBytes;
export const POOL_TASK_BYTES = L.kPoolTaskBytes;
export const POOL_ANSWER_BYTES = L.kPoolAnswerBytes;
export const POOL_MAILBOX_WORDS = word(L.kPoolMailboxSize);
