// fork() of the running Node process (see shared FORK-NOTES.md for why each
// step is here).
//
// Parent: re-enable inheritance of V8's heap pages (MADV_DOFORK), park Node's
// platform worker threads (platform.cc), fork, release them.
// Child, inside fork(): re-create the event loop, arm the parent-death signal
// for daemons, drop the parent's child bookkeeping, and expose the inherited
// sockets to JS so lib/child.ts can close them quietly.
// Child, in detach(): quiesce what JS could not close, clear Node's async-id
// stack, then TerminateExecution() to abandon the caller's JS frames without
// running their catch/finally blocks. The child then lives on in Node's own
// event loop: an idle handle starts the target from a fresh stack, and a
// prepare handle ends the process with _exit() once the loop has no work left,
// before Node's exit path (which would wait for threads that no longer exist).
#include <napi.h>
#include <uv.h>
#include <v8.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/prctl.h>
#elif defined(__APPLE__)
#include <pthread.h>
#include <sys/event.h>
#endif

#include "errors.h"
#include "internal.h"

namespace nodemp {

#if defined(__linux__)
// V8 marks its heap pages MADV_DONTFORK; a child without them crashes on its
// first JS instruction. Re-allow inheritance on every private anonymous
// mapping. Linux applies madvise() across unmapped holes (and reports ENOMEM
// at the end), so a run of eligible mappings separated only by holes costs a
// single call; a mapping of another kind in between ends the run, since some
// (VM_IO ones like [vvar]) would stop the call with EINVAL.
static void AllowHeapInheritance() {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  std::string maps;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    maps.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  uintptr_t run_start = 0, run_end = 0;
  auto flush = [&]() {
    if (run_end > run_start) madvise(reinterpret_cast<void*>(run_start), run_end - run_start, MADV_DOFORK);
    run_start = run_end = 0;
  };
  const char* p = maps.c_str();
  while (*p) {
    const char* eol = std::strchr(p, '\n');
    if (!eol) eol = p + std::strlen(p);
    char* q;
    uintptr_t start = std::strtoull(p, &q, 16);
    uintptr_t end = std::strtoull(q + 1, &q, 16);
    // q -> " rw-p 00000000 00:00 0    [name]"
    const char* perms = q + 1;
    bool priv = perms[3] == 'p';
    const char* f = perms + 5;                     // offset
    f = std::strchr(f, ' ') + 1;                   // device
    f = std::strchr(f, ' ') + 1;                   // inode
    unsigned long inode = std::strtoul(f, &q, 10);
    while (*q == ' ') q++;
    // Named special mappings ([vvar], [vdso], [stack]) either cannot take the
    // advice or are inherited already; plain anonymous memory and [heap] can.
    bool special = *q == '[' && std::strncmp(q, "[heap]", 6) != 0 && std::strncmp(q, "[anon", 5) != 0;
    if (priv && inode == 0 && !special) {
      if (run_end == 0) run_start = start;
      run_end = end;
    } else {
      flush();
    }
    p = *eol ? eol + 1 : eol;
  }
  flush();
}
#endif

// Thread-pool work that the parent's threads had finished, but its loop had
// not yet collected, waits on loop->wq. Collected in the child, it would run
// the parent's callbacks here, and each would end a request that the child
// counted as lost with the threads (ChildHasWork), so that a request of the
// child's own went uncounted and the child ended with its callback unrun
// (seen: fs.readFile called by a target). Each item is one active request.
// The child has no other thread yet: wq_mutex, which a parent's thread may
// have held at fork(), is not taken.
static void DropFinishedParentWork(uv_loop_t* loop) {
  unsigned dropped = 0;
  for (uv__queue* q = loop->wq.next; q != &loop->wq; q = q->next) dropped++;
  loop->wq.next = loop->wq.prev = &loop->wq;
  loop->active_reqs.count -= dropped < loop->active_reqs.count ? dropped : loop->active_reqs.count;
}

// The microtasks queued when fork() was called are the parent's: promise
// continuations of its code, which would go on in the child with the parent's
// objects and its share of every queue and pool (the soak saw a child take
// answers meant for the parent's pool). V8 empties its queue when a
// checkpoint is terminated; inside a checkpoint, detach()'s termination does
// the same (canRunInline() is false there).
static void DropParentMicrotasks() {
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  v8::MicrotaskQueue* queue = isolate->GetCurrentContext()->GetMicrotaskQueue();
  if (queue == nullptr || queue->IsRunningMicrotasks()) return;
  isolate->TerminateExecution();
  queue->PerformCheckpoint(isolate);
  isolate->CancelTerminateExecution();
}

struct ChildLoop {
  napi_env env = nullptr;
  uv_loop_t* loop = nullptr;
  uv_idle_t launcher;
  uv_prepare_t watchdog;
  Napi::FunctionReference launch;      // () => void: runs the target
  Napi::FunctionReference loop_empty;  // () => void: emits 'beforeExit'
  Napi::FunctionReference exit;        // () => void: emits 'exit', flushes, _exit()
  unsigned inherited_reqs = 0;
  // Requests in flight before a target that ran at once, inside start(), was
  // called (no bound when none ran): the ones it started itself are not
  // inherited.
  unsigned reqs_before_target = UINT_MAX;
  int launcher_ticks = 0;
  bool launched = false;
  bool exiting = false;
};
static ChildLoop* child = nullptr;
static pid_t parent_pid = 0;
static unsigned fork_generation = 0;
static WorkersParking::Outcome last_parking = WorkersParking::kNotNeeded;

unsigned ForkGeneration() { return fork_generation; }

// Inherited sockets, pipes and watchers (stdio aside), counted as the child
// starts: lib/child.ts closes them before a target runs, so a target cannot
// run at once, inside start(), while there are any.
static int inherited_closable = 0;

// Whether the child has work left: Node's own test (uv_loop_alive), minus our
// watchdog handle and minus requests inherited from the parent, which were
// queued on thread-pool threads that do not exist here and never complete.
static bool ChildHasWork() {
  uv_loop_t* loop = child->loop;
  unsigned reqs = loop->active_reqs.count;
  if (reqs < child->inherited_reqs) child->inherited_reqs = reqs;
  uv_unref(reinterpret_cast<uv_handle_t*>(&child->watchdog));
  loop->active_reqs.count = reqs - child->inherited_reqs;
  bool alive = uv_loop_alive(loop) != 0;
  loop->active_reqs.count = reqs;
  uv_ref(reinterpret_cast<uv_handle_t*>(&child->watchdog));
  return alive;
}

static void OnWatchdog(uv_prepare_t*) {
  if (!child->launched || child->exiting || ChildHasWork()) return;
  Napi::Env env(child->env);
  CallFromLoop(env, child->loop_empty, {});
  if (child->exiting || ChildHasWork()) return;
  child->exiting = true;
  CallFromLoop(env, child->exit, {});
}

static void OnLauncher(uv_idle_t* handle) {
  // The first iteration finishes closing the inherited handles (their pending
  // writes are cancelled then); what is still active after it is inherited
  // thread-pool work.
  if (child->launcher_ticks++ == 0) return;
  uv_idle_stop(handle);
  child->inherited_reqs = std::min(child->loop->active_reqs.count, child->reqs_before_target);
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  if (isolate->IsExecutionTerminating()) isolate->CancelTerminateExecution();
  child->launched = true;
  TraceStamp(kTraceLaunch);
  CallFromLoop(Napi::Env(child->env), child->launch, {});
}

// The caller's frames are gone once the outermost call into JS has returned,
// or, when start() ran inside a microtask, once that microtask checkpoint has
// ended (V8 reports both). A termination raised inside a checkpoint stays
// pending after it, and Node would then retry its timer callback against it
// forever; whichever report comes first cancels it.
static void FinishDetach(v8::Isolate* isolate);
static void OnCallCompleted(v8::Isolate* isolate) { FinishDetach(isolate); }
static void OnMicrotasksCompleted(v8::Isolate* isolate, void*) { FinishDetach(isolate); }
static void FinishDetach(v8::Isolate* isolate) {
  isolate->RemoveCallCompletedCallback(OnCallCompleted);
  isolate->RemoveMicrotasksCompletedCallback(OnMicrotasksCompleted, nullptr);
  if (isolate->IsExecutionTerminating()) isolate->CancelTerminateExecution();
}

static void RefInheritedSockets(uv_handle_t* h, void*) {
  // Made visible to process._getActiveHandles(), so JS can close the sockets
  // and servers it owns (unref'd ones would be hidden from it).
  if (uv_is_closing(h)) return;
  uv_os_fd_t fd;
  switch (h->type) {
    case UV_TCP:
    case UV_NAMED_PIPE:
    case UV_UDP:
      uv_ref(h);
      if (uv_fileno(h, &fd) != 0 || fd > 2) inherited_closable++;
      break;
    case UV_TTY:
      if (uv_fileno(h, &fd) != 0 || fd > 2) inherited_closable++;
      break;
    case UV_FS_EVENT:
    case UV_FS_POLL:
      if (uv_is_active(h)) inherited_closable++;
      break;
    default:
      break;
  }
}

// canRunInline() -> whether a freshly forked child may run its target at
// once, on the stack of start(), rather than from its event loop after the
// caller's frames are abandoned: not inside a microtask checkpoint (V8
// empties the microtask queue when the termination that abandons those
// frames ends one, and would take the target's own microtasks with it), and
// with nothing inherited that must be closed before a target runs.
static Napi::Value CanRunInline(const Napi::CallbackInfo& info) {
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  v8::MicrotaskQueue* queue = isolate->GetCurrentContext()->GetMicrotaskQueue();
  bool in_checkpoint = queue != nullptr && queue->IsRunningMicrotasks();
  return Napi::Boolean::New(info.Env(), parent_pid != 0 && !in_checkpoint && inherited_closable == 0);
}

// activeRequests() -> the event loop's requests in flight (fs, dns, writes...).
static Napi::Value ActiveRequests(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(LoopOf(info.Env())->active_reqs.count));
}

