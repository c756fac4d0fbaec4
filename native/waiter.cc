// Asynchronous futex waits: waitAsync(buffer, byteOffset, expected, timeoutMs,
// callback) calls callback(error, result) on the event loop once the word is
// woken, so a Promise-returning wait never blocks the loop.
//
// Where the kernel has io_uring futex waits (Linux 6.7+), the wait is a
// request on a ring of this process whose descriptor the event loop polls:
// the waker's futex wake completes it and wakes the loop, once. Elsewhere it
// sleeps on a helper thread, which then wakes the loop: two wake-ups, each a
// trip through the scheduler that costs most on a machine whose cores are all
// taken. Threads are started on demand (one per wait in flight, as a futex
// sleeper can watch only one word) and kept for reuse while work keeps coming.
//
// Fork: the helper threads do not exist in a child, and the mutex guarding
// their queue must not be copied while one of them holds it. pthread_atfork
// takes it around fork(); the child starts from empty state and drops the
// parent's waits, whose callbacks belong to the parent's work.
#include <napi.h>
#include <uv.h>
#include <pthread.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <unordered_set>
#include <vector>

#include "errors.h"
#include "internal.h"

#if defined(__linux__)
#include <linux/futex.h>
#include <linux/io_uring.h>
#include <linux/time_types.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace nodemp {

struct Job {
  uint32_t* addr;
  uint32_t expected;
  int64_t timeout_ns;
  Napi::Reference<Napi::ArrayBuffer> buffer;  // keeps the mapping alive while a thread sleeps on it
  Napi::FunctionReference callback;
  int result = 0;
  // Its environment ended (a worker thread exited) while it was out: its
  // references belong to a dead environment and are let go, never called.
  bool abandoned = false;
  // A request on the ring rather than a thread's.
  bool on_ring = false;
  // When it was handed out (uv_hrtime), for waiterState().
  uint64_t started_ns = 0;
  // On the ring with its timeout kept by the loop's timer (uv_hrtime of its
  // end), 0 otherwise.
  uint64_t coarse_deadline = 0;
};

static void FreeJob(Job* job) {
  if (job->abandoned) {
    job->buffer.SuppressDestruct();
    job->callback.SuppressDestruct();
  }
  delete job;
}

// Idle threads above this number leave after kIdleExitSeconds without work.
constexpr int kKeepIdle = 4;
constexpr int kIdleExitSeconds = 10;
constexpr size_t kThreadStack = 256 * 1024;

static std::mutex* mu = new std::mutex;
static std::condition_variable* cv = new std::condition_variable;
static std::condition_variable* started = new std::condition_variable;
static std::deque<Job*> queued;
static std::vector<Job*> finished;
static int idle_threads = 0;
// Threads created and not yet waiting for work: fork() waits for them, since a
// thread that is still starting may hold locks of the C library or of a
// sanitizer runtime that the child would then find locked forever.
static int starting = 0;

// Event-loop thread only.
static uv_async_t* async = nullptr;
static napi_env loop_env = nullptr;
static std::unordered_set<Job*> in_flight;

static void* Work(void*) {
  std::unique_lock<std::mutex> lock(*mu);
  starting--;
  started->notify_all();
  for (;;) {
    idle_threads++;
    while (queued.empty()) {
      if (cv->wait_for(lock, std::chrono::seconds(kIdleExitSeconds)) == std::cv_status::timeout && queued.empty() &&
          idle_threads > kKeepIdle) {
        idle_threads--;
        return nullptr;
      }
    }
    idle_threads--;
    Job* job = queued.front();
    queued.pop_front();
    lock.unlock();
    job->result = WaitOnWord(job->addr, job->expected, job->timeout_ns);
    lock.lock();
    finished.push_back(job);
    if (async != nullptr) uv_async_send(async);
  }
}

