// What the `spawn` and `forkserver` start methods need of the OS: starting a
// fresh Node process with chosen descriptors, a message channel that carries
// descriptors (SCM_RIGHTS), and readiness events for that channel whose hold
// on the event loop JS decides.
//
// A spawned child is started with posix_spawn(), which glibc implements with
// clone(CLONE_VM | CLONE_VFORK): nothing of this multi-threaded process is
// copied, so it is safe from any thread and its cost does not grow with the
// heap. The child is ours: reap.cc's bookkeeping (pidfd, waitpid) serves it
// exactly as a forked one.
#include <napi.h>
#include <uv.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>
#include <unordered_map>
#include <vector>

#include "errors.h"
#include "internal.h"

namespace nodemp {

// Linux's limit on descriptors in one SCM_RIGHTS message (SCM_MAX_FD).
static constexpr size_t kMaxFds = 253;
// Control messages are small: payloads travel in a shared mapping.
static constexpr size_t kMaxMessage = 64 * 1024;

static bool StringsArg(Napi::Env env, Napi::Value v, const char* what, std::vector<std::string>* out) {
  if (!v.IsArray()) {
    ThrowTypeError(env, std::string("spawnProcess: ") + what + " must be an array of strings");
    return false;
  }
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value s = a.Get(i);
    if (!s.IsString()) {
      ThrowTypeError(env, std::string("spawnProcess: ") + what + "[" + std::to_string(i) + "] must be a string");
      return false;
    }
    out->push_back(s.As<Napi::String>().Utf8Value());
  }
  return true;
}

static bool FdsArg(Napi::Env env, Napi::Value v, const char* fn, std::vector<int>* out) {
  if (!v.IsArray()) {
    ThrowTypeError(env, std::string(fn) + ": fds must be an array of descriptors");
    return false;
  }
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value x = a.Get(i);
    double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0) || d > 2147483647.0 || d != static_cast<double>(static_cast<int>(d))) {
      ThrowTypeError(env, std::string(fn) + ": fds[" + std::to_string(i) + "] is not a descriptor");
      return false;
    }
    out->push_back(static_cast<int>(d));
  }
  return true;
}

static bool IntArg(const Napi::CallbackInfo& info, size_t i, const char* fn, int* out) {
  double d = info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0) || d > 2147483647.0 || d != static_cast<double>(static_cast<int>(d))) {
    ThrowTypeError(info.Env(), std::string(fn) + ": argument " + std::to_string(i + 1) + " must be a descriptor or pid, got " +
                                   info[i].ToString().Utf8Value());
    return false;
  }
  *out = static_cast<int>(d);
  return true;
}

// spawnProcess(path, argv, env, fds) -> pid. The child gets stdin, stdout and
// stderr of this process and fds[i] as descriptor 3 + i; nothing else (every
// descriptor nodemp and libuv open is close-on-exec). Signal dispositions and
// the mask start at their defaults, as after libuv's uv_spawn.
static Napi::Value SpawnProcess(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) {
    ThrowTypeError(env, "spawnProcess(path, argv, env, fds): path must be a string");
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::vector<std::string> argv, envv;
  std::vector<int> fds;
  if (!StringsArg(env, info[1], "argv", &argv) || !StringsArg(env, info[2], "env", &envv) ||
      !FdsArg(env, info[3], "spawnProcess", &fds))
    return env.Undefined();
  std::vector<char*> cargv, cenv;
  for (auto& s : argv) cargv.push_back(&s[0]);
  cargv.push_back(nullptr);
  for (auto& s : envv) cenv.push_back(&s[0]);
  cenv.push_back(nullptr);

  // The child's descriptors: stdio (which Node marks close-on-exec in this
  // process, so it must be handed over explicitly), then fds. dup2 in order
  // would overwrite a source that sits at a lower target: every source is
  // first copied above all targets. The copies are close-on-exec; dup2 clears
  // the flag on the target only.
  std::vector<int> sources{0, 1, 2};
  sources.insert(sources.end(), fds.begin(), fds.end());
  int base = static_cast<int>(sources.size());
  std::vector<int> high;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  for (size_t i = 0; i < sources.size(); i++) {
    int copy = fcntl(sources[i], F_DUPFD_CLOEXEC, base);
    if (copy < 0) {
      // A closed stdio descriptor stays closed in the child; a missing fd is an error.
      if (i < 3 && errno == EBADF) continue;
      int err = errno;
      for (int h : high) close(h);
      posix_spawn_file_actions_destroy(&actions);
      ThrowErrno(env, err, "fcntl", "F_DUPFD_CLOEXEC of fd " + std::to_string(sources[i]));
      return env.Undefined();
    }
    high.push_back(copy);
    posix_spawn_file_actions_adddup2(&actions, copy, static_cast<int>(i));
  }
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t all, none;
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  pid_t pid = 0;
  int err = posix_spawn(&pid, path.c_str(), &actions, &attr, cargv.data(), cenv.data());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  for (int h : high) close(h);
  if (err != 0) {
    ThrowErrno(env, err, "posix_spawn", path);
    return env.Undefined();
  }
  return Napi::Number::New(env, pid);
}