// loopWork() -> what would keep the event loop running (uv_loop_alive's
// test, counted): its active handles and requests, and handles still
// closing, whose close callbacks are yet to run. Compared before and after
// a target run at once.
static Napi::Value LoopWork(const Napi::CallbackInfo& info) {
  uv_loop_t* loop = LoopOf(info.Env());
  unsigned closing = 0;
  for (uv_handle_t* h = loop->closing_handles; h != nullptr; h = h->next_closing) closing++;
  return Napi::Number::New(info.Env(), static_cast<double>(loop->active_handles + loop->active_reqs.count + closing));
}

static void Quiesce(uv_handle_t* h, void* arg) {
  if (uv_is_closing(h)) return;
  bool* stdin_in_use = static_cast<bool*>(arg);
  switch (h->type) {
    case UV_TCP:
    case UV_NAMED_PIPE:
    case UV_TTY: {
      uv_os_fd_t fd;
      if (uv_fileno(h, &fd) == 0 && fd == 0) *stdin_in_use = true;
      uv_read_stop(reinterpret_cast<uv_stream_t*>(h));
      uv_unref(h);
      break;
    }
    case UV_UDP:
      uv_udp_recv_stop(reinterpret_cast<uv_udp_t*>(h));
      uv_unref(h);
      break;
    case UV_POLL:
      uv_poll_stop(reinterpret_cast<uv_poll_t*>(h));
      break;
    case UV_FS_EVENT:
      uv_fs_event_stop(reinterpret_cast<uv_fs_event_t*>(h));
      break;
    case UV_FS_POLL:
      uv_fs_poll_stop(reinterpret_cast<uv_fs_poll_t*>(h));
      break;
    case UV_SIGNAL:
      // Stopping the last handle for a signal restores its default action,
      // so terminate() works even if the parent handled SIGTERM.
      uv_signal_stop(reinterpret_cast<uv_signal_t*>(h));
      break;
    case UV_PROCESS:
      uv_unref(h);
      break;
    default:
      // Timers, idle/prepare/check and async handles are Node's own machinery,
      // which the child keeps using; their ref state follows the JS timers and
      // immediates that lib/child.ts has already cleared.
      break;
  }
}

