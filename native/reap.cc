// Child exit notification without blocking the event loop. Each child gets a
// file descriptor that becomes readable when it exits (a pidfd on Linux 5.3+,
// a kqueue with EVFILT_PROC on macOS), watched by a uv_poll handle; kernels
// without pidfd fall back to SIGCHLD. The handle is referenced for non-daemon
// children, so Node stays alive until they exit, as Python joins them at exit.
#include <napi.h>
#include <uv.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <unordered_map>
#include <vector>

#if defined(__linux__)
#include <sys/syscall.h>
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#elif defined(__APPLE__)
#include <sys/event.h>
#include <sys/sysctl.h>
#endif
#include <cstdio>
#include <cstring>

#include "errors.h"
#include "internal.h"

namespace nodemp {

struct Watch {
  int fd = -1;                  // readable once the child exits; -1: rely on SIGCHLD
  uv_poll_t* poll = nullptr;    // set while an async watch is running
  bool ref = true;
};

static std::unordered_map<pid_t, Watch> watches;
static Napi::FunctionReference on_exit;  // (pid, exitCode) => void
static napi_env watch_env = nullptr;
static uv_signal_t* sigchld = nullptr;

uv_loop_t* LoopOf(Napi::Env env) {
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  return loop;
}

std::unordered_set<int> EpollRegistrations(uv_loop_t* loop) {
  std::unordered_set<int> fds;
#if defined(__linux__)
  // One "tfd: N" line per descriptor in the set.
  std::string path = "/proc/self/fdinfo/" + std::to_string(uv_backend_fd(loop));
  if (FILE* f = std::fopen(path.c_str(), "r")) {
    char line[256];
    int tfd;
    while (std::fgets(line, sizeof line, f) != nullptr) {
      if (std::sscanf(line, "tfd: %d", &tfd) == 1) fds.insert(tfd);
    }
    std::fclose(f);
  }
#endif
  return fds;
}

Napi::Object PollDiagnosis(Napi::Env env, uv_poll_t* poll, int fd, const std::unordered_set<int>& epoll) {
  Napi::Object state = Napi::Object::New(env);
  state.Set("fd", fd);
  state.Set("active", poll != nullptr && uv_is_active(reinterpret_cast<uv_handle_t*>(poll)) != 0);
  pollfd p{fd, POLLIN, 0};
  state.Set("readable", fd >= 0 && ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0);
  uv_loop_t* loop = LoopOf(env);
  const char* watcher = "none";
  if (fd >= 0 && static_cast<unsigned>(fd) < loop->nwatchers && loop->watchers[fd] != nullptr) {
    watcher = poll != nullptr && loop->watchers[fd] == &poll->io_watcher ? "ours" : "other";
  }
  state.Set("loopWatcher", watcher);
#if defined(__linux__)
  state.Set("inEpoll", epoll.count(fd) != 0);
#endif
  return state;
}

// One async context per environment (a worker thread has its own), made at
// its first callback and destroyed with the environment.
static std::unordered_map<napi_env, Napi::AsyncContext*> contexts;

void CallFromLoopEnvCleanup(napi_env env) {
  auto it = contexts.find(env);
  if (it == contexts.end()) return;
  delete it->second;
  contexts.erase(it);
}

void CallFromLoop(Napi::Env env, const Napi::FunctionReference& fn, std::initializer_list<napi_value> args) {
  Napi::HandleScope scope(env);
  Napi::AsyncContext*& context = contexts[env];
  if (context == nullptr) context = new Napi::AsyncContext(env, "nodemp");
  // The C call, not FunctionReference::MakeCallback: while Node tears the
  // environment down it still runs pending loop callbacks but refuses to call
  // into JS, and node-addon-api would turn that refusal into a fatal error.
  napi_value recv;
  napi_value result;
  if (napi_create_object(env, &recv) != napi_ok) return;
  napi_status status = napi_make_callback(env, *context, recv, fn.Value(), args.size(), args.begin(), &result);
  // An exception here was already reported through process 'uncaughtException'
  // by MakeCallback; nothing is left to unwind on the native side.
  if (status == napi_pending_exception || env.IsExceptionPending()) env.GetAndClearPendingException();
}

static int ExitCodeOf(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return 0;
}

static int OpenExitFd(pid_t pid) {
#if defined(__linux__)
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));  // pidfds are always close-on-exec
  return fd >= 0 ? fd : -1;
#elif defined(__APPLE__)
  int kq = kqueue();
  if (kq < 0) return -1;
  fcntl(kq, F_SETFD, FD_CLOEXEC);
  struct kevent ev;
  EV_SET(&ev, pid, EVFILT_PROC, EV_ADD | EV_CLEAR, NOTE_EXIT, 0, nullptr);
  if (kevent(kq, &ev, 1, nullptr, 0, nullptr) < 0) {
    close(kq);
    return -1;
  }
  return kq;