static void Deliver(Job* job) {
  // A completion that comes in as the environment is torn down has nobody to
  // tell (the soak saw one end a process with a fatal error).
  if (loop_env == nullptr) {
    in_flight.erase(job);
    job->abandoned = true;
    FreeJob(job);
    return;
  }
  NoteCpu();
  Napi::Env env(loop_env);
  in_flight.erase(job);
  if (in_flight.empty()) uv_unref(reinterpret_cast<uv_handle_t*>(async));
  Napi::HandleScope scope(env);
  if (job->result < 0) {
    Napi::Value error = ErrnoError(env, -job->result, "futex_wait");
    CallFromLoop(env, job->callback, {error});
  } else {
    CallFromLoop(env, job->callback, {env.Null(), Napi::Number::New(env, job->result)});
  }
  delete job;
}

static bool StartWait(Job* job);

// Hands the wait to a helper thread, or fails it if none can be started.
static void SubmitToThread(Job* job) {
  if (StartWait(job)) return;
  job->result = -errno;
  Deliver(job);
}

#if defined(__linux__)
// The ring, event-loop thread only. Not in the headers this is built with
// before Linux 6.7: the futex-wait opcode, and futex2's flag for a 32-bit
// word (shared between processes: no FUTEX2_PRIVATE).
constexpr uint8_t kOpFutexWait = 51;
constexpr uint32_t kFutex2SizeU32 = 0x02;
constexpr uint32_t kRingEntries = 256;
// The user_data of a wait's linked timeout, and of a cancellation, whose own
// completions are not news.
constexpr uint64_t kTimeoutTag = 1;
constexpr uint64_t kCancelTag = 2;
// A wait with a timeout this long or longer (most are: a Queue's or a lock's
// sleep ends every 100 ms to look for a dead owner) has it kept by a timer of
// the event loop, which cancels the wait when it is due: a linked timeout
// costs the kernel an hrtimer and a second request and completion, 2 us of
// each wait and wake here, a fifth of a one-CPU Queue ping-pong. The loop's
// timers have millisecond resolution, so shorter timeouts stay linked.
// Two costs of the change. A wait whose time is up while the loop is held
// (a long synchronous call) stays queued on its futex until the loop runs
// again, where the kernel's timer took it off at once; meanwhile it may
// take a wake-up of one meant for another waiter, which then sleeps on to
// its own timeout, a 100 ms look for a dead owner at most, as it would
// have had the wait still been in its time. And the timeout rests on a
// second request: a cancellation the kernel refused for any reason but
// that the wait is ending already (-ENOENT, -EALREADY, the only answers a
// kernel with futex waits gives one) would leave the wait untimed.
constexpr int64_t kCoarseTimeoutNs = 10000000;

struct Ring {
  int fd = -1;
  unsigned* sq_head = nullptr;
  unsigned* sq_tail = nullptr;
  unsigned sq_mask = 0;
  unsigned* sq_array = nullptr;
  unsigned* sq_flags = nullptr;
  io_uring_sqe* sqes = nullptr;
  unsigned* cq_head = nullptr;
  unsigned* cq_tail = nullptr;
  unsigned cq_mask = 0;
  io_uring_cqe* cqes = nullptr;
  void* sq_map = nullptr;
  size_t sq_map_len = 0;
  void* cq_map = nullptr;
  size_t cq_map_len = 0;
  size_t sqes_len = 0;
  uv_poll_t* poll = nullptr;
  int waits = 0;
  // The waits whose timeouts the loop keeps, by deadline, and its timer,
  // started for the earliest.
  std::set<std::pair<uint64_t, Job*>>* coarse = nullptr;
  uv_timer_t* timer = nullptr;
};
// 0 not tried yet, 1 in use, -1 unavailable (no io_uring, or one without futex waits).
static int ring_state = 0;
static Ring ring;

// Lets go of the ring: its poll handle, its mappings (`mapped` false: a forked
// child, where MADV_DONTFORK left them out) and its descriptor.
static void RingRelease(bool mapped) {
  if (ring.poll != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(ring.poll), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
  }
  if (ring.timer != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(ring.timer), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }
  delete ring.coarse;
  if (mapped) {
    if (ring.sq_map != nullptr) munmap(ring.sq_map, ring.sq_map_len);
    if (ring.cq_map != nullptr && ring.cq_map != ring.sq_map) munmap(ring.cq_map, ring.cq_map_len);
    if (ring.sqes != nullptr) munmap(ring.sqes, ring.sqes_len);
  }
  if (ring.fd >= 0) close(ring.fd);
  ring = Ring();
}

