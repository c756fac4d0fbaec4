// Asynchronous futex waits: waitAsync(buffer, byteOffset, expected, timeoutMs,
// callback) sleeps on a helper thread and calls callback(error, result) on the
// event loop, so a Promise-returning wait never blocks the loop. Threads are
// started on demand (one per wait in flight, as a futex sleeper can watch only
// one word) and kept for reuse while work keeps coming.
//
// Fork: the helper threads do not exist in a child, and the mutex guarding
// their queue must not be copied while one of them holds it. pthread_atfork
// takes it around fork(); the child starts from empty state and drops the
// parent's waits, whose callbacks belong to the parent's work.
#include <napi.h>
#include <uv.h>
#include <pthread.h>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "errors.h"
#include "internal.h"

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

static void OnFinished(uv_async_t*) {
  std::vector<Job*> batch;
  {
    std::lock_guard<std::mutex> lock(*mu);
    batch.swap(finished);
  }
  Napi::Env env(loop_env);
  for (Job* job : batch) {
    if (job->abandoned) {
      FreeJob(job);
      continue;
    }
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
  for (Job* job : in_flight) job->abandoned = true;
  in_flight.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(async), [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
  async = nullptr;
  loop_env = nullptr;
}

void WaiterAfterFork() {
  for (Job* job : in_flight) delete job;
  in_flight.clear();
  if (async != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(async));
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
  job->buffer = Napi::Persistent(info[0].As<Napi::ArrayBuffer>());
  job->callback = Napi::Persistent(info[4].As<Napi::Function>());
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
      delete job;
      ThrowErrno(env, err, "pthread_create", "no thread to wait on");
      return env.Undefined();
    }
  }
  cv->notify_one();
  if (in_flight.empty()) uv_ref(reinterpret_cast<uv_handle_t*>(async));
  in_flight.insert(job);
  return env.Undefined();
}

void InitWaiter(Napi::Env env, Napi::Object exports) {
  exports.Set("waitAsync", Napi::Function::New(env, WaitAsync, "waitAsync"));
}

}  // namespace nodemp
