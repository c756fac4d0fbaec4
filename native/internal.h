// Calls between the native mechanisms (not exported to JS).
#pragma once
#include <napi.h>
#include <uv.h>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_set>
#include <sys/types.h>

namespace nodemp {

uv_loop_t* LoopOf(Napi::Env env);
// The descriptors in the event loop's epoll set, as the kernel has them
// (Linux; elsewhere empty) (reap.cc).
std::unordered_set<int> EpollRegistrations(uv_loop_t* loop);
// Where the event loop stands with a poll handle, for the diagnosis of a
// notification that never came: its descriptor, whether the handle is active,
// whether the descriptor is readable now, whether the loop's table of watchers
// has this handle for it ('ours', 'none', or 'other' handle), and whether
// `epoll` (EpollRegistrations) holds it (Linux; elsewhere undefined) (reap.cc).
Napi::Object PollDiagnosis(Napi::Env env, uv_poll_t* poll, int fd, const std::unordered_set<int>& epoll);
// In a freshly forked child: forget the parent's children (their pidfds and
// poll handles belong to the parent's bookkeeping).
void ReapAfterFork();

// Counts the forks this process is a child of (fork.cc). A native loop that
// calls into JS compares it before and after: a callback that forked returns
// in the child too, where what the loop still holds is the parent's.
unsigned ForkGeneration();

// Calls `fn` from a libuv callback the way Node calls its own callbacks, so
// microtasks and process.nextTick callbacks run when it returns.
void CallFromLoop(Napi::Env env, const Napi::FunctionReference& fn, std::initializer_list<napi_value> args);

// Futex primitives (futex.cc). WaitOnWord returns kWoken, kNotEqual or
// kTimedOut, or -errno; timeout_ns < 0 waits forever.
enum WaitResult { kWoken = 0, kNotEqual = 1, kTimedOut = 2 };
int WaitOnWord(uint32_t* addr, uint32_t expected, int64_t timeout_ns);
int WakeWord(uint32_t* addr, uint32_t count);
// Resolves arguments (buffer, byteOffset) to an aligned word inside the
// buffer, or throws and returns nullptr.
uint32_t* WordAt(const Napi::CallbackInfo& info, const char* fn);
// Reads an optional timeout in milliseconds at info[index]; false if it threw.
bool TimeoutArg(const Napi::CallbackInfo& info, size_t index, const char* fn, int64_t* timeout_ns);
// In a freshly forked child: drop the parent's pending asynchronous waits.
void WaiterAfterFork();
// Whether a process exists and has not exited (a zombie has) (reap.cc).
bool PidAlive(pid_t pid);
// A live process's start time, never 0; 0 once it is gone or a zombie (reap.cc).
uint32_t PidStart(pid_t pid);
// Writes `length` bytes into a new named segment, handed to this process's
// tracker first (shm.cc); sets `name` (without the leading '/'). 0 or errno.
int WriteSegment(const uint8_t* data, size_t length, std::string* name);
// In a freshly forked child: drop the parent's queue feeds' hold on their mappings.
void RingAfterFork();
// In a freshly forked child: close the parent's connection watches (uv_poll
// handles of pending async recv/wait) and the exit descriptors wait() opened;
// the connection descriptors stay open. A no-op when already done for this pid.
void ConnAfterFork();

// Whether this process has lately waited for a CPU a fair share of the time,
// so that spinning waits would take a time slice a partner needs (sched.cc).
bool MachineBusy();
// Takes that verdict again if its window has ended; called by every wait as it goes to sleep.
void SampleIfDue();
// Notes the CPU this thread runs on now, for spin decisions (sched.cc); the JS thread only.
void NoteCpu();
// 1 + the CPU the calling thread runs on now, 0 if not known (lib/spin.ts cpuTag), for any thread.
int32_t CpuTag();
// A futex wake of the JS thread woke a sleeper: its next spin yields the CPU first (sched.cc).
void NoteWokeSleeper();
// The JS thread goes to sleep: a wake it made before is no longer the next spin's business.
void ForgetWake();

// The moments of one process start that trace.cc can stamp, in order.
enum TracePhase {
  kTraceStart,        // parent: start() entered
  kTraceMaps,         // parent: the pass over its mappings (MADV_DOFORK) begins
  kTracePark,         // parent: waits for the last of Node's platform worker threads to park
  kTraceFork,         // parent: fork() called
  kTraceParentBack,   // parent: fork() returned
  kTraceChildFirst,   // child: fork() returned
  kTraceChildFixed,   // child: event loop and the mechanisms' after-fork state redone
  kTraceChildJs,      // child: back in JS, the current process set up
  kTraceDropped,      // child: the parent's timers, immediates, handles and listeners dropped
  kTraceDetach,       // child: detach() called
  kTraceRepaired,     // child: async-id stack repaired, termination of the caller's frames requested
  kTraceLaunch,       // child: the target starts, from the event loop
  kTraceTargetDone,   // child: the target returned (or its promise settled)
  kTraceExit,         // child: _exit()
  kTracePhases,
};
void TraceStamp(TracePhase phase);

// Node's platform worker threads held in tasks of ours across fork(), so the
// child inherits no waiters on their condition variable (platform.cc). Park
// posts the tasks; Await waits until every thread runs one; Release lets them go.
struct WorkersParking {
  enum Outcome { kNotNeeded, kPosted, kParked, kTimedOut, kUnsupported };
  Outcome outcome = kNotNeeded;
  int threads = 0;
  std::shared_ptr<void> gate;
};
WorkersParking ParkPlatformWorkers(unsigned fork_generation);
void AwaitParkedWorkers(WorkersParking& parking);
void ReleasePlatformWorkers(WorkersParking& parking);

// Ends this process by SIGKILL once `ppid` is gone (fork.cc).
void DieWithParent(pid_t ppid);
// In a freshly forked child: drop the parent's control-socket watches (start.cc).
void StartAfterFork();
// When the environment that uses the addon ends (a worker thread exits, or
// the process): close each mechanism's handles on its loop, which Node
// requires empty, and let go of its references without calling them.
void WaiterEnvCleanup(napi_env env);
void RingEnvCleanup(napi_env env);
void ConnEnvCleanup(napi_env env);
void ReapEnvCleanup(napi_env env);
void StartEnvCleanup(napi_env env);
void CallFromLoopEnvCleanup(napi_env env);
void ErrorsEnvCleanup(napi_env env);

}  // namespace nodemp