static void OnRing(uv_poll_t*, int, int);
static void OnCoarseTimer(uv_timer_t*);

// Starts the timer for the earliest coarse deadline, or stops it if none is left.
static void ArmCoarseTimer() {
  if (ring.coarse->empty()) {
    uv_timer_stop(ring.timer);
    return;
  }
  uint64_t due = ring.coarse->begin()->first;
  uint64_t now = uv_hrtime();
  uint64_t ms = due > now ? (due - now + 999999) / 1000000 : 0;
  uv_timer_start(ring.timer, OnCoarseTimer, ms, 0);
}

static void ForgetCoarse(Job* job) {
  if (job->coarse_deadline == 0) return;
  ring.coarse->erase({job->coarse_deadline, job});
  job->coarse_deadline = 0;
  if (ring.coarse->empty()) uv_timer_stop(ring.timer);
}

// Cancels the waits whose time is up; each then completes with -ECANCELED,
// which OnRing reports as a timeout. The loop's clock may lag the real one:
// a timer that fires early finds nothing due and is started again.
static void OnCoarseTimer(uv_timer_t*) {
  uint64_t now = uv_hrtime();
  unsigned tail = *ring.sq_tail;
  unsigned head = __atomic_load_n(ring.sq_head, __ATOMIC_ACQUIRE);
  std::vector<Job*> due;
  while (!ring.coarse->empty() && ring.coarse->begin()->first <= now && tail - head + static_cast<unsigned>(due.size()) < ring.sq_mask + 1) {
    Job* job = ring.coarse->begin()->second;
    ring.coarse->erase(ring.coarse->begin());
    job->coarse_deadline = 0;
    unsigned at = (tail + static_cast<unsigned>(due.size())) & ring.sq_mask;
    io_uring_sqe* sqe = &ring.sqes[at];
    std::memset(sqe, 0, sizeof *sqe);
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->addr = reinterpret_cast<uint64_t>(job);
    sqe->user_data = kCancelTag;
    ring.sq_array[at] = at;
    due.push_back(job);
  }
  if (!due.empty()) {
    unsigned n = static_cast<unsigned>(due.size());
    __atomic_store_n(ring.sq_tail, tail + n, __ATOMIC_RELEASE);
    long r;
    do {
      r = syscall(__NR_io_uring_enter, ring.fd, n, 0, 0, nullptr, 0);
    } while (r < 0 && errno == EINTR);
    unsigned taken = r < 0 ? 0 : static_cast<unsigned>(r);
    if (taken < n) {
      // Those not taken in are withdrawn (RingSubmit counts on an empty
      // queue) and tried again in a millisecond.
      __atomic_store_n(ring.sq_tail, tail + taken, __ATOMIC_RELEASE);
      for (unsigned i = taken; i < n; i++) {
        due[i]->coarse_deadline = now + 1000000;
        ring.coarse->insert({due[i]->coarse_deadline, due[i]});
      }
    }
  }
  ArmCoarseTimer();
}

static void* MapRing(size_t length, off_t offset) {
  void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring.fd, offset);
  if (p == MAP_FAILED) return nullptr;
  // A forked child must not see this process's ring: it makes its own.
  madvise(p, length, MADV_DONTFORK);
  return p;
}

