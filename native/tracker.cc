// Owner-death cleanup of named shared-memory segments (see lib/shared-memory.ts).
//
// The first segment a process creates starts a tracker: a grandchild of that
// process (double fork, so nobody has to reap it and it is re-parented to init
// or the nearest subreaper) that holds the read end of a pipe. The creator
// keeps the write end, close-on-exec so exec'd programs do not hold it, but
// inherited by fork(): every process forked from the creator, at any depth,
// shares it, and so does a child started by spawn or forkserver, which is
// handed it (trackerFd, trackerAdopt). The tracker reads "R name" (register) and "U name" (unregister)
// lines; it sees EOF only when the last holder of the write end is gone, by
// exit or by SIGKILL alike, and then unlinks every name still registered and
// exits. A line is one write() of at most PIPE_BUF bytes (512 on macOS), so
// lines from concurrent writers never interleave.
//
// The tracker is a fork of a (possibly multithreaded) Node process, so after
// fork() it makes only async-signal-safe calls and system calls, and never
// allocates through malloc: its name table lives in memory it mmaps itself.
// On Linux it then unmaps the memory it inherited and does not need (see
// DropInheritedMemory). macOS keeps the copy-on-write snapshot (untested).
#include <napi.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "errors.h"

#if defined(__linux__)
#include <sys/prctl.h>
#endif