#if defined(__APPLE__)
// macOS has no PR_SET_PDEATHSIG: a thread waits for the parent's exit and
// ends the child. Untested here (no macOS machine).
static void* WatchParentExit(void* arg) {
  pid_t ppid = static_cast<pid_t>(reinterpret_cast<intptr_t>(arg));
  int kq = kqueue();
  struct kevent ev;
  EV_SET(&ev, ppid, EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, nullptr);
  if (kq < 0 || kevent(kq, &ev, 1, nullptr, 0, nullptr) < 0) {
    if (getppid() != ppid) _exit(128 + SIGKILL);
    return nullptr;
  }
  struct kevent out;
  while (kevent(kq, nullptr, 0, &out, 1, nullptr) < 0 && errno == EINTR) {
  }
  _exit(128 + SIGKILL);
}
#endif

void DieWithParent(pid_t ppid) {
#if defined(__linux__)
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The parent may have died between fork() and prctl().
  if (getppid() != ppid) _exit(128 + SIGKILL);
#elif defined(__APPLE__)
  pthread_t t;
  pthread_create(&t, nullptr, WatchParentExit, reinterpret_cast<void*>(static_cast<intptr_t>(ppid)));
  pthread_detach(t);
#endif
}

// fork(daemon) -> pid in the parent, 0 in the child.
static Napi::Value Fork(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool daemon = info[0].ToBoolean();
  // The threads get to their tasks while the mappings are gone over.
  WorkersParking parking = ParkPlatformWorkers(fork_generation);
  TraceStamp(kTraceMaps);
#if defined(__linux__)
  AllowHeapInheritance();
#endif
  pid_t self = getpid();
  fflush(nullptr);
  TraceStamp(kTracePark);
  AwaitParkedWorkers(parking);
  last_parking = parking.outcome;
  TraceStamp(kTraceFork);
  pid_t pid = fork();
  if (pid != 0) ReleasePlatformWorkers(parking);
  if (pid < 0) {
    ThrowErrno(env, errno, "fork");
    return env.Undefined();
  }
  if (pid > 0) {
    TraceStamp(kTraceParentBack);
    return Napi::Number::New(env, pid);
  }
  TraceStamp(kTraceChildFirst);

  fork_generation++;
  last_parking = WorkersParking::kNotNeeded;
  parent_pid = self;
  uv_loop_t* loop = LoopOf(env);
  int err = uv_loop_fork(loop);
  if (err != 0) {
    std::fprintf(stderr, "nodemp: uv_loop_fork failed in the child: %s\n", uv_strerror(err));
    _exit(70);
  }
  if (daemon) DieWithParent(self);
  DropFinishedParentWork(loop);
  DropParentMicrotasks();
  if (child != nullptr) {
    // Forked from a forked child: its watchdog would end us with its state.
    // The handles close on the next loop turn, so the struct stays allocated.
    uv_close(reinterpret_cast<uv_handle_t*>(&child->watchdog), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&child->launcher), nullptr);
    child = nullptr;
  }
  inherited_closable = 0;
  ReapAfterFork();
  WaiterAfterFork();
  RingAfterFork();
  ConnAfterFork();
  StartAfterFork();
  // The parent's CPU, until now: the child's first release would publish it.
  NoteCpu();
  uv_walk(loop, RefInheritedSockets, nullptr);
  TraceStamp(kTraceChildFixed);
  return Napi::Number::New(env, 0);
}