// socketPair() -> [fd, fd]: a connected pair that keeps message boundaries
// and carries descriptors. SOCK_SEQPACKET on Linux; macOS has no such Unix
// socket, and its datagram pair serves (messages stay far below its limit).
static Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sv[2];
#if defined(__linux__)
  int r = socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
#else
  int r = socketpair(AF_UNIX, SOCK_DGRAM, 0, sv);
  if (r == 0) {
    fcntl(sv[0], F_SETFD, FD_CLOEXEC);
    fcntl(sv[1], F_SETFD, FD_CLOEXEC);
  }
#endif
  if (r != 0) {
    ThrowErrno(env, errno, "socketpair");
    return env.Undefined();
  }
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::Number::New(env, sv[0]));
  out.Set(1u, Napi::Number::New(env, sv[1]));
  return out;
}

// fdSend(sock, bytes, fds): one message, blocking until the kernel takes it.
static Napi::Value FdSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock;
  if (!IntArg(info, 0, "fdSend", &sock)) return env.Undefined();
  if (!info[1].IsTypedArray()) {
    ThrowTypeError(env, "fdSend(sock, bytes, fds): bytes must be a Uint8Array");
    return env.Undefined();
  }
  Napi::Uint8Array bytes = info[1].As<Napi::Uint8Array>();
  std::vector<int> fds;
  if (!FdsArg(env, info[2], "fdSend", &fds)) return env.Undefined();
  if (fds.size() > kMaxFds) {
    ThrowRangeError(env, "fdSend: " + std::to_string(fds.size()) + " descriptors in one message; the most is " + std::to_string(kMaxFds));
    return env.Undefined();
  }
  if (bytes.ByteLength() == 0 || bytes.ByteLength() > kMaxMessage) {
    ThrowRangeError(env, "fdSend: a message must hold 1 to " + std::to_string(kMaxMessage) + " bytes, got " + std::to_string(bytes.ByteLength()));
    return env.Undefined();
  }
  iovec iov{bytes.Data(), bytes.ByteLength()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.assign(CMSG_SPACE(sizeof(int) * fds.size()), 0);
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n >= 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      pollfd p{sock, POLLOUT, 0};
      poll(&p, 1, -1);
      continue;
    }
    ThrowErrno(env, errno, "sendmsg", "fd " + std::to_string(sock));
    return env.Undefined();
  }
  return env.Undefined();
}

static int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// fdRecv(sock, timeoutMs) -> { bytes, fds } for a message, null at the end of
// the stream (the peer is gone), undefined when timeoutMs (< 0: forever)
// passes first. Received descriptors are close-on-exec.
static Napi::Value FdRecv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock;
  if (!IntArg(info, 0, "fdRecv", &sock)) return env.Undefined();
  double timeout = info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
  int64_t deadline = timeout >= 0 ? NowMs() + static_cast<int64_t>(timeout) : -1;
  std::vector<uint8_t> buf(kMaxMessage);
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds));
  for (;;) {
    int wait_ms = -1;
    if (deadline >= 0) {
      int64_t left = deadline - NowMs();
      wait_ms = left > 0 ? static_cast<int>(left > INT32_MAX ? INT32_MAX : left) : 0;
    }
    pollfd p{sock, POLLIN, 0};
    int r = poll(&p, 1, wait_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      ThrowErrno(env, errno, "poll", "fd " + std::to_string(sock));
      return env.Undefined();
    }
    if (r == 0) return env.Undefined();
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    int flags = MSG_DONTWAIT;
#if defined(__linux__)
    flags |= MSG_CMSG_CLOEXEC;
#endif
    ssize_t n = recvmsg(sock, &msg, flags);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n < 0 && errno != ECONNRESET) {
      ThrowErrno(env, errno, "recvmsg", "fd " + std::to_string(sock));
      return env.Undefined();
    }
    std::vector<int> fds;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const int* data = reinterpret_cast<const int*>(CMSG_DATA(c));
      for (size_t i = 0; i < count; i++) {
#if !defined(__linux__)
        fcntl(data[i], F_SETFD, FD_CLOEXEC);
#endif
        fds.push_back(data[i]);
      }
    }
    if (n <= 0) {
      for (int fd : fds) close(fd);
      return env.Null();
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
      for (int fd : fds) close(fd);
      ThrowErrno(env, EMSGSIZE, "recvmsg", "fd " + std::to_string(sock) + ": a control message was larger than expected");
      return env.Undefined();
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("bytes", Napi::Buffer<uint8_t>::Copy(env, buf.data(), static_cast<size_t>(n)));
    Napi::Array list = Napi::Array::New(env, fds.size());
    for (size_t i = 0; i < fds.size(); i++) list.Set(static_cast<uint32_t>(i), Napi::Number::New(env, fds[i]));
    out.Set("fds", list);
    return out;
  }
}

static Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int fd;
  if (!IntArg(info, 0, "closeFd", &fd)) return info.Env().Undefined();
  close(fd);
  return info.Env().Undefined();
}

// ---- readiness of a control socket ------------------------------------------
//
// One uv_poll per socket; JS says whether it holds the loop open (a forkserver
// client holds it only while a child's exit is awaited).

struct SockWatch {
  uv_poll_t* poll;
  Napi::FunctionReference callback;
  napi_env env;
};

static std::unordered_map<int, SockWatch*> sock_watches;

static void OnSockReadable(uv_poll_t* handle, int status, int events) {
  SockWatch* w = static_cast<SockWatch*>(handle->data);
  Napi::Env env(w->env);
  CallFromLoop(env, w->callback, {});
}

// sockWatch(fd, callback, ref): calls callback() from the loop while fd is
// readable or hung up; ref says whether the watch keeps the loop alive.
// Called again for the same fd, it only changes ref.
static Napi::Value SockWatchJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!IntArg(info, 0, "sockWatch", &fd)) return env.Undefined();
  bool ref = info[2].ToBoolean();
  auto it = sock_watches.find(fd);
  SockWatch* w;
  if (it == sock_watches.end()) {
    if (!info[1].IsFunction()) {
      ThrowTypeError(env, "sockWatch(fd, callback, ref): callback must be a function");
      return env.Undefined();
    }
    w = new SockWatch;
    w->poll = new uv_poll_t;
    w->env = env;
    int err = uv_poll_init(LoopOf(env), w->poll, fd);
    if (err != 0) {
      delete w->poll;
      delete w;
      ThrowErrno(env, -err, "uv_poll_init", "fd " + std::to_string(fd));
      return env.Undefined();
    }
    w->callback = Napi::Persistent(info[1].As<Napi::Function>());
    w->poll->data = w;
    uv_poll_start(w->poll, UV_READABLE | UV_DISCONNECT, OnSockReadable);
    sock_watches[fd] = w;
  } else {
    w = it->second;
  }
  if (ref) uv_ref(reinterpret_cast<uv_handle_t*>(w->poll));
  else uv_unref(reinterpret_cast<uv_handle_t*>(w->poll));
  return env.Undefined();
}

// sockUnwatch(fd): ends the watch (before the descriptor is closed).
static Napi::Value SockUnwatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!IntArg(info, 0, "sockUnwatch", &fd)) return env.Undefined();
  auto it = sock_watches.find(fd);
  if (it == sock_watches.end()) return env.Undefined();
  SockWatch* w = it->second;
  sock_watches.erase(it);
  uv_poll_stop(w->poll);
  w->callback.Reset();
  uv_close(reinterpret_cast<uv_handle_t*>(w->poll), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
  delete w;
  return env.Undefined();
}

void StartEnvCleanup(napi_env env) {
  for (auto it = sock_watches.begin(); it != sock_watches.end();) {
    if (it->second->env != env) {
      ++it;
      continue;
    }
    uv_close(reinterpret_cast<uv_handle_t*>(it->second->poll), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    it->second->callback.SuppressDestruct();
    delete it->second;
    it = sock_watches.erase(it);
  }
}

void StartAfterFork() {
  for (auto& kv : sock_watches) {
    uv_close(reinterpret_cast<uv_handle_t*>(kv.second->poll), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    kv.second->callback.SuppressDestruct();
    delete kv.second;
  }
  sock_watches.clear();
}

// dieWithParent(ppid): end this process by SIGKILL when `ppid` dies (at once
// if it is gone already); what a daemon child and a fork server need.
static Napi::Value DieWithParentJs(const Napi::CallbackInfo& info) {
  int ppid;
  if (!IntArg(info, 0, "dieWithParent", &ppid)) return info.Env().Undefined();
  DieWithParent(ppid);
  return info.Env().Undefined();
}

void InitStart(Napi::Env env, Napi::Object exports) {
  exports.Set("spawnProcess", Napi::Function::New(env, SpawnProcess, "spawnProcess"));
  exports.Set("socketPair", Napi::Function::New(env, SocketPair, "socketPair"));
  exports.Set("fdSend", Napi::Function::New(env, FdSend, "fdSend"));
  exports.Set("fdRecv", Napi::Function::New(env, FdRecv, "fdRecv"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("sockWatch", Napi::Function::New(env, SockWatchJs, "sockWatch"));
  exports.Set("sockUnwatch", Napi::Function::New(env, SockUnwatch, "sockUnwatch"));
  exports.Set("dieWithParent", Napi::Function::New(env, DieWithParentJs, "dieWithParent"));
}

}  // namespace nodemp