namespace nodemp {

// Longest name shm_open accepts on Linux (macOS stops at 31 bytes).
constexpr size_t kMaxName = NAME_MAX;

// ---- the tracker process ---------------------------------------------------

#if defined(__linux__)
// glibc (2.34 and later) and musl implement shm_unlink(name) as exactly this
// unlink; calling it directly spares the tracker older glibc's librt, whose
// shm_unlink reads a directory name that it keeps on the heap.
constexpr char kShmDir[] = "/dev/shm/";
#else
constexpr char kShmDir[] = "/";
static int UnlinkShm(const char* path) { return shm_unlink(path); }
#endif
constexpr size_t kShmDirLength = sizeof kShmDir - 1;

// The libc functions the tracker calls once it has dropped the memory it
// inherited, taken by address: the address was bound when the addon was
// loaded, while a first call through the PLT would be bound lazily, by code
// that reads the dynamic linker's heap-allocated state. Volatile, so that the
// compiler cannot turn the calls back into direct ones.
struct Libc {
  ssize_t (*volatile read)(int, void*, size_t);
  int (*volatile unlink)(const char*);
  void* (*volatile mmap)(void*, size_t, int, int, int, off_t);
  int (*volatile munmap)(void*, size_t);
  void (*volatile exit)(int);
};

// Plain loops where the compiler would call memcpy or strcmp through the PLT;
// the volatile store keeps it from recognising the copy.
static void CopyBytes(char* to, const char* from, size_t n) {
  volatile char* out = to;
  for (size_t i = 0; i < n; i++) out[i] = from[i];
}

static bool SameString(const char* a, const char* b) {
  for (;; a++, b++) {
    if (*a != *b) return false;
    if (*a == '\0') return true;
  }
}

// One registered segment: the path to unlink, NUL-terminated.
struct Slot {
  char path[kShmDirLength + kMaxName + 1];
};

struct Table {
  Slot* slots;
  size_t used;
  size_t capacity;
};

static size_t Find(const Table& t, const char* path) {
  for (size_t i = 0; i < t.used; i++)
    if (SameString(t.slots[i].path, path)) return i;
  return t.used;
}

static void Add(const Libc& libc, Table* t, const char* path, size_t len) {
  if (Find(*t, path) < t->used) return;
  if (t->used == t->capacity) {
    size_t capacity = t->capacity ? t->capacity * 2 : 256;
    void* grown = libc.mmap(nullptr, capacity * sizeof(Slot), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    // Out of memory: this name stays unguarded rather than the others lost.
    if (grown == MAP_FAILED) return;
    if (t->slots != nullptr) {
      CopyBytes(static_cast<char*>(grown), reinterpret_cast<const char*>(t->slots), t->used * sizeof(Slot));
      libc.munmap(t->slots, t->capacity * sizeof(Slot));
    }
    t->slots = static_cast<Slot*>(grown);
    t->capacity = capacity;
  }
  CopyBytes(t->slots[t->used].path, path, len + 1);
  t->used++;
}

static void Remove(Table* t, const char* path) {
  size_t i = Find(*t, path);
  if (i == t->used) return;
  t->used--;
  if (i != t->used) CopyBytes(t->slots[i].path, t->slots[t->used].path, sizeof(Slot));
}

// `line` holds kShmDir, then "R name" or "U name" (without the newline) from
// offset kShmDirLength; anything else is ignored.
static void Handle(const Libc& libc, Table* t, char* line, size_t len) {
  char op = line[kShmDirLength];
  size_t n = len - kShmDirLength;
  if (n < 3 || n > kMaxName + 2 || line[kShmDirLength + 1] != ' ' || (op != 'R' && op != 'U')) return;
  // The directory goes right in front of the name, over "R ".
  CopyBytes(line + 2, kShmDir, kShmDirLength);
  line[len] = '\0';
  if (op == 'R')
    Add(libc, t, line + 2, len - 2);
  else
    Remove(t, line + 2);
}

static void CloseFrom(int first, int limit) {
#if defined(__linux__) && defined(SYS_close_range)
  if (syscall(SYS_close_range, static_cast<unsigned>(first), ~0u, 0u) == 0) return;
#endif
  // Kernels before 5.9, and macOS.
  for (int fd = first; fd < limit; fd++) close(fd);
}

#if defined(__linux__)
static uintptr_t ParseHex(const char** p) {
  uintptr_t v = 0;
  for (;; (*p)++) {
    char c = **p;
    if (c >= '0' && c <= '9') v = v * 16 + static_cast<uintptr_t>(c - '0');
    else if (c >= 'a' && c <= 'f') v = v * 16 + static_cast<uintptr_t>(c - 'a' + 10);
    else return v;
  }
}

static bool StartsWith(const char* s, const char* prefix) {
  for (; *prefix; s++, prefix++)
    if (*s != *prefix) return false;
  return true;
}

// A fork shares every page of the parent copy-on-write, so a tracker that
// kept them would pin the Node process's heaps as they were: each page the
// parent writes later is copied, and the tracker holds the old one for as
// long as it lives. It needs only its stack and thread block (TLS) and the
// code and data of the loaded objects; every other mapping (heaps, mapped
// segments, anonymous shared memory) is unmapped.
[[maybe_unused]] static void DropInheritedMemory(const Libc& libc) {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  size_t capacity = 1 << 20;
  char* text;
  size_t length;
  for (;;) {
    void* m = libc.mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
      close(fd);
      return;
    }
    text = static_cast<char*>(m);
    length = 0;
    ssize_t n;
    while (length < capacity - 1 && (n = libc.read(fd, text + length, capacity - 1 - length)) > 0) length += static_cast<size_t>(n);
    if (length < capacity - 1) break;
    libc.munmap(text, capacity);
    capacity *= 2;
    if (lseek(fd, 0, SEEK_SET) != 0) {
      close(fd);
      return;
    }
  }
  close(fd);
  text[length] = '\0';
  int on_stack = 0;
  const uintptr_t needed[] = {
      reinterpret_cast<uintptr_t>(&on_stack),
      reinterpret_cast<uintptr_t>(pthread_self()),  // the thread block
      reinterpret_cast<uintptr_t>(&errno),          // thread-local storage
      reinterpret_cast<uintptr_t>(text),
  };
  uintptr_t previous_end = 0;
  bool previous_object = false;
  // Each line: "start-end perms offset dev inode   [path]".
  for (const char* p = text; *p;) {
    uintptr_t start = ParseHex(&p);
    p++;
    uintptr_t end = ParseHex(&p);
    p++;
    bool priv = p[3] == 'p';
    p += 5;
    ParseHex(&p);  // offset
    while (*p == ' ') p++;
    while (*p != ' ' && *p) p++;  // device
    while (*p == ' ') p++;
    bool anonymous = true;  // inode 0
    for (; *p >= '0' && *p <= '9'; p++) anonymous = anonymous && *p == '0';
    while (*p == ' ') p++;
    const char* path = p;
    while (*p != '\n' && *p) p++;
    if (*p) p++;

    bool holds = false;
    for (uintptr_t a : needed) holds = holds || (a >= start && a < end);
    // A loaded object's code or data (or another private file mapping: its
    // clean pages cost nothing), then its .bss right behind it.
    bool object = priv && !anonymous;
    bool bss = priv && anonymous && start == previous_end && previous_object;
    // [stack], [vdso], [vvar], [vsyscall]; not [heap] or named anonymous memory.
    bool special = *path == '[' && !StartsWith(path, "[heap]") && !StartsWith(path, "[anon");
    if (!(object || bss || special || holds)) libc.munmap(reinterpret_cast<void*>(start), end - start);
    previous_end = end;
    previous_object = object || bss;
  }
  libc.munmap(text, capacity);
}
#endif

[[noreturn]] static void RunTracker(int read_fd, int fd_limit) {
  Libc libc;
  libc.read = &read;
#if defined(__linux__)
  libc.unlink = &unlink;
#else
  libc.unlink = &UnlinkShm;
#endif
  libc.mmap = &mmap;
  libc.munmap = &munmap;
  libc.exit = &_exit;

  // Every signal was blocked around fork(). Handlers installed by Node would
  // run Node's code here: restore the defaults, except that the tracker ignores
  // the signals a terminal or a supervisor sends to a whole process group. Its
  // life is bound to the pipe, not to signals: it must outlive a creator that
  // catches SIGINT and is SIGKILLed later.
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  for (int s = 1; s < NSIG; s++) {
    sa.sa_handler = (s == SIGINT || s == SIGTERM || s == SIGHUP) ? SIG_IGN : SIG_DFL;
    sigaction(s, &sa, nullptr);  // fails harmlessly for SIGKILL, SIGSTOP and reserved numbers
  }
  // Out of the terminal's session, so Ctrl-Z cannot stop it either.
  setsid();
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  if (chdir("/") != 0) {
    // A held working directory only keeps a mount busy; nothing to undo.
  }
#if defined(__linux__)
  prctl(PR_SET_NAME, "nodemp-tracker", 0, 0, 0);
#endif
  // The pipe becomes fd 0 and nothing else stays open: no copy of the write
  // end (which would keep the pipe from ever reaching EOF), and none of the
  // parent's sockets, pipes or files.
  if (read_fd != 0) dup2(read_fd, 0);
  CloseFrom(1, fd_limit);
  // An AddressSanitizer build (npm run test:asan) needs its shadow memory and
  // runtime state in every process that runs instrumented code.
#if defined(__linux__) && !defined(__SANITIZE_ADDRESS__)
  DropInheritedMemory(libc);
#endif

  // Without signal handlers, read() is never interrupted (EINTR).
  Table table = {nullptr, 0, 0};
  char line[kShmDirLength + kMaxName + 4];
  size_t length = kShmDirLength;
  bool overlong = false;
  char buf[4096];
  ssize_t n;
  while ((n = libc.read(0, buf, sizeof buf)) > 0) {
    for (ssize_t i = 0; i < n; i++) {
      if (buf[i] == '\n') {
        if (!overlong) Handle(libc, &table, line, length);
        length = kShmDirLength;
        overlong = false;
      } else if (length + 1 < sizeof line) {
        line[length++] = buf[i];
      } else {
        overlong = true;
      }
    }
  }
  for (size_t i = 0; i < table.used; i++) libc.unlink(table.slots[i].path);
  libc.exit(0);
  __builtin_unreachable();
}

// ---- the creator's side ------------------------------------------------------

// Guards the state below against worker threads creating segments at the same
// time. Process.start() refuses to fork while workers run, so no thread holds
// it across a fork.
static std::mutex mu;
static int tracker_fd = -1;  // write end, shared with every forked descendant
static pid_t tracker_pid = 0;
// Names this process registered and has not unlinked, with the registering
// pid: a replacement tracker is told this process's own names again, and
// not its ancestors' (their tracker, if alive, still guards those).
static std::vector<std::pair<pid_t, std::string>>* registered = new std::vector<std::pair<pid_t, std::string>>;

static int OpenFdLimit() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < INT_MAX)
    return static_cast<int>(rl.rlim_cur);
  long max = sysconf(_SC_OPEN_MAX);
  return max > 0 && max < INT_MAX ? static_cast<int>(max) : 1 << 20;
}