static bool RingOpen(Napi::Env env) {
  io_uring_params p;
  std::memset(&p, 0, sizeof p);
  int fd = static_cast<int>(syscall(__NR_io_uring_setup, kRingEntries, &p));
  if (fd < 0) return false;
  ring.fd = fd;
  ring.sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  ring.cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
  bool single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single && ring.cq_map_len > ring.sq_map_len) ring.sq_map_len = ring.cq_map_len;
  ring.sq_map = MapRing(ring.sq_map_len, IORING_OFF_SQ_RING);
  ring.cq_map = single ? ring.sq_map : MapRing(ring.cq_map_len, IORING_OFF_CQ_RING);
  ring.sqes_len = p.sq_entries * sizeof(io_uring_sqe);
  ring.sqes = static_cast<io_uring_sqe*>(MapRing(ring.sqes_len, IORING_OFF_SQES));
  if (ring.sq_map == nullptr || ring.cq_map == nullptr || ring.sqes == nullptr) {
    RingRelease(true);
    return false;
  }
  auto at = [](void* base, uint32_t off) { return reinterpret_cast<unsigned*>(static_cast<char*>(base) + off); };
  ring.sq_head = at(ring.sq_map, p.sq_off.head);
  ring.sq_tail = at(ring.sq_map, p.sq_off.tail);
  ring.sq_mask = *at(ring.sq_map, p.sq_off.ring_mask);
  ring.sq_array = at(ring.sq_map, p.sq_off.array);
  ring.sq_flags = at(ring.sq_map, p.sq_off.flags);
  ring.cq_head = at(ring.cq_map, p.cq_off.head);
  ring.cq_tail = at(ring.cq_map, p.cq_off.tail);
  ring.cq_mask = *at(ring.cq_map, p.cq_off.ring_mask);
  ring.cqes = reinterpret_cast<io_uring_cqe*>(static_cast<char*>(ring.cq_map) + p.cq_off.cqes);
  ring.poll = new uv_poll_t;
  if (uv_poll_init(LoopOf(env), ring.poll, fd) != 0) {
    delete ring.poll;
    ring.poll = nullptr;
    RingRelease(true);
    return false;
  }
  ring.coarse = new std::set<std::pair<uint64_t, Job*>>;
  ring.timer = new uv_timer_t;
  uv_timer_init(LoopOf(env), ring.timer);
  // The waits hold the loop through the poll handle; the timer never does.
  uv_unref(reinterpret_cast<uv_handle_t*>(ring.timer));
  // Watched for good, and counted by the loop only while a wait is on the
  // ring: starting and stopping the watch around every wait cost two or
  // three epoll_ctl calls each time, a fifth of the main thread's system
  // calls in a pool given one task a millisecond. With no wait on the ring
  // no completion comes, so the watch wakes no one meanwhile.
  uv_poll_start(ring.poll, UV_READABLE, OnRing);
  uv_unref(reinterpret_cast<uv_handle_t*>(ring.poll));
  return true;
}

// Queues the wait (and its timeout) and submits it; false if the ring had no room or did not take it.
static bool RingSubmit(Job* job) {
  SampleIfDue();
  unsigned tail = *ring.sq_tail;
  unsigned head = __atomic_load_n(ring.sq_head, __ATOMIC_ACQUIRE);
  bool coarse = job->timeout_ns >= kCoarseTimeoutNs;
  unsigned need = job->timeout_ns >= 0 && !coarse ? 2 : 1;
  if (tail - head + need > ring.sq_mask + 1) return false;
  io_uring_sqe* sqe = &ring.sqes[tail & ring.sq_mask];
  std::memset(sqe, 0, sizeof *sqe);
  sqe->opcode = kOpFutexWait;
  sqe->fd = static_cast<int32_t>(kFutex2SizeU32);
  sqe->addr = reinterpret_cast<uint64_t>(job->addr);
  sqe->addr2 = job->expected;
  sqe->addr3 = FUTEX_BITSET_MATCH_ANY;
  sqe->user_data = reinterpret_cast<uint64_t>(job);
  ring.sq_array[tail & ring.sq_mask] = tail & ring.sq_mask;
  // Read by the kernel as it takes the requests in, within io_uring_enter below.
  __kernel_timespec ts{job->timeout_ns / 1000000000, job->timeout_ns % 1000000000};
  if (need == 2) {
    sqe->flags = IOSQE_IO_LINK;
    io_uring_sqe* t = &ring.sqes[(tail + 1) & ring.sq_mask];
    std::memset(t, 0, sizeof *t);
    t->opcode = IORING_OP_LINK_TIMEOUT;
    t->fd = -1;
    t->addr = reinterpret_cast<uint64_t>(&ts);
    t->len = 1;
    t->user_data = kTimeoutTag;
    ring.sq_array[(tail + 1) & ring.sq_mask] = (tail + 1) & ring.sq_mask;
  }
  __atomic_store_n(ring.sq_tail, tail + need, __ATOMIC_RELEASE);
  for (;;) {
    long r = syscall(__NR_io_uring_enter, ring.fd, need, 0, 0, nullptr, 0);
    if (r >= 0) break;
    if (errno == EINTR) continue;
    // Not taken in: withdraw them; a thread waits instead.
    __atomic_store_n(ring.sq_tail, tail, __ATOMIC_RELEASE);
    return false;
  }
  if (ring.waits++ == 0) uv_ref(reinterpret_cast<uv_handle_t*>(ring.poll));
  job->on_ring = true;
  if (coarse) {
    job->coarse_deadline = uv_hrtime() + static_cast<uint64_t>(job->timeout_ns);
    auto at = ring.coarse->insert({job->coarse_deadline, job}).first;
    if (at == ring.coarse->begin()) ArmCoarseTimer();
  }
  return true;
}

