// The feeder of unbounded queues (lib/queue.ts). put() on an unbounded Queue
// never blocks, as in Python; a message that finds the ring full is handed to
// this thread, which writes it (and every later message of this process for
// that queue, in order) as consumers make room. The thread is what lets the
// messages through while the JS thread itself is blocked, in joinSync() for
// instance, exactly as Python's feeder thread does. The ring protocol here is
// the one lib/queue.ts implements (Ring.tryPut), on the layout of layout.h.
//
// A queue with messages waiting keeps the event loop alive (the process does
// not end before they are in the ring); drain() blocks until they are, for
// the exit path. A forked child starts with no feeder: the parent's waiting
// messages are the parent's to deliver.
#include <napi.h>
#include <uv.h>
#include <pthread.h>
#include <sched.h>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
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
};

struct Feed {
  uint8_t* base = nullptr;  // the queue's mapping
  uint32_t slots = 0;
  int32_t party_row = -1;   // this feeder's row in the party table
  bool joinable = false;
  std::deque<Message> messages;            // guarded by mu
  // messages.size(), stored on every change, for JS to read with
  // Atomics.load: a put checks it every time, and a call into C++ for it
  // would cost more than the put.
  int32_t pending = 0;
  Napi::Reference<Napi::ArrayBuffer> keep;  // event-loop thread only: the mapping stays while messages wait
  bool kept = false;                        // event-loop thread only
};

static std::mutex* mu = new std::mutex;
static std::condition_variable* changed = new std::condition_variable;
static std::vector<Feed*> feeds;   // guarded by mu; a feed lives as long as the process
static size_t waiting = 0;         // messages in all feeds, guarded by mu
static bool thread_running = false;
// The thread is created and not yet running its loop: fork() waits (see
// waiter.cc: a starting thread may hold runtime locks the child would inherit).
static bool thread_starting = false;
static uv_async_t* drained_async = nullptr;

static int32_t* Word(Feed* f, uint32_t byte_offset) { return reinterpret_cast<int32_t*>(f->base + byte_offset); }
// As Ring.metaOf in lib/queue.ts: consecutive slots' metadata a stride apart.
static int32_t* Meta(Feed* f, uint32_t slot) {
  uint32_t at = (slot & 7) * (f->slots / 8) + (slot >> 3);
  return reinterpret_cast<int32_t*>(f->base + kQueueHeaderSize + at * kQueueMetaSize);
}
static uint8_t* Data(Feed* f) { return f->base + kQueueHeaderSize + f->slots * kQueueMetaSize; }