static int MakePipe(int fds[2]) {
#if defined(__linux__)
  return pipe2(fds, O_CLOEXEC);
#else
  // macOS has no pipe2: a program another thread execs in between could
  // inherit the write end, and would then keep names alive until it exits.
  if (pipe(fds) != 0) return -1;
  fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  fcntl(fds[1], F_SETFD, FD_CLOEXEC);
  return 0;
#endif
}

// fork() without the atfork handlers where libc has it (glibc 2.34+): the
// children run only async-signal-safe code, so the handlers (which allocate
// in the child) have nothing to protect there.
static pid_t BareFork() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  return _Fork();
#else
  return fork();
#endif
}

// Starts a tracker and makes it this process's; returns 0 or an errno value.
static int Start() {
  int fds[2];
  int pid_pipe[2];
  if (MakePipe(fds) != 0) return errno;
  if (MakePipe(pid_pipe) != 0) {
    int err = errno;
    close(fds[0]);
    close(fds[1]);
    return err;
  }
  int fd_limit = OpenFdLimit();
  // Blocked until the children have replaced Node's handlers: a signal
  // arriving in between would run them in a child, where libuv's handler
  // writes to a pipe it still shares with this process.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t middle = BareFork();
  if (middle == 0) {
    pid_t tracker = BareFork();
    if (tracker == 0) RunTracker(fds[0], fd_limit);
    if (tracker < 0) _exit(errno);
    ssize_t w = write(pid_pipe[1], &tracker, sizeof tracker);
    _exit(w == sizeof tracker ? 0 : EIO);
  }
  int err = middle < 0 ? errno : 0;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  close(fds[0]);
  close(pid_pipe[1]);
  if (middle > 0) {
    int status = 0;
    while (waitpid(middle, &status, 0) < 0 && errno == EINTR) {
    }
    pid_t tracker = 0;
    ssize_t r;
    do r = read(pid_pipe[0], &tracker, sizeof tracker);
    while (r < 0 && errno == EINTR);
    if (r != sizeof tracker) err = WIFEXITED(status) && WEXITSTATUS(status) != 0 ? WEXITSTATUS(status) : ECHILD;
    else tracker_pid = tracker;
  }
  close(pid_pipe[0]);
  if (err != 0) {
    close(fds[1]);
    return err;
  }
  if (tracker_fd >= 0) close(tracker_fd);
  tracker_fd = fds[1];
  return 0;
}