#endif
}

static void FreePoll(uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); }

static void UpdateSigchldRef() {
  if (!sigchld) return;
  bool any = false;
  for (auto& kv : watches)
    if (kv.second.fd < 0 && kv.second.poll == nullptr && kv.second.ref) any = true;
  if (any) uv_ref(reinterpret_cast<uv_handle_t*>(sigchld));
  else uv_unref(reinterpret_cast<uv_handle_t*>(sigchld));
}

static void Forget(pid_t pid) {
  auto it = watches.find(pid);
  if (it == watches.end()) return;
  if (it->second.poll) uv_close(reinterpret_cast<uv_handle_t*>(it->second.poll), FreePoll);
  if (it->second.fd >= 0) close(it->second.fd);
  watches.erase(it);
  UpdateSigchldRef();
}

static constexpr int kRunning = INT32_MIN;
static constexpr int kNotOurChild = INT32_MIN + 1;

// Returns the exit code if `pid` has exited (and reaps it), kRunning while it
// runs, kNotOurChild when waitpid knows no such child.
static int Reap(pid_t pid) {
  int status;
  pid_t r;
  do r = waitpid(pid, &status, WNOHANG); while (r < 0 && errno == EINTR);
  if (r == pid) return ExitCodeOf(status);
  return r < 0 && errno == ECHILD ? kNotOurChild : kRunning;
}

static void Notify(pid_t pid, int code) {
  Forget(pid);
  if (on_exit.IsEmpty() || watch_env == nullptr) return;
  Napi::Env env(watch_env);
  Napi::HandleScope scope(env);
  CallFromLoop(env, on_exit, {Napi::Number::New(env, pid), Napi::Number::New(env, code)});
}

static void OnExitFdReadable(uv_poll_t* handle, int status, int events) {
  pid_t pid = static_cast<pid_t>(reinterpret_cast<intptr_t>(handle->data));
  int code = Reap(pid);
  if (code != kRunning) Notify(pid, code == kNotOurChild ? 0 : code);
}

static void OnSigchld(uv_signal_t*, int) {
  // Collect first: Notify runs JS, which may start or forget watches.
  std::vector<std::pair<pid_t, int>> done;
  for (auto& kv : watches) {
    if (kv.second.fd >= 0) continue;
    int code = Reap(kv.first);
    if (code != kRunning && code != kNotOurChild) done.emplace_back(kv.first, code);
  }
  unsigned generation = ForkGeneration();
  for (auto& d : done) {
    // A callback that forked comes back here in the child: the rest are the parent's children.
    if (ForkGeneration() != generation) return;
    Notify(d.first, d.second);
  }
}

// track(pid): begin bookkeeping for a child just forked.
static Napi::Value Track(const Napi::CallbackInfo& info) {
  pid_t pid = info[0].As<Napi::Number>().Int32Value();
  Watch w;
  w.fd = OpenExitFd(pid);
  watches[pid] = w;
  return info.Env().Undefined();
}

// watch(pid, ref): notify onExit(pid, code) from the event loop when it exits.
static Napi::Value WatchChild(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = info[0].As<Napi::Number>().Int32Value();
  auto it = watches.find(pid);
  if (it == watches.end()) {
    ThrowErrno(env, ECHILD, "watch", "pid " + std::to_string(pid) + " is not a tracked child");
    return env.Undefined();
  }
  Watch& w = it->second;
  w.ref = info[1].ToBoolean();
  watch_env = env;
  uv_loop_t* loop = LoopOf(env);
  if (w.fd >= 0) {
    if (!w.poll) {
      w.poll = new uv_poll_t;
      uv_poll_init(loop, w.poll, w.fd);
      w.poll->data = reinterpret_cast<void*>(static_cast<intptr_t>(pid));
      uv_poll_start(w.poll, UV_READABLE, OnExitFdReadable);
    }
    if (w.ref) uv_ref(reinterpret_cast<uv_handle_t*>(w.poll));
    else uv_unref(reinterpret_cast<uv_handle_t*>(w.poll));
  } else {
    if (!sigchld) {
      sigchld = new uv_signal_t;
      uv_signal_init(loop, sigchld);
      uv_signal_start(sigchld, OnSigchld, SIGCHLD);
    }
    UpdateSigchldRef();
    // The child may have exited before the handler was installed.
    int code = Reap(pid);
    if (code != kRunning && code != kNotOurChild) Notify(pid, code);
  }
  return env.Undefined();
}

// tryReap(pid) -> exit code, or undefined while it runs. Never blocks.
static Napi::Value TryReap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = info[0].As<Napi::Number>().Int32Value();
  int code = Reap(pid);
  if (code == kRunning) return env.Undefined();
  if (code == kNotOurChild) {
    ThrowErrno(env, ECHILD, "waitpid", "pid " + std::to_string(pid));
    return env.Undefined();
  }
  Forget(pid);
  return Napi::Number::New(env, code);
}