static int32_t Load(int32_t* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static void Store(int32_t* p, int32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static bool Cas(int32_t* p, int32_t expected, int32_t desired) {
  return __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
static void Add(int32_t* p, int32_t v) { __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }

static int32_t SlotsFor(const Message& m) {
  uint32_t len = static_cast<uint32_t>(m.body.size());
  return len == 0 ? 1 : static_cast<int32_t>((len + kQueueSlotSize - 1) / kQueueSlotSize);
}

// Ring.#ahead: for the `used` slots from position `pos`, 0 if all are free
// for it, < 0 if one is still held from the previous lap, > 0 if someone
// reserved past `pos` meanwhile.
static int32_t Ahead(Feed* f, int32_t pos, int32_t used) {
  int32_t ahead = 0;
  for (int32_t j = 0; j < used && ahead == 0; j++) {
    uint32_t p = static_cast<uint32_t>(pos) + j;
    ahead = static_cast<int32_t>(static_cast<uint32_t>(Load(Meta(f, p & (f->slots - 1)) + kQueueMetaSeq / 4)) - p);
  }
  return ahead;
}

// Ring.tryPut for an unbounded queue.
static bool TryPut(Feed* f, const Message& m) {
  uint32_t len = static_cast<uint32_t>(m.body.size());
  int32_t used = SlotsFor(m);
  uint32_t mask = f->slots - 1;
  Add(Word(f, kQueuePuts), 1);
  int32_t pos;
  for (;;) {
    pos = Load(Word(f, kQueueTail));
    int32_t ahead = Ahead(f, pos, used);
    if (ahead < 0) {
      Add(Word(f, kQueuePuts), -1);
      return false;
    }
    if (ahead > 0) continue;
    if (f->party_row >= 0) {
      int32_t* party = Word(f, kQueueParties + f->party_row * kQueuePartySize);
      party[kQueuePartyPos / 4] = pos;
      party[kQueuePartySlotsUsed / 4] = used;
      Store(party + kQueuePartyKind / 4, 1);
    }
    if (Cas(Word(f, kQueueTail), pos, static_cast<int32_t>(static_cast<uint32_t>(pos) + used))) break;
  }
  uint32_t data_bytes = f->slots * kQueueSlotSize;
  uint32_t start = (static_cast<uint32_t>(pos) & mask) * kQueueSlotSize;
  uint32_t room = data_bytes - start;
  uint8_t* data = Data(f);
  if (len <= room) {
    std::memcpy(data + start, m.body.data(), len);
  } else {
    std::memcpy(data + start, m.body.data(), room);
    std::memcpy(data, m.body.data() + room, len - room);
  }
  int32_t* meta = Meta(f, static_cast<uint32_t>(pos) & mask);
  meta[kQueueMetaInfo / 4] = static_cast<int32_t>((m.tag << 24) | len);
  if (f->joinable) Add(Word(f, kQueueUnfinished), 1);
  Store(meta + kQueueMetaSeq / 4, static_cast<int32_t>(static_cast<uint32_t>(pos) + 1));
  if (f->party_row >= 0) Store(Word(f, kQueueParties + f->party_row * kQueuePartySize + kQueuePartyKind), 0);
  if (Load(Word(f, kQueueGetSleepers)) > 0) {
    // As Ring.#wakeConsumers in lib/queue.ts (see kQueueGetSleepSeq).
    int32_t* put_seq = Word(f, kQueuePutSeq);
    int32_t seq = Load(put_seq);
    if (Load(Word(f, kQueueGetSleepSeq)) == seq && Cas(put_seq, seq, static_cast<int32_t>(static_cast<uint32_t>(seq) + 1))) {
      WakeWord(reinterpret_cast<uint32_t*>(put_seq), INT32_MAX);
    }
  }
  return true;
}

// Ring.recoverSlot: the slot this feed needs next is held by a consumer that
// died after claiming it; hand its message's slots back (the message is lost
// with its consumer).
static void RecoverSlot(Feed* f) {
  uint32_t mask = f->slots - 1;
  uint32_t pos = static_cast<uint32_t>(Load(Word(f, kQueueTail)));
  for (uint32_t j = 0; j < f->slots; j++, pos++) {
    if (static_cast<int32_t>(static_cast<uint32_t>(Load(Meta(f, pos & mask) + kQueueMetaSeq / 4)) - pos) < 0) break;
  }
  uint32_t lap_before = pos - f->slots;
  int live = 0;
  int32_t dead_row = -1;
  for (uint32_t i = 0; i < kQueuePartySlots; i++) {
    int32_t* party = Word(f, kQueueParties + i * kQueuePartySize);
    int32_t pid = Load(party + kQueuePartyPid / 4);
    if (pid == 0 || Load(party + kQueuePartyKind / 4) != 2) continue;
    uint32_t offset = lap_before - static_cast<uint32_t>(party[kQueuePartyPos / 4]);
    if (offset >= static_cast<uint32_t>(party[kQueuePartySlotsUsed / 4])) continue;
    if (PidAlive(pid)) live++;
    else dead_row = static_cast<int32_t>(i);
  }
  if (live > 0 || dead_row < 0) return;
  int32_t* party = Word(f, kQueueParties + dead_row * kQueuePartySize);
  uint32_t start = static_cast<uint32_t>(party[kQueuePartyPos / 4]);
  uint32_t used = static_cast<uint32_t>(party[kQueuePartySlotsUsed / 4]);
  Add(Word(f, kQueueGets), 1);
  // Last slot first, as Ring.#release in lib/queue.ts: see there.
  for (uint32_t j = used; j-- > 0;) Store(Meta(f, (start + j) & mask) + kQueueMetaSeq / 4, static_cast<int32_t>(start + j + f->slots));
  Store(party + kQueuePartyKind / 4, 0);
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
      while (!f->messages.empty()) {
        Message& m = f->messages.front();
        lock.unlock();
        bool put = TryPut(f, m);
        lock.lock();
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
      uv_async_send(drained_async);
      continue;
    }
    if (progressed || full == nullptr) continue;
    // A consumer that is busy makes room within microseconds: look again a
    // few times before paying for a sleep (and making every consumer wake us).
    // Every slot the message needs counts: only its last may still be held.
    int32_t used = SlotsFor(full->messages.front());
    bool room = false;
    for (int spin = 0; spin < kSpins && !room; spin++) {
      room = Ahead(full, Load(Word(full, kQueueTail)), used) >= 0;
      if (!room) sched_yield();
    }
    if (room) continue;
    // Sleep until a consumer of that queue makes room (or a while passes).
    int32_t* get_seq = Word(full, kQueueGetSeq);
    Add(Word(full, kQueuePutSleepers), 1);
    int32_t seq = Load(get_seq);
    lock.unlock();
    int result = WaitOnWord(reinterpret_cast<uint32_t*>(get_seq), static_cast<uint32_t>(seq), kFullWaitNs);
    Add(Word(full, kQueuePutSleepers), -1);
    if (result == kTimedOut) RecoverSlot(full);
    lock.lock();
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
  changed->wait(lock, [] { return !thread_starting; });
  lock.release();
}
static void AtForkParent() { mu->unlock(); }
static void AtForkChild() {
  mu = new std::mutex;
  changed = new std::condition_variable;
  thread_running = false;
  thread_starting = false;
  waiting = 0;
  // The parent's messages are the parent's; the feeds' references are
  // dropped by RingAfterFork on the event-loop thread.
  for (Feed* f : feeds) {
    f->messages.clear();
    f->pending = 0;
  }
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

// feedOpen(buffer, slots, partyRow, joinable) -> { handle (an index), pending:
// an ArrayBuffer over the feed's count of waiting messages, an int32 }
static Napi::Value FeedOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer() || !info[1].IsNumber() || !info[2].IsNumber()) {
    ThrowTypeError(env, "feedOpen(buffer, slots, partyRow, joinable): bad arguments");
    return env.Undefined();
  }
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  uint32_t slots = info[1].As<Napi::Number>().Uint32Value();
  if (slots == 0 || (slots & (slots - 1)) != 0 ||
      ab.ByteLength() < kQueueHeaderSize + static_cast<size_t>(slots) * (kQueueMetaSize + kQueueSlotSize)) {
    ThrowRangeError(env, "feedOpen: the buffer does not hold a queue of that many slots");
    return env.Undefined();
  }
  if (drained_async == nullptr) {
    pthread_atfork(AtForkPrepare, AtForkParent, AtForkChild);
    drained_async = new uv_async_t;
    uv_async_init(LoopOf(env), drained_async, OnDrained);
    uv_unref(reinterpret_cast<uv_handle_t*>(drained_async));
  }
  Feed* f = new Feed;
  f->base = static_cast<uint8_t*>(ab.Data());
  f->slots = slots;
  f->party_row = info[2].As<Napi::Number>().Int32Value();
  f->joinable = info[3].ToBoolean();
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

// feed(handle, buffer, tag, bytes): queues a copy of bytes behind this
// process's other waiting messages for that queue.
static Napi::Value FeedMessage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Feed* f = FeedArg(info);
  if (f == nullptr) return env.Undefined();
  if (!info[1].IsArrayBuffer() || !info[2].IsNumber() || !info[3].IsTypedArray()) {
    ThrowTypeError(env, "feed(handle, buffer, tag, bytes): bad arguments");
    return env.Undefined();
  }
  Napi::Uint8Array bytes = info[3].As<Napi::Uint8Array>();
  Message m{info[2].As<Napi::Number>().Uint32Value(), std::vector<uint8_t>(bytes.Data(), bytes.Data() + bytes.ByteLength())};
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
}

}  // namespace nodemp
