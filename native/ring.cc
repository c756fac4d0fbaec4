// The feeder of unbounded queues (lib/queue.ts). put() on an unbounded Queue
// never blocks, as in Python; a message that finds the ring full is handed to
// this thread, which writes it (and every later message of this process for
// that queue, in order) as consumers make room. The thread is what lets the
// messages through while the JS thread itself is blocked, in joinSync() for
// instance, exactly as Python's feeder thread does. The ring protocol here is
// the one lib/queue.ts implements (Ring.tryPut), on the layout of layout.h.
//
// Recovery after a process dies mid-operation lives here only, for the
// feeder and for lib/queue.ts alike (queueRecover, queueRow): see "Recovery"
// below and the protocol's invariants in layout.h.
//
// A queue with messages waiting keeps the event loop alive (the process does
// not end before they are in the ring); drain() blocks until they are, for
// the exit path. A forked child starts with no feeder: the parent's waiting
// messages are the parent's to deliver.
#include <napi.h>
#include <uv.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <mutex>
#include <vector>

#include "errors.h"
#include "internal.h"
#include "layout.h"

namespace nodemp {

using namespace layout;

struct Message {
  uint32_t tag;
  std::vector<uint8_t> body;
  // A large message still as its bytes (see Place).
  bool large = false;
};

void TrackerUnregister(const std::string& name);

struct Feed {
  uint8_t* base = nullptr;  // the queue's mapping
  uint32_t slots = 0;
  uint64_t self = 0;        // this process's identity (see kQueuePartyPid)
  int32_t party_row = -1;   // this feeder's row in the party table
  bool joinable = false;
  std::deque<Message> messages;            // guarded by mu
  // messages.size(), stored on every change, for JS to read with
  // Atomics.load: a put checks it every time, and a call into C++ for it
  // would cost more than the put.
  int32_t pending = 0;
  Napi::Reference<Napi::ArrayBuffer> keep;  // event-loop thread only: the mapping stays while messages wait
  bool kept = false;                        // event-loop thread only
  // Its environment ended (a worker thread exited): its mapping is about to
  // go, its messages are dropped, and the feeder leaves it alone. Guarded by mu.
  bool dead = false;
};

static std::mutex* mu = new std::mutex;
static std::condition_variable* changed = new std::condition_variable;
static std::vector<Feed*> feeds;   // guarded by mu; a feed lives as long as the process
static size_t waiting = 0;         // messages in all feeds, guarded by mu
static bool thread_running = false;
// The thread is created and not yet running its loop: fork() waits (see
// waiter.cc: a starting thread may hold runtime locks the child would inherit).
static bool thread_starting = false;
// The thread runs, with mu released, code that takes the segment tracker's
// lock (making a segment, or recovery removing one): fork() waits, or the
// child would inherit that lock held.
static bool outside = false;
static uv_async_t* drained_async = nullptr;
static napi_env drained_env = nullptr;
// The feed whose mapping the feeder uses with mu released, or null: an
// ending environment waits until it is not one of its own. Guarded by mu.
static Feed* in_use = nullptr;

// The queue's mapping, whoever uses it: a feed, or a call from lib/queue.ts.
struct RingView {
  uint8_t* base;
  uint32_t slots;
};

static int32_t* Word(const RingView& r, uint32_t byte_offset) { return reinterpret_cast<int32_t*>(r.base + byte_offset); }
static uint64_t* Word64(const RingView& r, uint32_t byte_offset) { return reinterpret_cast<uint64_t*>(r.base + byte_offset); }
// As Ring.metaOf in lib/queue.ts: consecutive slots' metadata a stride apart.
static int32_t* Meta(const RingView& r, uint32_t pos) {
  uint32_t slot = pos & (r.slots - 1);
  uint32_t at = (slot & 7) * (r.slots / 8) + (slot >> 3);
  return reinterpret_cast<int32_t*>(r.base + kQueueHeaderSize + at * kQueueMetaSize);
}
static int32_t* Seq(const RingView& r, uint32_t pos) { return Meta(r, pos) + kQueueMetaSeq / 4; }
static uint8_t* Data(const RingView& r) { return r.base + kQueueHeaderSize + r.slots * kQueueMetaSize; }
static int32_t* Party(const RingView& r, uint32_t row, uint32_t field) {
  return Word(r, kQueueParties + row * kQueuePartySize + field);
}

static int32_t Load(int32_t* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static void Store(int32_t* p, int32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static bool Cas(int32_t* p, int32_t expected, int32_t desired) {
  return __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
static void Add(int32_t* p, int32_t v) { __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static uint64_t Load64(uint64_t* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static bool Cas64(uint64_t* p, uint64_t expected, uint64_t desired) {
  return __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
// Positions wrap at 2^32: compared by difference.
static int32_t Diff(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b); }
static int32_t Pos(uint32_t p) { return static_cast<int32_t>(p); }

static int32_t SlotsForLength(uint32_t len) {
  return len == 0 ? 1 : static_cast<int32_t>((len + kQueueSlotSize - 1) / kQueueSlotSize);
}
static int32_t SlotsFor(const Message& m) { return SlotsForLength(static_cast<uint32_t>(m.body.size())); }

// Encoding tags lib/queue.ts gives the ring (see SIDE and SKIP there).
constexpr uint32_t kTagSide = 0x40;
constexpr uint32_t kTagSkip = 0x7f;
constexpr uint32_t kLengthMask = 0xffffff;

// ---- identities ---------------------------------------------------------

// (pid, start time) as a row's owner word holds it: a pid reused by a new
// process does not make a dead owner look alive.
static uint64_t IdentityOf(pid_t pid) {
  return static_cast<uint32_t>(pid) | static_cast<uint64_t>(PidStart(pid)) << 32;
}

static bool Alive(uint64_t id) {
  pid_t pid = static_cast<pid_t>(id & 0xffffffffu);
  uint32_t start = static_cast<uint32_t>(id >> 32);
  if (pid <= 0) return false;
  return start == 0 ? PidAlive(pid) : PidStart(pid) == start;
}

// A row for `self`: a free one, else one whose owner died (idle rows first,
// so that what a dead process was doing stays readable for a while), taken
// with one compare-and-swap of the owner word whatever state it was left in.
// A row is written by its owner only: nobody else may store into a row it
// merely judged dead, since it may have been taken meanwhile.
static int32_t ClaimRow(const RingView& r, uint64_t self) {
  for (int pass = 0; pass < 3; pass++) {
    for (uint32_t i = 0; i < kQueuePartySlots; i++) {
      uint64_t* owner = Word64(r, kQueueParties + i * kQueuePartySize + kQueuePartyPid);
      uint64_t id = Load64(owner);
      bool take;
      if (pass == 0) take = id == 0;
      else take = id != 0 && id != self && (pass == 2 || Load(Party(r, i, kQueuePartyKind)) == static_cast<int32_t>(kQueueKindIdle)) && !Alive(id);
      if (take && Cas64(owner, id, self)) {
        Store(Party(r, i, kQueuePartyKind), kQueueKindIdle);
        return static_cast<int32_t>(i);
      }
    }
  }
  Store(Word(r, kQueueUnrecorded), 1);
  return -1;
}

// ---- waking -------------------------------------------------------------

// Wakes the sleepers of one side once per sleep (see kQueueGetSleepSeq): a
// sleeper announced `seq`, and it is still the sequence's value.
static void WakeIfAnnounced(const RingView& r, uint32_t seq_at, uint32_t announced_at) {
  int32_t* seq_word = Word(r, seq_at);
  int32_t seq = Load(seq_word);
  if (Load(Word(r, announced_at)) == seq && Cas(seq_word, seq, Pos(static_cast<uint32_t>(seq) + 1))) {
    WakeWord(reinterpret_cast<uint32_t*>(seq_word), INT32_MAX);
  }
}

// Recovery changed the ring behind everyone's back: wake every sleeper.
static void WakeAll(const RingView& r, uint32_t seq_at) {
  int32_t* seq_word = Word(r, seq_at);
  Add(seq_word, 1);
  WakeWord(reinterpret_cast<uint32_t*>(seq_word), INT32_MAX);
}

// ---- recovery -------------------------------------------------------------
//
// Only the holder of the recovery lock rewrites a position that a dead
// process left behind, so each is recovered by exactly one process; one that
// dies holding the lock loses it to the next, which finds the position's
// first slot marked (sequence p - kQueueSeqRecovering) and finishes the job.
// Everything recovery decides is read from the ring itself; the rows only
// tell whether a live process is on a position.

static bool LockRecovery(const RingView& r, uint64_t self) {
  uint64_t* lock = Word64(r, kQueueRecoverer);
  uint64_t holder = Load64(lock);
  if (holder == 0) return Cas64(lock, 0, self);
  if (holder == self || Alive(holder)) return false;
  return Cas64(lock, holder, self);
}

static void UnlockRecovery(const RingView& r) { __atomic_store_n(Word64(r, kQueueRecoverer), uint64_t{0}, __ATOMIC_SEQ_CST); }

// Rows whose owner is alive and doing `kind` (either busy kind when 0) at
// position `pos`; or, `live` false, rows of dead owners.
static int CountRows(const RingView& r, uint32_t kind, uint32_t pos, bool live) {
  int n = 0;
  for (uint32_t i = 0; i < kQueuePartySlots; i++) {
    uint64_t id = Load64(Word64(r, kQueueParties + i * kQueuePartySize + kQueuePartyPid));
    if (id == 0) continue;
    uint32_t k = static_cast<uint32_t>(Load(Party(r, i, kQueuePartyKind)));
    if (k == kQueueKindIdle || (kind != 0 && k != kind)) continue;
    if (static_cast<uint32_t>(Load(Party(r, i, kQueuePartyPos))) != pos) continue;
    if (Alive(id) == live) n++;
  }
  return n;
}

// Whether recovery at `pos` needs a dead row recording it there (rule 8 of
// the protocol in layout.h): yes once some process works unrecorded.
static bool DeadRowNeeded(const RingView& r, uint32_t pos, uint32_t kind, uint32_t also = 0) {
  if (Load(Word(r, kQueueUnrecorded)) == 0) return false;
  return CountRows(r, kind, pos, false) == 0 && (also == 0 || CountRows(r, also, pos, false) == 0);
}

// The head is reserved and not published, and no live process says it is
// putting there: its producer died. Publishes the reservation as skipped, up
// to the next position that a live producer (or a published message, or the
// tail) starts; a dead producer's row that starts further on splits it, so
// that each dead reservation, counted once in kQueuePuts, is taken once.
static bool RecoverHead(const RingView& r) {
  uint32_t head = static_cast<uint32_t>(Load(Word(r, kQueueHead)));
  int32_t s = Load(Seq(r, head));
  bool resumed = s == Pos(head - kQueueSeqRecovering);
  if (!resumed && s != Pos(head)) return false;
  uint32_t tail = static_cast<uint32_t>(Load(Word(r, kQueueTail)));
  uint32_t limit = kLengthMask / kQueueSlotSize;
  bool any = false;
  uint32_t start = head;
  uint32_t q = head;
  for (;;) {
    // [start, q) is one dead reservation (or several whose rows are gone).
    // The rows are read before the sequence word: a live producer at q
    // publishes before it marks its row idle, so a row seen idle here means a
    // publish that the read of the word after it sees.
    bool end = q == tail || Diff(q, tail) > 0 || q - start >= limit || CountRows(r, kQueueKindPutting, q, true) > 0 ||
               (q != head && Load(Seq(r, q)) != Pos(q));
    bool split = !end && q != start && CountRows(r, kQueueKindPutting, q, false) > 0;
    if ((end || split) && q != start) {
      if (!(start == head && resumed) && DeadRowNeeded(r, start, kQueueKindPutting)) break;
      int32_t* seq = Seq(r, start);
      if (!(start == head && resumed) && !Cas(seq, Pos(start), Pos(start - kQueueSeqRecovering))) break;
      Meta(r, start)[kQueueMetaInfo / 4] = static_cast<int32_t>((kTagSkip << 24) | ((q - start) * kQueueSlotSize));
      Store(seq, Pos(start + 1));
      any = true;
      start = q;
    }
    if (end) break;
    q++;
  }
  if (any) WakeAll(r, kQueuePutSeq);
  return any;
}

// Removes the named segment a large message travels in (the consumer that
// took it died; nobody else will).
static void UnlinkSide(const RingView& r, uint32_t pos, uint32_t len) {
  uint32_t data_bytes = r.slots * kQueueSlotSize;
  uint32_t at = (pos & (r.slots - 1)) * kQueueSlotSize;
  std::string name(len, '\0');
  for (uint32_t k = 0; k < len; k++) name[k] = static_cast<char>(Data(r)[(at + k) % data_bytes]);
  shm_unlink(("/" + name).c_str());
  TrackerUnregister(name);
}

// A producer at the tail finds a slot still held from the previous lap by a
// message that a consumer claimed and never handed back, and no live process
// says it is getting it: its consumer died. Hands its slots back; the message
// is lost with its consumer, counted as taken unless the dead consumer's row
// (if still there) says it had counted it.
static bool RecoverSlot(const RingView& r) {
  uint32_t tail = static_cast<uint32_t>(Load(Word(r, kQueueTail)));
  uint32_t q = tail;
  uint32_t j = 0;
  for (; j < r.slots; j++, q++) {
    if (Diff(static_cast<uint32_t>(Load(Seq(r, q))), q) < 0) break;
  }
  if (j == r.slots) return false;
  uint32_t lap_before = q - r.slots;
  uint32_t head = static_cast<uint32_t>(Load(Word(r, kQueueHead)));
  if (Diff(head, lap_before) <= 0) return false;
  // Back to the message's first slot: its slots before lap_before are still
  // held too (slots are handed back last first).
  uint32_t start = lap_before;
  int32_t s;
  for (j = 0;; j++, start--) {
    s = Load(Seq(r, start));
    if (s == Pos(start + 1) || s == Pos(start - kQueueSeqRecovering)) break;
    if (s != Pos(start) || j >= r.slots) return false;
  }
  bool resumed = s == Pos(start - kQueueSeqRecovering);
  uint32_t info = static_cast<uint32_t>(Meta(r, start)[kQueueMetaInfo / 4]);
  uint32_t used = static_cast<uint32_t>(SlotsForLength(info & kLengthMask));
  if (Diff(start + used, lap_before) <= 0 || Diff(head, start + used) < 0) return false;
  if (CountRows(r, kQueueKindGetting, start, true) + CountRows(r, kQueueKindReleasing, start, true) > 0) return false;
  if (!resumed && DeadRowNeeded(r, start, kQueueKindGetting, kQueueKindReleasing)) return false;
  bool counted = CountRows(r, kQueueKindReleasing, start, false) > 0;
  if (!resumed && !Cas(Seq(r, start), Pos(start + 1), Pos(start - kQueueSeqRecovering))) return false;
  if (!counted) Add(Word(r, kQueueGets), 1);
  uint32_t tag = info >> 24;
  if (tag != kTagSkip && (tag & kTagSide) != 0) UnlinkSide(r, start, info & kLengthMask);
  // Last slot first, as Ring.#release in lib/queue.ts: see there.
  for (uint32_t k = used; k-- > 0;) Store(Seq(r, start + k), Pos(start + k + r.slots));
  WakeAll(r, kQueueGetSeq);
  return true;
}

// Counts that disagree with a ring that holds nothing are put right: with
// head == tail, every slot free for its next lap and no live process busy,
// the queue is empty, so kQueuePuts must equal kQueueGets. A process killed
// between changing a count and the ring (or a recovery that could not tell
// whether a dead consumer had counted its message) leaves them apart by one;
// this keeps such errors from adding up. Every count change happens while its
// process's row is busy, and the values read twice around the row scan show
// that none happened meanwhile.
static bool RepairCounts(const RingView& r) {
  int32_t puts = Load(Word(r, kQueuePuts));
  int32_t gets = Load(Word(r, kQueueGets));
  int32_t head = Load(Word(r, kQueueHead));
  int32_t tail = Load(Word(r, kQueueTail));
  if (puts == gets || head != tail) return false;
  for (uint32_t k = 0; k < r.slots; k++) {
    uint32_t p = static_cast<uint32_t>(tail) + k;
    if (Load(Seq(r, p)) != Pos(p)) return false;
  }
  for (uint32_t i = 0; i < kQueuePartySlots; i++) {
    uint64_t id = Load64(Word64(r, kQueueParties + i * kQueuePartySize + kQueuePartyPid));
    if (id != 0 && Load(Party(r, i, kQueuePartyKind)) != static_cast<int32_t>(kQueueKindIdle) && Alive(id)) return false;
  }
  if (Load(Word(r, kQueuePuts)) != puts || Load(Word(r, kQueueGets)) != gets || Load(Word(r, kQueueHead)) != head ||
      Load(Word(r, kQueueTail)) != tail) {
    return false;
  }
  if (!Cas(Word(r, kQueuePuts), puts, gets)) return false;
  WakeAll(r, kQueueGetSeq);
  return true;
}

enum Side { kConsumer = 0, kProducer = 1 };

// One recovery attempt for a side that has waited a while: a consumer on an
// empty head, a producer on a full ring (or a bounded queue's count). A
// consumer also takes back a dead consumer's slots while the counts say a
// message is missing (its dead consumer never counted it), so that an idle
// queue ends up with every slot free and its counts repaired; with the counts
// equal it spares itself the scan of the ring every wait.
static bool Recover(const RingView& r, uint64_t self, Side side) {
  if (!LockRecovery(r, self)) return false;
  bool changed = side == kConsumer ? RecoverHead(r) || (Load(Word(r, kQueuePuts)) != Load(Word(r, kQueueGets)) && RecoverSlot(r))
                                   : RecoverSlot(r);
  if (!changed) changed = RepairCounts(r);
  UnlockRecovery(r);
  return changed;
}

// ---- the feeder's put ------------------------------------------------------

static RingView ViewOf(Feed* f) { return RingView{f->base, f->slots}; }

// Ring.#ahead: for the `used` slots from position `pos`, 0 if all are free
// for it, < 0 if one is still held from the previous lap, > 0 if someone
// reserved past `pos` meanwhile.
static int32_t Ahead(const RingView& r, uint32_t pos, int32_t used) {
  int32_t ahead = 0;
  for (int32_t j = 0; j < used && ahead == 0; j++) {
    uint32_t p = pos + static_cast<uint32_t>(j);
    ahead = Diff(static_cast<uint32_t>(Load(Seq(r, p))), p);
  }
  return ahead;
}

// Ring.tryPut for an unbounded queue, on the same row protocol: busy before
// counting, idle again on every way out.
static bool TryPut(Feed* f, const Message& m) {
  RingView r = ViewOf(f);
  uint32_t len = static_cast<uint32_t>(m.body.size());
  int32_t used = SlotsFor(m);
  int32_t row = f->party_row;
  if (row >= 0) Store(Party(r, row, kQueuePartyKind), kQueueKindPutting);
  Add(Word(r, kQueuePuts), 1);
  uint32_t pos;
  for (;;) {
    pos = static_cast<uint32_t>(Load(Word(r, kQueueTail)));
    int32_t ahead = Ahead(r, pos, used);
    if (ahead < 0) {
      Add(Word(r, kQueuePuts), -1);
      if (row >= 0) Store(Party(r, row, kQueuePartyKind), kQueueKindIdle);
      return false;
    }
    if (ahead > 0) continue;
    if (row >= 0) *Party(r, row, kQueuePartyPos) = Pos(pos);
    if (Cas(Word(r, kQueueTail), Pos(pos), Pos(pos + static_cast<uint32_t>(used)))) break;
  }
  uint32_t data_bytes = f->slots * kQueueSlotSize;
  uint32_t start = (pos & (f->slots - 1)) * kQueueSlotSize;
  uint32_t room = data_bytes - start;
  uint8_t* data = Data(r);
  if (len <= room) {
    std::memcpy(data + start, m.body.data(), len);
  } else {
    std::memcpy(data + start, m.body.data(), room);
    std::memcpy(data, m.body.data() + room, len - room);
  }
  Meta(r, pos)[kQueueMetaInfo / 4] = static_cast<int32_t>((m.tag << 24) | len);
  if (f->joinable) Add(Word(r, kQueueUnfinished), 1);
  // As Ring.tryPut: the consumers' spin decision (lib/spin.ts), this thread's CPU.
  *Word(r, kQueuePutterCpu) = CpuTag();
  Store(Seq(r, pos), Pos(pos + 1));
  if (row >= 0) Store(Party(r, row, kQueuePartyKind), kQueueKindIdle);
  WakeIfAnnounced(r, kQueuePutSeq, kQueueGetSleepSeq);
  return true;
}

// Ring.#announceSleep: the announced sequence never goes back.
static void AnnounceSleep(const RingView& r, uint32_t announced_at, int32_t seq) {
  int32_t* word = Word(r, announced_at);
  for (;;) {
    int32_t cur = Load(word);
    if (Diff(static_cast<uint32_t>(seq), static_cast<uint32_t>(cur)) <= 0 || Cas(word, cur, seq)) return;
  }
}

// A large message waiting here goes into a segment of its own only when it is
// its turn to be written: the bytes of the messages behind it die with this
// process, and a killed producer leaves at most the one segment of the message
// it was writing (the tracker removes it once the queue's process family is
// gone). False if the segment could not be made: the message is dropped with a
// word on stderr, as Python's feeder thread prints what it cannot send.
static bool Place(Message& m) {
  std::string name;
  int err = WriteSegment(m.body.data(), m.body.size(), &name);
  if (err != 0) {
    fprintf(stderr, "nodemp: a Queue message of %zu bytes was dropped: no shared-memory segment for it (%s)\n", m.body.size(), strerror(err));
    return false;
  }
  m.body.assign(name.begin(), name.end());
  m.tag |= kTagSide;
  m.large = false;
  return true;
}

constexpr int kSpins = 64;

// How long the thread sleeps on one full queue before looking at the others.
constexpr int64_t kFullWaitNs = 20 * 1000 * 1000;

static void* Feeder(void*) {
  std::unique_lock<std::mutex> lock(*mu);
  thread_starting = false;
  changed->notify_all();
  for (;;) {
    while (waiting == 0) changed->wait(lock);
    bool progressed = false;
    Feed* full = nullptr;
    // By index: feedOpen() may grow the vector while the lock is released.
    for (size_t i = 0; i < feeds.size(); i++) {
      Feed* f = feeds[i];
      if (f->dead) {
        // Its environment ended: what it still held goes with it.
        waiting -= f->messages.size();
        f->messages.clear();
        Store(&f->pending, 0);
        continue;
      }
      while (!f->dead && !f->messages.empty()) {
        Message& m = f->messages.front();
        bool large = m.large;
        outside = large;
        in_use = f;
        lock.unlock();
        bool dropped = large && !Place(m);
        bool put = dropped || TryPut(f, m);
        lock.lock();
        in_use = nullptr;
        outside = false;
        changed->notify_all();
        if (!put) {
          full = f;
          break;
        }
        f->messages.pop_front();
        Store(&f->pending, static_cast<int32_t>(f->messages.size()));
        waiting--;
        progressed = true;
      }
    }
    if (waiting == 0) {
      changed->notify_all();
      if (drained_async != nullptr) uv_async_send(drained_async);
      continue;
    }
    if (progressed || full == nullptr || full->dead) continue;
    // A consumer that is busy makes room within microseconds: look again a
    // few times before paying for a sleep (and making every consumer wake us),
    // unless the cores are all taken and the consumer may be queued behind us.
    // Every slot the message needs counts: only its last may still be held.
    int32_t used = SlotsFor(full->messages.front());
    RingView r = ViewOf(full);
    bool room = false;
    int spins = MachineBusy() ? 0 : kSpins;
    for (int spin = 0; spin < spins && !room; spin++) {
      room = Ahead(r, static_cast<uint32_t>(Load(Word(r, kQueueTail))), used) >= 0;
      if (!room) sched_yield();
    }
    if (room) continue;
    // Sleep until a consumer of that queue makes room (or a while passes).
    int32_t* get_seq = Word(r, kQueueGetSeq);
    int32_t seq = Load(get_seq);
    AnnounceSleep(r, kQueuePutSleepSeq, seq);
    uint64_t self = full->self;
    in_use = full;
    lock.unlock();
    int result = kWoken;
    if (Ahead(r, static_cast<uint32_t>(Load(Word(r, kQueueTail))), used) < 0) {
      result = WaitOnWord(reinterpret_cast<uint32_t*>(get_seq), static_cast<uint32_t>(seq), kFullWaitNs);
    }
    lock.lock();
    if (result == kTimedOut && !full->dead) {
      outside = true;
      lock.unlock();
      Recover(r, self, kProducer);
      lock.lock();
      outside = false;
    }
    in_use = nullptr;
    changed->notify_all();
  }
}

// Event-loop thread: a feed that has drained lets its mapping go.
static void OnDrained(uv_async_t* handle) {
  std::vector<Feed*> idle;
  {
    std::lock_guard<std::mutex> lock(*mu);
    for (Feed* f : feeds)
      if (f->kept && f->messages.empty()) idle.push_back(f);
    if (waiting == 0) uv_unref(reinterpret_cast<uv_handle_t*>(handle));
  }
  for (Feed* f : idle) {
    f->keep.Reset();
    f->kept = false;
  }
}

static void AtForkPrepare() {
  std::unique_lock<std::mutex> lock(*mu);
  changed->wait(lock, [] { return !thread_starting && !outside; });
  lock.release();
}
static void AtForkParent() { mu->unlock(); }
static void AtForkChild() {
  mu = new std::mutex;
  changed = new std::condition_variable;
  thread_running = false;
  thread_starting = false;
  outside = false;
  waiting = 0;
  // The parent's messages are the parent's; the feeds' references are
  // dropped by RingAfterFork on the event-loop thread.
  for (Feed* f : feeds) {
    f->messages.clear();
    f->pending = 0;
  }
}

void RingEnvCleanup(napi_env env) {
  if (drained_async == nullptr || drained_env != env) return;
  std::unique_lock<std::mutex> lock(*mu);
  // The environment's mappings go once this returns: its messages are
  // dropped (a worker ended before its queue took them), and the feeder,
  // woken if it sleeps on one of them, is let finish what it does there.
  for (Feed* f : feeds) f->dead = true;
  if (in_use != nullptr) WakeWord(reinterpret_cast<uint32_t*>(Word(ViewOf(in_use), kQueueGetSeq)), INT32_MAX);
  changed->wait(lock, [] { return in_use == nullptr; });
  for (Feed* f : feeds) {
    waiting -= f->messages.size();
    f->messages.clear();
    Store(&f->pending, 0);
    if (f->kept) {
      f->keep.SuppressDestruct();
      f->kept = false;
    }
  }
  uv_close(reinterpret_cast<uv_handle_t*>(drained_async), [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
  drained_async = nullptr;
  drained_env = nullptr;
}

void RingAfterFork() {
  for (Feed* f : feeds) {
    if (f->kept) {
      f->keep.Reset();
      f->kept = false;
    }
  }
  if (drained_async != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(drained_async));
}

// The queue mapping at info[0] of info[1] slots, or throws and returns false.
static bool RingArgs(const Napi::CallbackInfo& info, const char* fn, RingView* r) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer() || !info[1].IsNumber()) {
    ThrowTypeError(env, std::string(fn) + "(buffer, slots, ...): bad arguments");
    return false;
  }
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  uint32_t slots = info[1].As<Napi::Number>().Uint32Value();
  if (slots < 8 || (slots & (slots - 1)) != 0 ||
      ab.ByteLength() < kQueueHeaderSize + static_cast<size_t>(slots) * (kQueueMetaSize + kQueueSlotSize)) {
    ThrowRangeError(env, std::string(fn) + ": the buffer does not hold a queue of that many slots");
    return false;
  }
  *r = RingView{static_cast<uint8_t*>(ab.Data()), slots};
  return true;
}

// queueRow(buffer, slots) -> this process's new row in the party table, or -1 if all 32 are taken by live processes.
static Napi::Value QueueRow(const Napi::CallbackInfo& info) {
  RingView r;
  if (!RingArgs(info, "queueRow", &r)) return info.Env().Undefined();
  return Napi::Number::New(info.Env(), ClaimRow(r, IdentityOf(getpid())));
}

// queueRecover(buffer, slots, side) -> whether anything was recovered; side
// 0: a consumer found the head unpublished for a while, 1: a producer found
// no room for a while.
static Napi::Value QueueRecover(const Napi::CallbackInfo& info) {
  RingView r;
  if (!RingArgs(info, "queueRecover", &r)) return info.Env().Undefined();
  Side side = info[2].ToNumber().Int32Value() == 0 ? kConsumer : kProducer;
  return Napi::Boolean::New(info.Env(), Recover(r, IdentityOf(getpid()), side));
}

// feedOpen(buffer, slots, joinable) -> { handle (an index), pending:
// an ArrayBuffer over the feed's count of waiting messages, an int32 }
static Napi::Value FeedOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RingView r;
  if (!RingArgs(info, "feedOpen", &r)) return env.Undefined();
  if (drained_async == nullptr) {
    static bool atfork_registered = false;
    if (!atfork_registered) {
      pthread_atfork(AtForkPrepare, AtForkParent, AtForkChild);
      atfork_registered = true;
    }
    drained_async = new uv_async_t;
    uv_async_init(LoopOf(env), drained_async, OnDrained);
    uv_unref(reinterpret_cast<uv_handle_t*>(drained_async));
    drained_env = env;
  }
  Feed* f = new Feed;
  f->base = r.base;
  f->slots = r.slots;
  f->self = IdentityOf(getpid());
  // A row of its own: the feeder may put while this process's JS thread gets.
  f->party_row = ClaimRow(r, f->self);
  f->joinable = info[2].ToBoolean();
  size_t handle;
  {
    std::lock_guard<std::mutex> lock(*mu);
    feeds.push_back(f);
    handle = feeds.size() - 1;
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("handle", Napi::Number::New(env, static_cast<double>(handle)));
  // A feed lives as long as the process, so the buffer needs no finalizer.
  result.Set("pending", Napi::ArrayBuffer::New(env, &f->pending, sizeof(f->pending)));
  return result;
}

static Feed* FeedArg(const Napi::CallbackInfo& info) {
  double index = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  std::lock_guard<std::mutex> lock(*mu);
  if (!(index >= 0) || index >= static_cast<double>(feeds.size())) {
    ThrowRangeError(info.Env(), "nodemp feeder: unknown queue handle");
    return nullptr;
  }
  return feeds[static_cast<size_t>(index)];
}

// feed(handle, buffer, tag, bytes, large): queues a copy of bytes behind this
// process's other waiting messages for that queue; `large`: they go into a
// segment of their own when their turn comes (Place).
static Napi::Value FeedMessage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Feed* f = FeedArg(info);
  if (f == nullptr) return env.Undefined();
  if (!info[1].IsArrayBuffer() || !info[2].IsNumber() || !info[3].IsTypedArray()) {
    ThrowTypeError(env, "feed(handle, buffer, tag, bytes): bad arguments");
    return env.Undefined();
  }
  Napi::Uint8Array bytes = info[3].As<Napi::Uint8Array>();
  Message m{info[2].As<Napi::Number>().Uint32Value(), std::vector<uint8_t>(bytes.Data(), bytes.Data() + bytes.ByteLength()), info[4].ToBoolean()};
  if (!f->kept) {
    f->keep = Napi::Persistent(info[1].As<Napi::ArrayBuffer>());
    f->kept = true;
  }
  uv_ref(reinterpret_cast<uv_handle_t*>(drained_async));
  std::lock_guard<std::mutex> lock(*mu);
  f->messages.push_back(std::move(m));
  Store(&f->pending, static_cast<int32_t>(f->messages.size()));
  waiting++;
  if (!thread_running) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int err = pthread_create(&thread, &attr, Feeder, nullptr);
    pthread_attr_destroy(&attr);
    if (err == 0) thread_starting = true;
    if (err != 0) {
      f->messages.pop_back();
      Store(&f->pending, static_cast<int32_t>(f->messages.size()));
      waiting--;
      ThrowErrno(env, err, "pthread_create", "no feeder thread for the queue");
      return env.Undefined();
    }
    thread_running = true;
  }
  changed->notify_all();
  return env.Undefined();
}

// drain(): blocks until every waiting message of this process is in its ring.
static Napi::Value Drain(const Napi::CallbackInfo& info) {
  std::unique_lock<std::mutex> lock(*mu);
  while (waiting > 0) changed->wait(lock);
  return info.Env().Undefined();
}

void InitRing(Napi::Env env, Napi::Object exports) {
  exports.Set("feedOpen", Napi::Function::New(env, FeedOpen, "feedOpen"));
  exports.Set("feed", Napi::Function::New(env, FeedMessage, "feed"));
  exports.Set("drain", Napi::Function::New(env, Drain, "drain"));
  exports.Set("queueRow", Napi::Function::New(env, QueueRow, "queueRow"));
  exports.Set("queueRecover", Napi::Function::New(env, QueueRecover, "queueRecover"));
}

}  // namespace nodemp