static uint64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

// waitSync(pid, timeoutMs | -1) -> exit code, or undefined on timeout. Blocks the thread.
static Napi::Value WaitSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = info[0].As<Napi::Number>().Int32Value();
  double timeout = info[1].As<Napi::Number>().DoubleValue();
  uint64_t deadline = timeout >= 0 ? NowMs() + static_cast<uint64_t>(timeout) : UINT64_MAX;
  auto it = watches.find(pid);
  int fd = it != watches.end() ? it->second.fd : -1;
  long sleep_us = 50;
  for (;;) {
    int code = Reap(pid);
    if (code == kNotOurChild) {
      ThrowErrno(env, ECHILD, "waitpid", "pid " + std::to_string(pid));
      return env.Undefined();
    }
    if (code != kRunning) {
      Forget(pid);
      return Napi::Number::New(env, code);
    }
    uint64_t now = NowMs();
    if (now >= deadline) return env.Undefined();
    uint64_t left = deadline - now;
    if (fd >= 0) {
      pollfd p{fd, POLLIN, 0};
      poll(&p, 1, left > INT32_MAX ? INT32_MAX : static_cast<int>(left));
    } else {
      // No exit fd on this kernel: back off from 50 µs to 5 ms between checks.
      long us = static_cast<long>(left * 1000 < static_cast<uint64_t>(sleep_us) ? left * 1000 : sleep_us);
      timespec ts{us / 1000000, (us % 1000000) * 1000};
      nanosleep(&ts, nullptr);
      if (sleep_us < 5000) sleep_us *= 2;
    }
  }
}

// signal(pid, sig) -> true if sent, false if the process is already gone.
// Whether a process exists and has not exited. A zombie has exited: a lock
// holder killed while its parent is not looking stays a zombie until reaped,
// and its locks must be recoverable meanwhile.
bool PidAlive(pid_t pid) {
  if (kill(pid, 0) != 0 && errno != EPERM) return false;
#if defined(__linux__)
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno != ENOENT;
  char buf[512];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return true;
  buf[n] = 0;
  // "pid (comm) S ...": comm may hold spaces and parentheses, the state follows the last ')'.
  const char* close_paren = std::strrchr(buf, ')');
  if (close_paren == nullptr || close_paren[1] == 0 || close_paren[2] == 0) return true;
  char state = close_paren[2];
  return state != 'Z' && state != 'X';
#elif defined(__APPLE__)
  int mib[4] = {CTL_KERN, KERN_PROC, KERN_PROC_PID, static_cast<int>(pid)};
  struct kinfo_proc kp;
  size_t len = sizeof kp;
  if (sysctl(mib, 4, &kp, &len, nullptr, 0) != 0 || len == 0) return true;
  return kp.kp_proc.p_stat != SZOMB;
#endif
}

// When a live process started, as a number that differs between two
// processes given the same pid (Linux: clock ticks since boot; macOS:
// microseconds), never 0; 0 if the process is gone or a zombie.
uint32_t PidStart(pid_t pid) {
#if defined(__linux__)
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[1024];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] == 0 || p[2] == 0 || p[2] == 'Z' || p[2] == 'X') return 0;
  // After ") " come the state (field 3) and, 19 fields on, the start time (field 22).
  p += 2;
  for (int field = 3; field < 22; field++) {
    p = std::strchr(p, ' ');
    if (p == nullptr) return 0;
    p++;
  }
  uint64_t ticks = std::strtoull(p, nullptr, 10);
  return static_cast<uint32_t>(ticks) | 1u;
#elif defined(__APPLE__)
  int mib[4] = {CTL_KERN, KERN_PROC, KERN_PROC_PID, static_cast<int>(pid)};
  struct kinfo_proc kp;
  size_t len = sizeof kp;
  if (sysctl(mib, 4, &kp, &len, nullptr, 0) != 0 || len == 0 || kp.kp_proc.p_stat == SZOMB) return 0;
  uint64_t us = static_cast<uint64_t>(kp.kp_proc.p_starttime.tv_sec) * 1000000u + kp.kp_proc.p_starttime.tv_usec;
  return static_cast<uint32_t>(us) | 1u;
#endif
}

// pidAlive(pid) -> boolean
static Napi::Value PidAliveJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double pid = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  if (!(pid >= 1) || pid > 2147483647.0 || pid != static_cast<double>(static_cast<pid_t>(pid))) {
    ThrowRangeError(env, "pidAlive(pid): pid must be a positive integer, got " + info[0].ToString().Utf8Value());
    return env.Undefined();
  }
  return Napi::Boolean::New(env, PidAlive(static_cast<pid_t>(pid)));
}