static void OnRing(uv_poll_t*, int, int) {
  std::vector<Job*> done;
  for (;;) {
    unsigned head = *ring.cq_head;
    unsigned tail = __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE);
    for (; head != tail; head++) {
      io_uring_cqe* cqe = &ring.cqes[head & ring.cq_mask];
      if (cqe->user_data == kTimeoutTag || cqe->user_data == kCancelTag) continue;
      Job* job = reinterpret_cast<Job*>(cqe->user_data);
      ForgetCoarse(job);
      int res = cqe->res;
      // -ECANCELED: its linked timeout, or the loop's timer, ended it. -EINTR: woken for no reason; the caller looks and waits again.
      if (res == 0 || res == -EINTR) job->result = kWoken;
      else if (res == -EAGAIN) job->result = kNotEqual;
      else if (res == -ECANCELED) job->result = kTimedOut;
      else job->result = res;
      done.push_back(job);
    }
    __atomic_store_n(ring.cq_head, head, __ATOMIC_RELEASE);
    // More completions than the ring holds wait in the kernel, and only
    // io_uring_enter brings them in: the descriptor would not say so again.
    if ((__atomic_load_n(ring.sq_flags, __ATOMIC_ACQUIRE) & IORING_SQ_CQ_OVERFLOW) == 0) break;
    syscall(__NR_io_uring_enter, ring.fd, 0, 0, IORING_ENTER_GETEVENTS, nullptr, 0);
  }
  // Counted off before any callback runs: a callback that waits again
  // holds the loop again, and must not find it let go by a later one.
  ring.waits -= static_cast<int>(done.size());
  if (ring.waits == 0) uv_unref(reinterpret_cast<uv_handle_t*>(ring.poll));
  unsigned generation = ForkGeneration();
  for (Job* job : done) {
    // A callback that forked comes back here in the child too, where the
    // jobs left are the parent's, freed by WaiterAfterFork: delivering them
    // was a double free (the soak saw "corrupted double-linked list").
    if (ForkGeneration() != generation) return;
    if (job->result == -EINVAL || job->result == -EOPNOTSUPP) {
      // An io_uring without futex waits (before Linux 6.7): threads from now on.
      ring_state = -1;
      job->on_ring = false;
      SubmitToThread(job);
      continue;
    }
    Deliver(job);
  }
}

static bool TryRing(Napi::Env env, Job* job) {
  // NODEMP_IO_URING=0 keeps to threads: for a kernel whose io_uring misbehaves, and for measuring one against the other.
  if (ring_state == 0) {
    const char* choice = getenv("NODEMP_IO_URING");
    ring_state = (choice != nullptr && std::strcmp(choice, "0") == 0) || !RingOpen(env) ? -1 : 1;
  }
  return ring_state == 1 && RingSubmit(job);
}
#else
static bool TryRing(Napi::Env, Job*) { return false; }
#endif