// detach(sentinel, launch, loopEmpty, exit, reqsBeforeTarget?): see the header comment. Never
// returns to the caller's frames: JS execution is terminated on return.
static Napi::Value Detach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (parent_pid == 0 || child != nullptr) {
    ThrowTypeError(env, "detach() is only valid once, in a freshly forked child");
    return env.Undefined();
  }
  child = new ChildLoop;
  child->env = env;
  child->loop = LoopOf(env);
  child->launch = Napi::Persistent(info[1].As<Napi::Function>());
  child->loop_empty = Napi::Persistent(info[2].As<Napi::Function>());
  child->exit = Napi::Persistent(info[3].As<Napi::Function>());
  if (info[4].IsNumber()) child->reqs_before_target = info[4].As<Napi::Number>().Uint32Value();

  TraceStamp(kTraceDetach);
  bool stdin_in_use = false;
  uv_walk(child->loop, Quiesce, &stdin_in_use);
  // As Python does, a child reads nothing from the parent's stdin. A handle
  // the parent already opened on fd 0 is stopped instead: libuv cannot poll
  // /dev/null.
  if (!stdin_in_use) {
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull >= 0) {
      dup2(devnull, 0);
      close(devnull);
    }
  }

  uv_idle_init(child->loop, &child->launcher);
  uv_idle_start(&child->launcher, OnLauncher);
  uv_prepare_init(child->loop, &child->watchdog);
  uv_prepare_start(&child->watchdog, OnWatchdog);

  // Timer, immediate and tick callbacks push async ids from JS; abandoning
  // their frames would leave Node's async-id stack corrupt (a fatal error when
  // the native callback scope closes). Node empties that stack after an
  // 'uncaughtException' listener handles an error, and lib/child.ts has one
  // that recognises this sentinel.
  napi_fatal_exception(env, info[0]);
  if (env.IsExceptionPending()) env.GetAndClearPendingException();

  TraceStamp(kTraceRepaired);
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  isolate->AddCallCompletedCallback(OnCallCompleted);
  isolate->AddMicrotasksCompletedCallback(OnMicrotasksCompleted, nullptr);
  isolate->TerminateExecution();
  return env.Undefined();
}