static Napi::Value Signal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = info[0].As<Napi::Number>().Int32Value();
  int sig = info[1].As<Napi::Number>().Int32Value();
  int r;
#if defined(__linux__)
  // Through the pidfd when we have one: it can never hit a recycled pid.
  auto it = watches.find(pid);
  if (it != watches.end() && it->second.fd >= 0)
    r = static_cast<int>(syscall(SYS_pidfd_send_signal, it->second.fd, sig, nullptr, 0));
  else
    r = kill(pid, sig);
#else
  r = kill(pid, sig);
#endif
  if (r == 0) return Napi::Boolean::New(env, true);
  if (errno == ESRCH) return Napi::Boolean::New(env, false);
  ThrowErrno(env, errno, "kill", "pid " + std::to_string(pid));
  return env.Undefined();
}

static Napi::Value SetOnExit(const Napi::CallbackInfo& info) {
  on_exit = Napi::Persistent(info[0].As<Napi::Function>());
  on_exit.SuppressDestruct();
  return info.Env().Undefined();
}

void ReapEnvCleanup(napi_env env) {
  if (!on_exit.IsEmpty() && static_cast<napi_env>(on_exit.Env()) == env) on_exit.Reset();
  if (watch_env != env) return;
  // Its children are nobody's to reap now: forget them, as a forked child does.
  ReapAfterFork();
  watch_env = nullptr;
}

void ReapAfterFork() {
  for (auto& kv : watches) {
    if (kv.second.poll) uv_close(reinterpret_cast<uv_handle_t*>(kv.second.poll), FreePoll);
    if (kv.second.fd >= 0) close(kv.second.fd);
  }
  watches.clear();
  if (sigchld) {
    uv_close(reinterpret_cast<uv_handle_t*>(sigchld), [](uv_handle_t* h) { delete reinterpret_cast<uv_signal_t*>(h); });
    sigchld = nullptr;
  }
}

// watchState(pid) -> the exit watch of a tracked child (PollDiagnosis, with
// `sigchld` where it relies on SIGCHLD, and on Linux `fdPid`, whose pidfd the
// descriptor is), or null for a pid not tracked: for the report of an exit
// that went unnoticed.
static Napi::Object WatchDiagnosis(Napi::Env env, pid_t pid, const Watch& w, const std::unordered_set<int>& epoll) {
  Napi::Object state = PollDiagnosis(env, w.poll, w.fd, epoll);
  state.Set("pid", pid);
  // Tracked only (exits learned by polling or a blocking wait), or watched from the loop.
  state.Set("watched", w.poll != nullptr);
  state.Set("sigchld", w.fd < 0);
#if defined(__linux__)
  // The process the descriptor is a pidfd of now: another (or none) means
  // it was closed behind the watch's back and its number given to something else.
  int of = 0;
  std::string path = "/proc/self/fdinfo/" + std::to_string(w.fd);
  if (FILE* f = w.fd >= 0 ? std::fopen(path.c_str(), "r") : nullptr) {
    char line[128];
    while (std::fgets(line, sizeof line, f) != nullptr) {
      if (std::sscanf(line, "Pid: %d", &of) == 1) break;
    }
    std::fclose(f);
  }
  state.Set("fdPid", of);
#endif
  return state;
}

static Napi::Value WatchState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : -1;
  auto it = watches.find(pid);
  if (it == watches.end()) return env.Null();
  return WatchDiagnosis(env, pid, it->second, EpollRegistrations(LoopOf(env)));
}

// exitWatches() -> watchState() of every tracked child.
static Napi::Value ExitWatches(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array all = Napi::Array::New(env, watches.size());
  std::unordered_set<int> epoll = EpollRegistrations(LoopOf(env));
  uint32_t i = 0;
  for (auto& kv : watches) all.Set(i++, WatchDiagnosis(env, kv.first, kv.second, epoll));
  return all;
}

void InitReap(Napi::Env env, Napi::Object exports) {
  exports.Set("watchState", Napi::Function::New(env, WatchState, "watchState"));
  exports.Set("exitWatches", Napi::Function::New(env, ExitWatches, "exitWatches"));
  exports.Set("setOnExit", Napi::Function::New(env, SetOnExit, "setOnExit"));
  exports.Set("track", Napi::Function::New(env, Track, "track"));
  exports.Set("watch", Napi::Function::New(env, WatchChild, "watch"));
  exports.Set("tryReap", Napi::Function::New(env, TryReap, "tryReap"));
  exports.Set("waitSync", Napi::Function::New(env, WaitSync, "waitSync"));
  exports.Set("signal", Napi::Function::New(env, Signal, "signal"));
  exports.Set("pidAlive", Napi::Function::New(env, PidAliveJs, "pidAlive"));
}

}  // namespace nodemp
