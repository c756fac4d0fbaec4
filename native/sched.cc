// Whether a wait should spin before it sleeps, as the machine allows. On
// idle cores the partner that will wake us runs on another core meanwhile
// and a spin saves the sleep and wake-up. When runnable processes outnumber
// the cores, the partner is often queued behind the spinner, and a spin only
// takes the time slice it needs. The kernel counts, per task, the time it
// was runnable but waiting for a CPU (schedstat's run_delay): a process that
// waits for a CPU a fair part of the time is on a machine where spinning
// does harm. Measured on this 2-core machine: about 1% of the time idle,
// 27-29% with one or two CPU-bound processes beside a ping-pong pair.
//
// Every wake-up from a sleep spends a few microseconds on a run queue too
// (5-6 µs here, idle or not), and a process that sleeps on every wait wakes
// so often that this alone reached 48% of its time: a pool's main thread,
// once found busy, stopped spinning, slept on every answer, and its wake-ups
// kept it "busy" on an idle machine (apply round trip 10 µs instead of 3).
// A busy machine looks the same from inside one process: its sleeper, too,
// is run soon after each wake-up. So where the wait is mostly wake-ups (under
// kWakeAllowanceNs per time slice), the kernel's count of runnable tasks
// decides: more than the cores, busy. Judging by the allowance alone made
// the ping-pongs under load 3-4x slower (they spun again, and lost their
// partner's slices); keeping the verdict whenever runnable tasks outnumber
// the cores, with no allowance test first, made the Event wake and
// Pool.apply under load slower than a thread's.
#include <napi.h>
#include <atomic>
#include <cstdint>
#include <ctime>

#include "internal.h"

#if defined(__linux__)
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>
#elif defined(__APPLE__)
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>
#endif