static void OnFinished(uv_async_t*) {
  std::vector<Job*> batch;
  {
    std::lock_guard<std::mutex> lock(*mu);
    batch.swap(finished);
  }
  unsigned generation = ForkGeneration();
  for (Job* job : batch) {
    // As in OnRing: the rest of the batch is the parent's once a callback forked.
    if (ForkGeneration() != generation) return;
    if (job->abandoned) {
      FreeJob(job);
      continue;
    }
    Deliver(job);
  }
}

static void AtForkPrepare() {
  std::unique_lock<std::mutex> lock(*mu);
  started->wait(lock, [] { return starting == 0; });
  lock.release();
}
static void AtForkParent() { mu->unlock(); }
static void AtForkChild() {
  // The copied mutex and condition variable may describe threads that do not
  // exist here; start from new ones (the old ones are abandoned, not freed).
  mu = new std::mutex;
  cv = new std::condition_variable;
  started = new std::condition_variable;
  starting = 0;
  queued.clear();
  finished.clear();
  idle_threads = 0;
}

void WaiterEnvCleanup(napi_env env) {
  if (async == nullptr || loop_env != env) return;
  std::lock_guard<std::mutex> lock(*mu);
  for (Job* job : in_flight) {
    job->abandoned = true;
    // Closing the ring ends its requests: nothing will come back for them.
    if (job->on_ring) FreeJob(job);
  }
  in_flight.clear();
#if defined(__linux__)
  RingRelease(true);
  ring_state = 0;
#endif
  uv_close(reinterpret_cast<uv_handle_t*>(async), [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
  async = nullptr;
  loop_env = nullptr;
}

void WaiterAfterFork() {
  for (Job* job : in_flight) delete job;
  in_flight.clear();
  if (async != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(async));
#if defined(__linux__)
  // The parent's ring's requests are the parent's: a wait here makes a ring of its own.
  RingRelease(false);
  if (ring_state == 1) ring_state = 0;
#endif
}

static bool StartThread() {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, kThreadStack);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  int err = pthread_create(&thread, &attr, Work, nullptr);
  pthread_attr_destroy(&attr);
  errno = err;
  return err == 0;
}

static Napi::Value WaitAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t* word = WordAt(info, "waitAsync");
  if (!word) return env.Undefined();
  if (!info[2].IsNumber()) {
    ThrowTypeError(env, "waitAsync: expected value must be a number");
    return env.Undefined();
  }
  int64_t timeout_ns;
  if (!TimeoutArg(info, 3, "waitAsync", &timeout_ns)) return env.Undefined();
  if (!info[4].IsFunction()) {
    ThrowTypeError(env, "waitAsync: callback must be a function");
    return env.Undefined();
  }
  ForgetWake();
  if (async == nullptr) {
    static bool atfork_registered = false;
    if (!atfork_registered) {
      pthread_atfork(AtForkPrepare, AtForkParent, AtForkChild);
      atfork_registered = true;
    }
    async = new uv_async_t;
    uv_async_init(LoopOf(env), async, OnFinished);
    uv_unref(reinterpret_cast<uv_handle_t*>(async));
    loop_env = env;
  }
  Job* job = new Job;
  job->addr = word;
  job->expected = static_cast<uint32_t>(info[2].As<Napi::Number>().Int64Value());
  job->timeout_ns = timeout_ns;
  job->started_ns = uv_hrtime();
  job->buffer = Napi::Persistent(info[0].As<Napi::ArrayBuffer>());
  job->callback = Napi::Persistent(info[4].As<Napi::Function>());
  if (in_flight.empty()) uv_ref(reinterpret_cast<uv_handle_t*>(async));
  in_flight.insert(job);
  if (TryRing(env, job)) return env.Undefined();
  if (!StartWait(job)) {
    int err = errno;
    in_flight.erase(job);
    if (in_flight.empty()) uv_unref(reinterpret_cast<uv_handle_t*>(async));
    delete job;
    ThrowErrno(env, err, "pthread_create", "no thread to wait on");
  }
  return env.Undefined();
}