// One line in one write(); 0 or an errno value (EPIPE: the tracker is gone).
static int Send(char op, const std::string& name) {
  std::string line = std::string(1, op) + " " + name + "\n";
  ssize_t w;
  do w = write(tracker_fd, line.data(), line.size());
  while (w < 0 && errno == EINTR);
  if (w < 0) return errno;
  return static_cast<size_t>(w) == line.size() ? 0 : EIO;
}

int TrackerStart() {
  std::lock_guard<std::mutex> lock(mu);
  return tracker_fd >= 0 ? 0 : Start();
}

// A queue's producer registers a segment per large message and another
// process (the consumer) unlinks it, so this process never hears of it again:
// once the list has doubled, the names whose segments are gone are dropped,
// which keeps it as long as the segments that still exist. Called with mu held.
static size_t prune_at = 1024;
static void PruneRegistered() {
  if (registered->size() < prune_at) return;
  std::vector<std::pair<pid_t, std::string>> kept;
  for (auto& entry : *registered) {
    int fd = shm_open(("/" + entry.second).c_str(), O_RDONLY, 0);
    if (fd < 0 && errno == ENOENT) continue;
    if (fd >= 0) close(fd);
    kept.push_back(std::move(entry));
  }
  registered->swap(kept);
  prune_at = std::max<size_t>(1024, 2 * registered->size());
}