namespace nodemp {

// How often the decision is taken again, and the share of its window a
// process must have waited for a CPU to count as on a busy machine (with
// hysteresis: it counts as idle again below kIdleShare).
constexpr uint64_t kWindowNs = 2000000;
constexpr uint64_t kBusyShareOf1000 = 150;
constexpr uint64_t kIdleShareOf1000 = 80;
constexpr uint64_t kWakeAllowanceNs = 20000;

// The verdict after a window of `window` ns in which the main thread waited
// `waited` ns on a run queue over `slices` time slices; `crowded()` (more
// tasks runnable than cores) is asked only when the wait was mostly wake-ups.
template <typename Crowded>
static bool Verdict(bool was_busy, uint64_t waited, uint64_t slices, uint64_t window, Crowded crowded) {
  if (window == 0) return was_busy;
  uint64_t threshold = was_busy ? kIdleShareOf1000 : kBusyShareOf1000;
  if (waited * 1000 / window < threshold) return false;
  uint64_t allowed = slices * kWakeAllowanceNs;
  if (waited > allowed && (waited - allowed) * 1000 / window >= threshold) return true;
  return crowded();
}

static std::atomic<uint64_t> window_start{0};
static std::atomic<uint64_t> delay_at_start{0};
static std::atomic<uint64_t> slices_at_start{0};
static std::atomic<pid_t> sampled_pid{0};
// 1 on a busy machine, 0 otherwise; JS reads it with no call (busyWord).
static std::atomic<int32_t> busy{0};
static_assert(sizeof(std::atomic<int32_t>) == sizeof(int32_t), "busyWord is read as one Int32Array element");

static uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

#if defined(__linux__)
// The counter file stays open and is read again from its start: one system
// call a window where opening it each time cost three. "self" was resolved
// when it was opened, so a forked child (another pid) opens its own.
static int stat_fd = -1;
static pid_t stat_fd_pid = 0;

// Nanoseconds this process's main thread has waited on a run queue, and the
// time slices it has had; false where the kernel does not keep schedstats.
static bool ReadSchedstat(pid_t pid, uint64_t* delay, uint64_t* slices) {
  if (stat_fd_pid != pid) {
    if (stat_fd >= 0) close(stat_fd);
    stat_fd = open("/proc/self/schedstat", O_RDONLY | O_CLOEXEC);
    stat_fd_pid = pid;
  }
  if (stat_fd < 0) return false;
  char buf[96];
  ssize_t n = pread(stat_fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return false;
  buf[n] = 0;
  // "<ns on cpu> <ns waiting on a run queue> <time slices>"
  uint64_t field[3] = {0, 0, 0};
  char* p = buf;
  for (int i = 0; i < 3; i++) {
    if (i > 0 && *p++ != ' ') return false;
    if (*p < '0' || *p > '9') return false;
    for (; *p >= '0' && *p <= '9'; p++) field[i] = field[i] * 10 + static_cast<uint64_t>(*p - '0');
  }
  *delay = field[1];
  *slices = field[2];
  return true;
}

// How many tasks are runnable right now, this one included: the fourth
// field of /proc/loadavg, "<runnable>/<all>"; -1 where it cannot be read.
static int loadavg_fd = -1;
static long RunnableTasks() {
  if (loadavg_fd < 0) loadavg_fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
  if (loadavg_fd < 0) return -1;
  char buf[128];
  ssize_t n = pread(loadavg_fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return -1;
  buf[n] = 0;
  char* p = buf;
  for (int spaces = 0; *p != 0 && spaces < 3; p++) spaces += *p == ' ';
  long runnable = 0;
  for (; *p >= '0' && *p <= '9'; p++) runnable = runnable * 10 + (*p - '0');
  return runnable;
}

static const long online_cores = sysconf(_SC_NPROCESSORS_ONLN);

// Whether more tasks are runnable than there are cores. Where it cannot be
// read, the wait for a CPU alone decides, as it did before.
static bool RunnableExceedCores() {
  long runnable = RunnableTasks();
  return runnable < 0 || runnable > online_cores;
}

// A wait asks after each wake-up whether the machine is crowded, and the read
// of /proc/loadavg costs 1.4 us here (the kernel sums every CPU's run queue):
// a Semaphore ping-pong on one CPU paid it on both sides of every round, a
// third of the round trip's own work. How crowded a machine is changes over
// scheduler ticks, not microseconds: a reading serves for kCrowdedFreshNs.
constexpr uint64_t kCrowdedFreshNs = 1000000;
static uint64_t crowded_read_at = 0;
static bool crowded_seen = false;

static bool MachineCrowded() {
  uint64_t now = NowNs();
  if (crowded_read_at == 0 || now - crowded_read_at >= kCrowdedFreshNs) {
    crowded_seen = RunnableTasks() > online_cores;
    crowded_read_at = now;
  }
  return crowded_seen;
}

static void Sample(uint64_t now) {
  uint64_t delay;
  uint64_t slices;
  pid_t pid = getpid();
  if (!ReadSchedstat(pid, &delay, &slices)) {
    // No schedstats here: the verdict stays idle, and a failed read is not retried on every sleep.
    window_start.store(now, std::memory_order_relaxed);
    return;
  }
  uint64_t start = window_start.load(std::memory_order_relaxed);
  uint64_t before = delay_at_start.load(std::memory_order_relaxed);
  uint64_t slices_before = slices_at_start.load(std::memory_order_relaxed);
  // A forked child's counters start again from 0: its first window only sets the baseline.
  if (sampled_pid.load(std::memory_order_relaxed) == pid && start != 0 && delay >= before && slices >= slices_before) {
    bool was = busy.load(std::memory_order_relaxed) != 0;
    busy.store(Verdict(was, delay - before, slices - slices_before, now - start, RunnableExceedCores) ? 1 : 0, std::memory_order_relaxed);
  }
  sampled_pid.store(pid, std::memory_order_relaxed);
  delay_at_start.store(delay, std::memory_order_relaxed);
  slices_at_start.store(slices, std::memory_order_relaxed);
  window_start.store(now, std::memory_order_relaxed);
}
#elif defined(__APPLE__)
// Untested here (no macOS machine): macOS keeps no per-task run-queue delay
// that a process can read cheaply; the one-minute load average against the
// cores is the rough stand-in.
static void Sample(uint64_t now) {
  double load;
  if (getloadavg(&load, 1) != 1) return;
  static const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  busy.store(load > static_cast<double>(cores) ? 1 : 0, std::memory_order_relaxed);
  window_start.store(now, std::memory_order_relaxed);
}
#else
static void Sample(uint64_t now) {}
#endif

#if !defined(__linux__)
static bool MachineCrowded() { return false; }
#endif

bool MachineBusy() { return busy.load(std::memory_order_relaxed) != 0; }

// Busy or not, a spin harms only a partner queued on the spinner's own CPU:
// one running or queued on another CPU loses nothing, and is caught by the
// spin once it answers. A C ping-pong under two CPU-bound processes on this
// 2-core VM: sleeping on every wait, 11-12 us a round trip in some runs and
// 107-110 in others (Python's the same); spinning only while the partner
// last ran on another CPU, 0.5 or 10.5 us, p99 51 us against 3.6 ms;
// spinning always, 0.5 or 123 us. So a process keeps the CPU it last ran on
// where JS reads it without a call (an external buffer), and publishes it
// beside the words it wakes others on. It is that of the thread that runs
// nodemp's JS (native.ts refuses a second), read as the process starts or is
// forked, as its waits come back from sleep and as a wait asks whether to
// spin; -1: not known (macOS has no cheap per-thread CPU number), and a
// wait whose partner is not known does not spin on a busy machine.
static int32_t last_cpu = -1;

int32_t CpuTag() {
#if defined(__linux__)
  int cpu = sched_getcpu();
  return cpu >= 0 ? cpu + 1 : 0;
#else
  return 0;
#endif
}

void NoteCpu() {
  int32_t tag = CpuTag();
  if (tag > 0) last_cpu = tag - 1;
}

// Set when a futex wake of the JS thread (futex.cc) woke a sleeper, taken by
// its next wait: a sleep (futexWait, waitAsync), a long poll's decision
// (lib/spin.ts pollPays) or a spin decision (spinLimit), which on idle cores
// yields the CPU first: the process woken is often queued on this very CPU,
// and a spin waiting for its answer would keep it off. Measured here, from
// just before an Event's set() to the woken process running, the setter then
// waiting in waitSync() for its answer: the woken process was on the setter's
// CPU in 94% of 300 rounds and ran after 52-58 us (median of a run) while the
// setter spun, 22-23 us with a sched_yield() right after set(). Only Linux
// says how many a wake woke: on macOS the note is never set. Only nodemp's
// one JS thread wakes (native.ts refuses a second), so a plain int will do.
static int32_t woke_sleeper = 0;

void NoteWokeSleeper() { woke_sleeper = 1; }

void ForgetWake() { woke_sleeper = 0; }

// The verdict is taken again on the way to sleep, never while a wait spins:
// reading the counter costs a few system calls, which a spin that is about
// to see its partner's answer should not pay. A forked child goes on with
// its parent's verdict until its first window ends.
void SampleIfDue() {
  uint64_t now = NowNs();
  if (now - window_start.load(std::memory_order_relaxed) >= kWindowNs) Sample(now);
}

// A pool worker's policy between SCHED_OTHER and SCHED_BATCH (lib/pool.ts
// nextTask, before it sleeps). A SCHED_BATCH task woken does not preempt the
// one running on its CPU, which on a crowded machine is often the process
// that woke it, the pool's dispatcher, in the middle of handing out the rest
// of the work. Only the calling thread changes, the one that runs the tasks.
// A policy chosen from outside (chrt, an initializer, the one the pool's
// process was started with) is kept: the worker then never changes it.
#if defined(__linux__)
static int managed_policy = -1;
static bool policy_unmanaged = false;
#endif

static void SetBatch(bool on) {
#if defined(__linux__)
  int want = on ? SCHED_BATCH : SCHED_OTHER;
  if (policy_unmanaged || want == managed_policy) return;
  int expected = managed_policy < 0 ? SCHED_OTHER : managed_policy;
  struct sched_param param = {};
  if (sched_getscheduler(0) != expected || (want != expected && sched_setscheduler(0, want, &param) != 0)) {
    policy_unmanaged = true;
    return;
  }
  managed_policy = want;
#else
  (void)on;
#endif
}

void InitSched(Napi::Env env, Napi::Object exports) {
  exports.Set("machineBusy", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    NoteCpu();
    return Napi::Boolean::New(info.Env(), MachineBusy());
  }));
  NoteCpu();
  exports.Set("cpuWord", Napi::ArrayBuffer::New(env, &last_cpu, sizeof last_cpu));
  exports.Set("wokeWord", Napi::ArrayBuffer::New(env, &woke_sleeper, sizeof woke_sleeper));
  exports.Set("busyWord", Napi::ArrayBuffer::New(env, &busy, sizeof busy));
  exports.Set("schedYield", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    sched_yield();
    NoteCpu();
    return info.Env().Undefined();
  }));
  // Read only at the first spin decision after a wake-up, for a partner that last ran on this CPU (lib/spin.ts spinLimit): a system call.
  exports.Set("machineCrowded", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    return Napi::Boolean::New(info.Env(), MachineCrowded());
  }));
  // A pool worker, before it sleeps for its next task: SCHED_BATCH after a backlog or while its pool had more to send.
  exports.Set("schedBatch", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    SetBatch(info[0].ToBoolean().Value());
    return info.Env().Undefined();
  }));
  // Internal (tests): schedVerdict(wasBusy, waitedNs, slices, windowNs, crowded).
  exports.Set("schedVerdict", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    bool crowded = info[4].ToBoolean().Value();
    bool verdict = Verdict(info[0].ToBoolean().Value(), static_cast<uint64_t>(info[1].ToNumber().Int64Value()),
                           static_cast<uint64_t>(info[2].ToNumber().Int64Value()),
                           static_cast<uint64_t>(info[3].ToNumber().Int64Value()), [crowded] { return crowded; });
    return Napi::Boolean::New(info.Env(), verdict);
  }));
}

}  // namespace nodemp
