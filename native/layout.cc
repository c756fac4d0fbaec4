// Exports native/layout.h to JS as native.layout, so TypeScript never
// restates an offset.
#include <napi.h>

#include "layout.h"

namespace nodemp {

void InitLayout(Napi::Env env, Napi::Object exports) {
  using namespace layout;
  Napi::Object o = Napi::Object::New(env);
#define NODEMP_EXPORT(name) o.Set(#name, Napi::Number::New(env, name))
  NODEMP_EXPORT(kCellSize);
  NODEMP_EXPORT(kArenaChunkSize);
  NODEMP_EXPORT(kPidMask);
  NODEMP_EXPORT(kWaitersBit);
  NODEMP_EXPORT(kLockWord);
  NODEMP_EXPORT(kLockDepth);
  NODEMP_EXPORT(kLockCells);
  NODEMP_EXPORT(kSemValue);
  NODEMP_EXPORT(kSemSleepers);
  NODEMP_EXPORT(kSemWakerCpu);
  NODEMP_EXPORT(kSemLock);
  NODEMP_EXPORT(kSemIntentRow);
  NODEMP_EXPORT(kSemIntentValue);
  NODEMP_EXPORT(kSemIntentBefore);
  NODEMP_EXPORT(kSemIntentAfter);
  NODEMP_EXPORT(kSemHolders);
  NODEMP_EXPORT(kSemHolderSlots);
  NODEMP_EXPORT(kSemHolderPid);
  NODEMP_EXPORT(kSemHolderCount);
  NODEMP_EXPORT(kSemHolderSize);
  NODEMP_EXPORT(kSemCells);
  NODEMP_EXPORT(kEventWord);
  NODEMP_EXPORT(kEventSleepers);
  NODEMP_EXPORT(kEventWakerCpu);
  NODEMP_EXPORT(kEventCells);
  NODEMP_EXPORT(kCondSeq);
  NODEMP_EXPORT(kCondSleepers);
  NODEMP_EXPORT(kCondWaiters);
  NODEMP_EXPORT(kCondTokens);
  NODEMP_EXPORT(kCondCells);
  NODEMP_EXPORT(kBarrierState);
  NODEMP_EXPORT(kBarrierCount);
  NODEMP_EXPORT(kBarrierCells);
  NODEMP_EXPORT(kListMagic);
  NODEMP_EXPORT(kListMagicWord);
  NODEMP_EXPORT(kListLength);
  NODEMP_EXPORT(kListEntries);
  NODEMP_EXPORT(kListEntrySize);
  NODEMP_EXPORT(kListEntryOffset);
  NODEMP_EXPORT(kListEntryCapacity);
  NODEMP_EXPORT(kListEntryLength);
  NODEMP_EXPORT(kListEntryType);
  NODEMP_EXPORT(kListAlign);
  NODEMP_EXPORT(kListTypeNull);
  NODEMP_EXPORT(kListTypeBool);
  NODEMP_EXPORT(kListTypeInt);
  NODEMP_EXPORT(kListTypeFloat);
  NODEMP_EXPORT(kListTypeBigInt);
  NODEMP_EXPORT(kListTypeString);
  NODEMP_EXPORT(kListTypeBytes);
  NODEMP_EXPORT(kQueueTail);
  NODEMP_EXPORT(kQueueHead);
  NODEMP_EXPORT(kQueuePuts);
  NODEMP_EXPORT(kQueueUnrecorded);
  NODEMP_EXPORT(kQueueShutdown);
  NODEMP_EXPORT(kQueuePutterCpu);
  NODEMP_EXPORT(kQueueGets);
  NODEMP_EXPORT(kQueueGetterCpu);
  NODEMP_EXPORT(kQueueRecoverer);
  NODEMP_EXPORT(kQueuePutSeq);
  NODEMP_EXPORT(kQueueGetSeq);
  NODEMP_EXPORT(kQueueUnfinished);
  NODEMP_EXPORT(kQueueJoinSleepers);
  NODEMP_EXPORT(kQueueGetSleepSeq);
  NODEMP_EXPORT(kQueuePutSleepSeq);
  NODEMP_EXPORT(kQueueParties);
  NODEMP_EXPORT(kQueuePartySlots);
  NODEMP_EXPORT(kQueuePartySize);
  NODEMP_EXPORT(kQueuePartyPid);
  NODEMP_EXPORT(kQueuePartyStart);
  NODEMP_EXPORT(kQueuePartyKind);
  NODEMP_EXPORT(kQueuePartyPos);
  NODEMP_EXPORT(kQueueKindIdle);
  NODEMP_EXPORT(kQueueKindPutting);
  NODEMP_EXPORT(kQueueKindGetting);
  NODEMP_EXPORT(kQueueKindReleasing);
  NODEMP_EXPORT(kQueueHeaderSize);
  NODEMP_EXPORT(kQueueMetaSize);
  NODEMP_EXPORT(kQueueMetaSeq);
  NODEMP_EXPORT(kQueueMetaInfo);
  NODEMP_EXPORT(kQueueSlotSize);
  NODEMP_EXPORT(kQueueSeqRecovering);
  NODEMP_EXPORT(kPoolSlots);
  NODEMP_EXPORT(kPoolTaskSeq);
  NODEMP_EXPORT(kPoolTaskLengths);
  NODEMP_EXPORT(kPoolAnswerWatched);
  NODEMP_EXPORT(kPoolTaskerCpu);
  NODEMP_EXPORT(kPoolMore);
  NODEMP_EXPORT(kPoolRunning);
  NODEMP_EXPORT(kPoolAnswerSeq);
  NODEMP_EXPORT(kPoolAnswerLengths);
  NODEMP_EXPORT(kPoolSlotBytes);
  NODEMP_EXPORT(kPoolTaskBytes);
  NODEMP_EXPORT(kPoolAnswerBytes);
  NODEMP_EXPORT(kPoolMailboxSize);
#undef NODEMP_EXPORT
  exports.Set("layout", o);
}

}  // namespace nodemp