// Hands `name` to the tracker, starting one if this process has none or if
// its tracker died (someone killed it); a replacement is told this process's
// other names again. Returns 0 or an errno value.
int TrackerRegister(const std::string& name) {
  if (name.size() > kMaxName) return ENAMETOOLONG;
  std::lock_guard<std::mutex> lock(mu);
  int err = tracker_fd >= 0 ? Send('R', name) : EPIPE;
  if (err == EPIPE) {
    err = Start();
    pid_t self = getpid();
    for (const auto& entry : *registered)
      if (err == 0 && entry.first == self) err = Send('R', entry.second);
    if (err == 0) err = Send('R', name);
  }
  if (err == 0) {
    PruneRegistered();
    registered->emplace_back(getpid(), name);
  }
  return err;
}

// The name was unlinked: the tracker forgets it. A missing or dead tracker
// has nothing to forget.
void TrackerUnregister(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu);
  for (size_t i = 0; i < registered->size(); i++) {
    if ((*registered)[i].second == name) {
      registered->erase(registered->begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  }
  if (tracker_fd >= 0 && Send('U', name) == EPIPE) {
    close(tracker_fd);
    tracker_fd = -1;
    tracker_pid = 0;
  }
}

static Napi::Value TrackerPid(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(mu);
  return Napi::Number::New(info.Env(), tracker_fd >= 0 ? tracker_pid : 0);
}

// trackerStart(): this process (and every process it forks from now on) has
// a tracker. A Queue starts one when it is made: a large message travels in
// a segment that the producer registers, and if the producer had a tracker
// of its own, it would remove the segment when the producer exits, before
// any consumer took the message.
static Napi::Value TrackerStartJs(const Napi::CallbackInfo& info) {
  int err = TrackerStart();
  if (err != 0) ThrowErrno(info.Env(), err, "fork", "starting the shared-memory tracker");
  return info.Env().Undefined();
}

// trackerFd() -> the write end of this process's tracker pipe, or -1: what a
// child started by spawn or forkserver is given so that it shares the
// tracker as a forked child does (trackerAdopt).
static Napi::Value TrackerFd(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(mu);
  return Napi::Number::New(info.Env(), tracker_fd);
}

// trackerAdopt(fd, pid) -> whether `fd`, the write end of the tracker `pid`
// (its parent's trackerFd()), became this process's tracker; it does unless
// this process has one already, and is closed then. Either way this process
// owns `fd` from now on.
static Napi::Value TrackerAdopt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsNumber()) {
    ThrowTypeError(env, "trackerAdopt(fd, pid): fd and pid must be numbers");
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  std::lock_guard<std::mutex> lock(mu);
  if (tracker_fd >= 0) {
    close(fd);
    return Napi::Boolean::New(env, false);
  }
  // Inherited through an exec, it lost close-on-exec.
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    ThrowErrno(env, errno, "fcntl", "the tracker's descriptor " + std::to_string(fd));
    return env.Undefined();
  }
  tracker_fd = fd;
  tracker_pid = info[1].As<Napi::Number>().Int32Value();
  return Napi::Boolean::New(env, true);
}

void InitTracker(Napi::Env env, Napi::Object exports) {
  exports.Set("trackerFd", Napi::Function::New(env, TrackerFd, "trackerFd"));
  exports.Set("trackerAdopt", Napi::Function::New(env, TrackerAdopt, "trackerAdopt"));
  exports.Set("trackerPid", Napi::Function::New(env, TrackerPid, "trackerPid"));
  exports.Set("trackerStart", Napi::Function::New(env, TrackerStartJs, "trackerStart"));
}

}  // namespace nodemp