// exit(code): leave at once. Node's exit path would join threads that do not
// exist in a forked child.
static Napi::Value Exit(const Napi::CallbackInfo& info) {
  int code = info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
  TraceStamp(kTraceExit);
  _exit(code & 0xff);
}

// lastParking() -> what the latest fork() of this process did with Node's
// platform worker threads (see platform.cc): 'parked', 'timed-out',
// 'unsupported' (this Node's platform symbols were not found), or 'none'
// (no fork yet, or a forked process, which has no such threads).
static Napi::Value LastParking(const Napi::CallbackInfo& info) {
  const char* name = "none";
  switch (last_parking) {
    case WorkersParking::kParked: name = "parked"; break;
    case WorkersParking::kTimedOut: name = "timed-out"; break;
    case WorkersParking::kUnsupported: name = "unsupported"; break;
    case WorkersParking::kNotNeeded:
    case WorkersParking::kPosted: break;
  }
  return Napi::String::New(info.Env(), name);
}

static Napi::Value ParentPid(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), getppid());
}

static Napi::Value Pid(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), getpid());
}

void InitFork(Napi::Env env, Napi::Object exports) {
  exports.Set("fork", Napi::Function::New(env, Fork, "fork"));
  exports.Set("detach", Napi::Function::New(env, Detach, "detach"));
  exports.Set("canRunInline", Napi::Function::New(env, CanRunInline, "canRunInline"));
  exports.Set("loopWork", Napi::Function::New(env, LoopWork, "loopWork"));
  exports.Set("activeRequests", Napi::Function::New(env, ActiveRequests, "activeRequests"));
  exports.Set("exit", Napi::Function::New(env, Exit, "exit"));
  exports.Set("getpid", Napi::Function::New(env, Pid, "getpid"));
  exports.Set("getppid", Napi::Function::New(env, ParentPid, "getppid"));
  exports.Set("lastParking", Napi::Function::New(env, LastParking, "lastParking"));
}

}  // namespace nodemp