// Hands the wait to a helper thread; false (errno set) if none could be started.
static bool StartWait(Job* job) {
  bool need_thread;
  {
    std::lock_guard<std::mutex> lock(*mu);
    queued.push_back(job);
    need_thread = idle_threads < static_cast<int>(queued.size());
    if (need_thread) starting++;
  }
  if (need_thread && !StartThread()) {
    int err = errno;
    bool withdrawn = false;
    {
      std::lock_guard<std::mutex> lock(*mu);
      starting--;
      started->notify_all();
      for (auto it = queued.begin(); it != queued.end(); ++it) {
        if (*it == job) {
          queued.erase(it);
          withdrawn = true;
          break;
        }
      }
    }
    // A thread that went idle meanwhile may already be sleeping on it.
    if (withdrawn) {
      errno = err;
      return false;
    }
  }
  cv->notify_one();
  return true;
}

void InitWaiter(Napi::Env env, Napi::Object exports) {
  exports.Set("waitAsync", Napi::Function::New(env, WaitAsync, "waitAsync"));
  // waiterState() -> { inFlight, onRing, oldestMs, overdue, moved, ring?, epollReady? }:
  // the waits out now; how many are a second or more past their timeout with
  // no completion (a lost one); how many, out for a second or more, sleep on
  // a word that has changed; the ring's watch (PollDiagnosis, its waits,
  // completions not yet read, and its count of those read); and (Linux) the
  // descriptors the loop's epoll set reports ready now: for the report of a hang.
  exports.Set("waiterState", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    uint64_t now = uv_hrtime();
    uint64_t oldest = 0;
    int on_ring = 0, overdue = 0, moved = 0;
    for (const Job* job : in_flight) {
      uint64_t age = now - job->started_ns;
      if (age > oldest) oldest = age;
      if (job->on_ring) on_ring++;
      if (job->timeout_ns >= 0 && age > static_cast<uint64_t>(job->timeout_ns) + 1000000000ULL) overdue++;
      // A word no longer at the value the wait slept on was changed, and a
      // wake should have come (or is about to) unless its waker died first.
      if (age > 1000000000ULL && __atomic_load_n(job->addr, __ATOMIC_ACQUIRE) != job->expected) moved++;
    }
    Napi::Env env = info.Env();
    Napi::Object state = Napi::Object::New(env);
    state.Set("inFlight", static_cast<double>(in_flight.size()));
    state.Set("onRing", on_ring);
    state.Set("oldestMs", static_cast<double>(oldest / 1000000));
    state.Set("overdue", overdue);
    state.Set("moved", moved);
#if defined(__linux__)
    if (ring_state == 1) {
      Napi::Object r = PollDiagnosis(env, ring.poll, ring.fd, EpollRegistrations(LoopOf(env)));
      r.Set("waits", ring.waits);
      r.Set("completionsUnread", __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE) - *ring.cq_head);
      r.Set("completionsRead", *ring.cq_head);
      state.Set("ring", r);
    }
    // What the kernel would report to the loop's next poll: level-triggered
    // registrations (all of libuv's) stay ready after a look, so the look
    // takes nothing from the loop. It tells a readiness the kernel never
    // signalled from one the loop did not come to read.
    epoll_event ready[64];
    int n = epoll_wait(uv_backend_fd(LoopOf(env)), ready, 64, 0);
    Napi::Array fds = Napi::Array::New(env);
    for (int i = 0; i < n; i++) fds.Set(static_cast<uint32_t>(i), ready[i].data.fd);
    state.Set("epollReady", fds);
#endif
    return state;
  }));
  // loopTurns() -> how many times the event loop has polled for events: two
  // looks are apart by a poll only if it moved in between (lib/loop-stall.ts).
  exports.Set("loopTurns", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    uv_metrics_t metrics;
    std::memset(&metrics, 0, sizeof metrics);
    uv_metrics_info(LoopOf(info.Env()), &metrics);
    return Napi::Number::New(info.Env(), static_cast<double>(metrics.loop_count));
  }));
  exports.Set("waitMechanism", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
#if defined(__linux__)
    const char* which = ring_state == 1 ? "io_uring" : ring_state == -1 ? "threads" : "undecided";
#else
    const char* which = "threads";
#endif
    return Napi::String::New(info.Env(), which);
  }));
}

}  // namespace nodemp
