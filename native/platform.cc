// Node's platform worker threads across fork().
//
// The threads do not exist in a forked child, but the condition variable
// they wait on for tasks still counts them as waiters. V8 posts a worker task
// on every full garbage collection, even with --single-threaded (the clearing
// job of MarkCompactCollector::ClearNonLiveReferences), and glibc's
// pthread_cond_signal() in the child then waits forever for the vanished
// waiters of the condition variable's older group to leave it. Seen in the
// soak, and in about three of four children that ran a dozen full GCs.
//
// So the parent parks every worker thread right before fork(): it posts one
// task per thread that blocks until released, and forks only once all of them
// run. A running task is not a waiter, so the child inherits a condition
// variable with no waiters, which it may signal for ever without blocking
// (the tasks it posts queue up unrun; every job V8 posts is joined, and run,
// by the main thread). The parent releases the threads once fork() returns.
//
// The platform is reached through symbols of Node's own binary rather than
// through v8::Platform's virtual table: that table's layout changes between
// V8 versions, and one prebuilt addon serves every Node version since 20.19.
#include <dlfcn.h>
#include <v8-platform.h>
#include <v8.h>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "internal.h"

namespace nodemp {

namespace {

struct Gate {
  std::mutex mutex;
  std::condition_variable arrived_cv;
  std::condition_variable released_cv;
  int arrived = 0;
  bool released = false;
};

class ParkTask final : public v8::Task {
 public:
  explicit ParkTask(std::shared_ptr<Gate> gate) : gate_(std::move(gate)) {}
  void Run() override {
    std::unique_lock<std::mutex> lock(gate_->mutex);
    // A task that starts after the parent gave up waiting, or after the fork,
    // must not hold its thread.
    if (gate_->released) return;
    gate_->arrived++;
    gate_->arrived_cv.notify_one();
    // Bounded so that a parent that never releases (it cannot, short of a
    // bug) does not take the platform's threads for good.
    gate_->released_cv.wait_for(lock, std::chrono::seconds(30), [this] { return gate_->released; });
  }

 private:
  std::shared_ptr<Gate> gate_;
};

// Node 20 (V8 11): NodePlatform::CallOnWorkerThread(unique_ptr<Task>).
// Node 22 and later (V8 12+): NodePlatform::PostTaskOnWorkerThreadImpl(
// TaskPriority, unique_ptr<Task>, const SourceLocation&). Only the first is
// exercised on this machine.
using CallOnWorkerFn = void (*)(void* platform, std::unique_ptr<v8::Task> task);
enum class Priority : uint8_t { kBestEffort, kUserVisible, kUserBlocking };
struct NoSourceLocation {
  const char* function = nullptr;
  const char* file = nullptr;
  size_t line = 0;
};
using PostOnWorkerFn = void (*)(void* platform, Priority priority, std::unique_ptr<v8::Task> task,
                                const NoSourceLocation& location);
using WorkerCountFn = int (*)(void* platform);
using CurrentEnvironmentFn = void* (*)(v8::Local<v8::Context> context);
using PlatformOfFn = void* (*)(void* environment);

struct PlatformCalls {
  bool resolved = false;
  CallOnWorkerFn call_on_worker = nullptr;
  PostOnWorkerFn post_on_worker = nullptr;
  WorkerCountFn worker_count = nullptr;
  CurrentEnvironmentFn current_environment = nullptr;
  PlatformOfFn platform_of = nullptr;
};

const PlatformCalls& Calls() {
  static PlatformCalls calls;
  if (!calls.resolved) {
    calls.resolved = true;
    calls.call_on_worker = reinterpret_cast<CallOnWorkerFn>(
        dlsym(RTLD_DEFAULT, "_ZN4node12NodePlatform18CallOnWorkerThreadESt10unique_ptrIN2v84TaskESt14default_deleteIS3_EE"));
    calls.post_on_worker = reinterpret_cast<PostOnWorkerFn>(dlsym(
        RTLD_DEFAULT,
        "_ZN4node12NodePlatform26PostTaskOnWorkerThreadImplEN2v812TaskPriorityESt10unique_ptrINS1_4TaskESt14default_"
        "deleteIS4_EERKNS1_14SourceLocationE"));
    calls.worker_count =
        reinterpret_cast<WorkerCountFn>(dlsym(RTLD_DEFAULT, "_ZN4node12NodePlatform21NumberOfWorkerThreadsEv"));
    calls.current_environment = reinterpret_cast<CurrentEnvironmentFn>(
        dlsym(RTLD_DEFAULT, "_ZN4node21GetCurrentEnvironmentEN2v85LocalINS0_7ContextEEE"));
    calls.platform_of =
        reinterpret_cast<PlatformOfFn>(dlsym(RTLD_DEFAULT, "_ZN4node23GetMultiIsolatePlatformEPNS_11EnvironmentE"));
  }
  return calls;
}

void Post(void* platform, std::unique_ptr<v8::Task> task) {
  const PlatformCalls& calls = Calls();
  if (calls.call_on_worker != nullptr) {
    calls.call_on_worker(platform, std::move(task));
  } else {
    calls.post_on_worker(platform, Priority::kUserBlocking, std::move(task), NoSourceLocation{});
  }
}

}  // namespace

// How long fork() waits for the threads: they are idle whenever the main
// thread is in a native call of ours (every V8 job is joined by the main
// thread), so this covers a machine too busy to schedule them at once.
static constexpr auto kParkTimeout = std::chrono::seconds(5);

WorkersParking ParkPlatformWorkers(unsigned fork_generation) {
  WorkersParking parking;
  // A forked process has no worker threads, and a condition variable its
  // parent left without waiters.
  if (fork_generation != 0) return parking;
  const PlatformCalls& calls = Calls();
  if (calls.worker_count == nullptr || calls.current_environment == nullptr || calls.platform_of == nullptr ||
      (calls.call_on_worker == nullptr && calls.post_on_worker == nullptr)) {
    parking.outcome = WorkersParking::kUnsupported;
    return parking;
  }
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  void* environment = calls.current_environment(isolate->GetCurrentContext());
  void* platform = environment != nullptr ? calls.platform_of(environment) : nullptr;
  if (platform == nullptr) {
    parking.outcome = WorkersParking::kUnsupported;
    return parking;
  }
  // Node counts its delayed-task thread, which never runs worker tasks, among
  // the worker threads (WorkerThreadsTaskRunner::NumberOfWorkerThreads() is
  // the size of a list that starts with it), in every version since 20.
  parking.threads = calls.worker_count(platform) - 1;
  auto gate = std::make_shared<Gate>();
  for (int i = 0; i < parking.threads; i++) Post(platform, std::make_unique<ParkTask>(gate));
  parking.gate = std::move(gate);
  parking.outcome = WorkersParking::kPosted;
  return parking;
}

void AwaitParkedWorkers(WorkersParking& parking) {
  if (parking.outcome != WorkersParking::kPosted) return;
  auto gate = std::static_pointer_cast<Gate>(parking.gate);
  std::unique_lock<std::mutex> lock(gate->mutex);
  bool all = gate->arrived_cv.wait_for(lock, kParkTimeout, [&] { return gate->arrived == parking.threads; });
  parking.outcome = all ? WorkersParking::kParked : WorkersParking::kTimedOut;
}

void ReleasePlatformWorkers(WorkersParking& parking) {
  if (!parking.gate) return;
  auto gate = std::static_pointer_cast<Gate>(parking.gate);
  {
    std::lock_guard<std::mutex> lock(gate->mutex);
    gate->released = true;
  }
  gate->released_cv.notify_all();
  parking.gate.reset();
}

}  // namespace nodemp
