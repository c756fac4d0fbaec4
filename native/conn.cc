// Connections: the two ends of a Pipe (see lib/connection.ts).
//
// A connection is a non-blocking descriptor: a socketpair end (duplex pipes),
// a pipe end (one-way pipes), or whatever descriptor a caller adopted.
// Frames are [tag u8][length u32 LE][body]; a length of 0xFFFFFFFF is
// followed by the real length as u64 LE. Sending blocks in poll() only while
// the kernel buffer is full.
//
// Receiving never takes from the kernel more than the one frame it returns,
// so whatever follows stays there for any process holding the same end.
// connRecv peeks at the next header (MSG_PEEK) and takes header and body with
// one readv() into the caller's destination; a header whose body does not fit,
// or a value frame when bytes were asked for, is left where it is. Of a frame
// not yet wholly there it takes what has come (the caller owns that frame
// until it completes it with connRead, which reads no more than it is asked
// for); connRead is also the whole path for descriptors that cannot peek
// (one-way pipes: header, then body). connPoll is a pure query.
//
// On Linux a Pipe is SOCK_SEQPACKET: there MSG_PEEK on a stream socket walks
// the whole receive queue (measured: 7 us with 100 small messages queued, 20
// us with 1000), on a record socket it looks at the first record only. A frame
// goes as records of at most kRecord bytes, the first starting with the
// header, so no record spans two frames and a read of the rest of a frame
// takes one record of it, never more. Elsewhere a duplex Pipe is a stream
// socket and a frame one writev(). One-way pipes stay OS pipes: a write to a
// Unix socket costs about twice a write to a pipe here (Python's one-way Pipe
// is an OS pipe too), and reading a pipe header first takes only the frame.
//
// Asynchronous receive: connWatch(fd, true) starts a uv_poll handle on the
// descriptor; each readiness event calls the JS dispatcher registered with
// connSetOnReadable(fn) as fn(fd) from the event loop. connWatch(fd, false)
// stops the handle (so an idle connection neither keeps the loop alive nor
// wakes it); inside that descriptor's own callback the stop is deferred until
// the callback (and the microtasks it triggered) has returned, so a consumer
// that asks for the next message at once costs no epoll_ctl pair per message.
// connClose(fd) closes the handle, then the descriptor.
//
// Fork: handles belong to the loop of the process that started them.
// ConnAfterFork() (from fork.cc, and lazily from JS when it notices a new pid)
// closes the parent's handles in the child and the exit descriptors it opened
// for wait(); the connection descriptors themselves stay open: they are the
// child's copies.
#include <napi.h>
#include <uv.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <algorithm>
#include <string>
#include <unordered_map>
#include <unordered_set>

#if defined(__linux__)
#include <sys/syscall.h>
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#elif defined(__APPLE__)
#include <sys/event.h>
#endif

#include "errors.h"
#include "internal.h"

namespace nodemp {

namespace {

struct Watch {
  int fd;
  uint64_t id;
  uv_poll_t* poll;
  bool active = false;       // uv_poll_start()ed
  bool want = false;         // JS wants readiness events
  bool in_callback = false;  // inside OnReadable for this watch
  int events = 0;            // what uv_poll_start() was last given
};

std::unordered_map<int, Watch*> watches;
std::unordered_set<int> exit_fds;  // opened by connPidfd, closed by connClose
uint64_t next_id = 1;
pid_t owner_pid = 0;
napi_env watch_env = nullptr;
Napi::FunctionReference* on_readable = nullptr;  // (fd) => void

constexpr uint32_t kLongFrame = 0xFFFFFFFFu;
constexpr int kSendBuffer = 1 << 20;
// Record sizes on SOCK_SEQPACKET: a record is one kernel buffer, so a smaller
// one where the send buffer is too small for this (EMSGSIZE).
constexpr size_t kRecord = 64 * 1024;
constexpr size_t kMinRecord = 1024;

// What a descriptor is, for lib/connection.ts (connAdopt, connPipe).
enum Kind { kOther = 0, kStream = 1, kRecords = 2 };

#if defined(__linux__)
constexpr int kPipeType = SOCK_SEQPACKET;
constexpr Kind kPipeKind = kRecords;
#else
constexpr int kPipeType = SOCK_STREAM;
constexpr Kind kPipeKind = kStream;
#endif

double NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// poll(2) timeout for `left` milliseconds (< 0: forever), rounded up so a
// wait never ends before its deadline.
int PollTimeout(double left) {
  if (left < 0) return -1;
  double ms = std::ceil(left);
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

// Waits until fd reports `events` (or an error/hang-up) or timeout_ms passes
// (< 0: forever). Returns 1 ready, 0 timed out, -errno on failure.
int WaitFor(int fd, short events, double timeout_ms) {
  SampleIfDue();
  double deadline = timeout_ms < 0 ? -1 : NowMs() + timeout_ms;
  for (;;) {
    pollfd p{fd, events, 0};
    int r = poll(&p, 1, PollTimeout(deadline < 0 ? -1 : std::max(0.0, deadline - NowMs())));
    if (r > 0) return 1;
    if (r == 0) {
      if (deadline < 0 || NowMs() >= deadline) return 0;
      continue;
    }
    if (errno != EINTR) return -errno;
  }
}

bool IntArg(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* what, int64_t* out) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    ThrowTypeError(info.Env(), std::string(fn) + ": " + what + " must be a number");
    return false;
  }
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= -9007199254740991.0 && v <= 9007199254740991.0) || v != std::floor(v)) {
    ThrowRangeError(info.Env(), std::string(fn) + ": " + what + " must be an integer");
    return false;
  }
  *out = static_cast<int64_t>(v);
  return true;
}

bool FdArg(const Napi::CallbackInfo& info, size_t i, const char* fn, int* fd) {
  int64_t v;
  if (!IntArg(info, i, fn, "fd", &v)) return false;
  if (v < 0 || v > INT_MAX) {
    ThrowRangeError(info.Env(), std::string(fn) + ": fd must be a non-negative integer");
    return false;
  }
  *fd = static_cast<int>(v);
  return true;
}

size_t ElementSize(napi_typedarray_type type) {
  switch (type) {
    case napi_int8_array:
    case napi_uint8_array:
    case napi_uint8_clamped_array:
      return 1;
    case napi_int16_array:
    case napi_uint16_array:
      return 2;
    case napi_int32_array:
    case napi_uint32_array:
    case napi_float32_array:
      return 4;
    default:
      return 8;
  }
}

// The bytes of a TypedArray, DataView or ArrayBuffer.
bool BytesOf(Napi::Env env, Napi::Value value, const char* fn, uint8_t** data, size_t* length) {
  napi_value v = value;
  bool is = false;
  void* p = nullptr;
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type type;
    size_t count;
    napi_get_typedarray_info(env, v, &type, &count, &p, nullptr, nullptr);
    *data = static_cast<uint8_t*>(p);
    *length = count * ElementSize(type);
    return true;
  }
  if (napi_is_dataview(env, v, &is) == napi_ok && is) {
    napi_get_dataview_info(env, v, length, &p, nullptr, nullptr);
    *data = static_cast<uint8_t*>(p);
    return true;
  }
  if (napi_is_arraybuffer(env, v, &is) == napi_ok && is) {
    napi_get_arraybuffer_info(env, v, &p, length);
    *data = static_cast<uint8_t*>(p);
    return true;
  }
  ThrowTypeError(env, std::string(fn) + ": expected a TypedArray, DataView or ArrayBuffer");
  return false;
}

// Resolves (view, offset, length) arguments at info[i..i+2] to a byte range.
bool RangeArg(const Napi::CallbackInfo& info, size_t i, const char* fn, uint8_t** data, size_t* length) {
  Napi::Env env = info.Env();
  uint8_t* base;
  size_t size;
  if (!BytesOf(env, info[i], fn, &base, &size)) return false;
  int64_t offset, count;
  if (!IntArg(info, i + 1, fn, "offset", &offset) || !IntArg(info, i + 2, fn, "length", &count)) return false;
  if (offset < 0 || count < 0 || static_cast<uint64_t>(offset) + static_cast<uint64_t>(count) > size) {
    ThrowRangeError(env, std::string(fn) + ": offset and length must lie inside the buffer");
    return false;
  }
  *data = base + offset;
  *length = static_cast<size_t>(count);
  return true;
}

bool SetFlags(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)) return false;
  int fdf = fcntl(fd, F_GETFD);
  if (fdf < 0 || (!(fdf & FD_CLOEXEC) && fcntl(fd, F_SETFD, fdf | FD_CLOEXEC) < 0)) return false;
  return true;
}

void FreePoll(uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); }

void DropWatch(std::unordered_map<int, Watch*>::iterator it) {
  Watch* w = it->second;
  uv_close(reinterpret_cast<uv_handle_t*>(w->poll), FreePoll);
  watches.erase(it);
  delete w;
}

void OnReadable(uv_poll_t* handle, int status, int events) {
  Watch* w = static_cast<Watch*>(handle->data);
  int fd = w->fd;
  uint64_t id = w->id;
  w->in_callback = true;
  // An error status (EBADF, ...) is reported as readiness too: the read that
  // follows in JS raises the real error.
  if (on_readable != nullptr && watch_env != nullptr) {
    Napi::Env env(watch_env);
    Napi::HandleScope scope(env);
    CallFromLoop(env, *on_readable, {Napi::Number::New(env, fd)});
  }
  // JS may have closed the descriptor, and even opened and watched a new one
  // under the same number: only the same watch is touched again.
  auto it = watches.find(fd);
  if (it == watches.end() || it->second->id != id) return;
  w = it->second;
  w->in_callback = false;
  if (!w->want && w->active) {
    uv_poll_stop(w->poll);
    w->active = false;
  }
}

}  // namespace

void ConnEnvCleanup(napi_env env) {
  if (watch_env != env) return;
  for (auto& kv : watches) {
    uv_close(reinterpret_cast<uv_handle_t*>(kv.second->poll), FreePoll);
    delete kv.second;
  }
  watches.clear();
  if (on_readable != nullptr) on_readable->SuppressDestruct();
  on_readable = nullptr;
  watch_env = nullptr;
}

void ConnAfterFork() {
  pid_t self = getpid();
  if (self == owner_pid) return;
  owner_pid = self;
  for (auto& kv : watches) {
    uv_close(reinterpret_cast<uv_handle_t*>(kv.second->poll), FreePoll);
    delete kv.second;
  }
  watches.clear();
  for (int fd : exit_fds) close(fd);
  exit_fds.clear();
}

namespace {

// connSetOnReadable(fn): fn(fd) is called from the loop when a watched fd is ready.
Napi::Value SetOnReadable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction()) {
    ThrowTypeError(env, "connSetOnReadable: expected a function");
    return env.Undefined();
  }
  if (on_readable == nullptr) on_readable = new Napi::FunctionReference;
  *on_readable = Napi::Persistent(info[0].As<Napi::Function>());
  on_readable->SuppressDestruct();
  watch_env = env;
  return env.Undefined();
}

// connPipe(duplex) -> [fd0, fd1, kind]: a socketpair (kPipeType), or
// [readEnd, writeEnd] of a pipe. Both non-blocking and close-on-exec.
Napi::Value MakePipe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool duplex = info[0].ToBoolean();
  int fds[2];
  if (duplex) {
#if defined(SOCK_NONBLOCK) && defined(SOCK_CLOEXEC)
    if (socketpair(AF_UNIX, kPipeType | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) {
      ThrowErrno(env, errno, "socketpair");
      return env.Undefined();
    }
#else
    if (socketpair(AF_UNIX, kPipeType, 0, fds) != 0) {
      ThrowErrno(env, errno, "socketpair");
      return env.Undefined();
    }
#endif
  } else {
#if defined(__linux__)
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
      ThrowErrno(env, errno, "pipe2");
      return env.Undefined();
    }
#else
    if (pipe(fds) != 0) {
      ThrowErrno(env, errno, "pipe");
      return env.Undefined();
    }
#endif
  }
  if (duplex) {
    // Fewer, larger transfers for long messages (measured on Linux: about
    // twice the throughput for 16 MiB messages). Linux caps the value at
    // net.core.wmem_max and only uses memory for data in flight; macOS sizes
    // Unix sockets by the receive buffer as well (8 KiB by default there).
    int size = kSendBuffer;
    for (int fd : fds) {
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
  }
#if !defined(__linux__)
  for (int fd : fds) {
    if (!SetFlags(fd)) {
      int err = errno;
      close(fds[0]);
      close(fds[1]);
      ThrowErrno(env, err, "fcntl");
      return env.Undefined();
    }
#if defined(SO_NOSIGPIPE)
    if (duplex) {
      int one = 1;
      setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
    }
#endif
  }
#endif
  Napi::Array result = Napi::Array::New(env, 3);
  result.Set(0u, Napi::Number::New(env, fds[0]));
  result.Set(1u, Napi::Number::New(env, fds[1]));
  result.Set(2u, Napi::Number::New(env, duplex ? kPipeKind : kOther));
  return result;
}

// connAdopt(fd) -> its Kind: makes an existing descriptor usable as a
// connection (non-blocking, close-on-exec); throws EBADF for a descriptor
// that is not open.
Napi::Value Adopt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!FdArg(info, 0, "connAdopt", &fd)) return env.Undefined();
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ThrowErrno(env, errno, "fstat", "fd " + std::to_string(fd));
    return env.Undefined();
  }
  if (!SetFlags(fd)) {
    ThrowErrno(env, errno, "fcntl", "fd " + std::to_string(fd));
    return env.Undefined();
  }
  Kind kind = kOther;
  int type;
  socklen_t size = sizeof type;
  if (S_ISSOCK(st.st_mode) && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) == 0) {
    if (type == SOCK_STREAM) kind = kStream;
    if (type == SOCK_SEQPACKET) kind = kRecords;
  }
  return Napi::Number::New(env, kind);
}

// Waits for room to send after EAGAIN; false (with the exception thrown) on failure.
bool AwaitRoom(Napi::Env env, int fd) {
  int r = WaitFor(fd, POLLOUT, -1);
  if (r >= 0) return true;
  ThrowErrno(env, -r, "poll");
  return false;
}

// One frame as records of at most kRecord bytes (see the header).
void SendRecords(Napi::Env env, int fd, uint8_t* header, size_t header_length, uint8_t* data, size_t length) {
#if defined(MSG_NOSIGNAL)
  constexpr int flags = MSG_NOSIGNAL;
#else
  constexpr int flags = 0;
#endif
  size_t record = kRecord;
  size_t sent = 0;
  bool first = true;
  while (first || sent < length) {
    iovec iov[2];
    int count = 0;
    size_t room = record;
    if (first) {
      iov[count++] = {header, header_length};
      room -= header_length;
    }
    size_t chunk = std::min(room, length - sent);
    if (chunk > 0) iov[count++] = {data + sent, chunk};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = count;
    if (sendmsg(fd, &msg, flags) < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (!AwaitRoom(env, fd)) return;
        continue;
      }
      if (errno == EMSGSIZE && record > kMinRecord) {
        record /= 2;
        continue;
      }
      ThrowErrno(env, errno, "sendmsg", "fd " + std::to_string(fd));
      return;
    }
    first = false;
    sent += chunk;
  }
}

// One frame with writev(), on a stream.
void SendStream(Napi::Env env, int fd, uint8_t* header, size_t header_length, uint8_t* data, size_t length) {
  iovec iov[2] = {{header, header_length}, {data, length}};
  iovec* v = iov;
  int count = length > 0 ? 2 : 1;
  while (count > 0) {
    ssize_t n = writev(fd, v, count);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (!AwaitRoom(env, fd)) return;
        continue;
      }
      ThrowErrno(env, errno, "write", "fd " + std::to_string(fd));
      return;
    }
    size_t done = static_cast<size_t>(n);
    while (count > 0 && done >= v->iov_len) {
      done -= v->iov_len;
      v++;
      count--;
    }
    if (count > 0) {
      v->iov_base = static_cast<uint8_t*>(v->iov_base) + done;
      v->iov_len -= done;
    }
  }
}

// connSend(fd, tag, view, offset, length, records): writes one frame, as
// records on a SOCK_SEQPACKET descriptor (records true); blocks (in poll) only
// while the descriptor's buffer is full.
Napi::Value Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  int64_t tag;
  uint8_t* data;
  size_t length;
  if (!FdArg(info, 0, "connSend", &fd) || !IntArg(info, 1, "connSend", "tag", &tag) ||
      !RangeArg(info, 2, "connSend", &data, &length))
    return env.Undefined();
  bool records = info[5].ToBoolean();
  uint8_t header[13];
  size_t header_length = 5;
  header[0] = static_cast<uint8_t>(tag);
  uint64_t n64 = length;
  uint32_t n32 = n64 >= kLongFrame ? kLongFrame : static_cast<uint32_t>(n64);
  for (int i = 0; i < 4; i++) header[1 + i] = static_cast<uint8_t>(n32 >> (8 * i));
  if (n32 == kLongFrame) {
    for (int i = 0; i < 8; i++) header[5 + i] = static_cast<uint8_t>(n64 >> (8 * i));
    header_length = 13;
  }
  if (records) SendRecords(env, fd, header, header_length, data, length);
  else SendStream(env, fd, header, header_length, data, length);
  return env.Undefined();
}

constexpr double kReadSpinMs = 0.02;
constexpr uint8_t kBytesTag = 0;  // lib/codec.ts BYTES
constexpr size_t kHeader = 5;
constexpr size_t kLongHeader = 13;

// How a read that found nothing waits for more: not at all (timeout 0), or
// until the deadline (timeout < 0: none). A partner that answers at once is
// read by retrying for a few microseconds, without the sleep in poll() and the
// scheduler's wake-up (tens of microseconds on a VM). One CPU, or a machine
// whose cores are all taken: the partner may well be queued behind us, so no
// spinning there (sched.cc).
class ReadWait {
 public:
  explicit ReadWait(double timeout_ms) : timeout_(timeout_ms) {
    static const bool spin = sysconf(_SC_NPROCESSORS_ONLN) > 1;
    if (timeout_ms == 0) return;
    double now = NowMs();
    deadline_ = timeout_ms < 0 ? -1 : now + timeout_ms;
    // A wait no longer than the spin is one its caller chose to spend
    // spinning (an async recv() before it goes to the event loop), never a
    // poll() that would block the loop for a whole millisecond.
    bool chosen = timeout_ms > 0 && timeout_ms <= kReadSpinMs;
    spin_until_ = spin && (chosen || !MachineBusy()) ? now + kReadSpinMs : 0;
  }

  // After a read found nothing: 1 read again, 0 the time is up, -errno.
  int Again(int fd) const {
    if (timeout_ == 0) return 0;
    if (spin_until_ > 0 && NowMs() < spin_until_) return 1;
    double left = deadline_ < 0 ? -1 : deadline_ - NowMs();
    if (deadline_ >= 0 && left <= 0) return 0;
    return WaitFor(fd, POLLIN, left);
  }

 private:
  double timeout_;
  double deadline_ = 0;
  double spin_until_ = 0;
};

bool TimeoutArg(const Napi::CallbackInfo& info, size_t i, const char* fn, double* out) {
  if (!info[i].IsNumber()) {
    ThrowTypeError(info.Env(), std::string(fn) + ": timeoutMs must be a number");
    return false;
  }
  *out = info[i].As<Napi::Number>().DoubleValue();
  return true;
}

// connRead(fd, buffer, offset, length, timeoutMs) -> bytes read (> 0), 0 at end
// of stream, -1 when nothing came within timeoutMs (0: do not wait; < 0: wait
// forever). Reads at most `length` bytes: callers ask for no more than the
// rest of the frame they are in. A reset by a peer that closed with data
// unread counts as the end: everything it sent has been read by then.
Napi::Value Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* data;
  size_t length;
  double timeout;
  if (!FdArg(info, 0, "connRead", &fd) || !RangeArg(info, 1, "connRead", &data, &length) ||
      !TimeoutArg(info, 4, "connRead", &timeout))
    return env.Undefined();
  ReadWait wait(timeout);
  for (;;) {
    ssize_t n = read(fd, data, length);
    if (n >= 0) return Napi::Number::New(env, static_cast<double>(n));
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) return Napi::Number::New(env, 0);
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      ThrowErrno(env, errno, "read", "fd " + std::to_string(fd));
      return env.Undefined();
    }
    int r = wait.Again(fd);
    if (r < 0) {
      ThrowErrno(env, -r, "poll");
      return env.Undefined();
    }
    if (r == 0) return Napi::Number::New(env, -1);
  }
}

// What connRecv found (lib/connection.ts has the same numbers).
enum RecvResult {
  kRecvNone = -1,      // nothing within the timeout
  kRecvEnd = 0,        // end of stream
  kRecvFrame = 1,      // a whole frame: its body is in the destination
  kRecvPartial = 2,    // the header and frame_info[2] bytes of body taken; the rest is still to come
  kRecvTooLong = 3,    // the body is longer than the destination: nothing taken
  kRecvNotBytes = 4,   // a value frame when bytes were asked for: nothing taken
  kRecvShortHead = 5,  // less than a header there: nothing taken
};

// [tag, body length, body bytes taken, where the body starts in the
// destination] of the frame connRecv last looked at.
constexpr size_t kFrameInfo = 4;
double* frame_info = nullptr;

// connFrameInfo() -> the Float64Array connRecv reports in (frame_info).
Napi::Value FrameInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, kFrameInfo * sizeof(double));
  // Kept for the life of the process: connRecv writes into it.
  napi_ref ref;
  napi_create_reference(env, buffer, 1, &ref);
  frame_info = static_cast<double*>(buffer.Data());
  return Napi::Float64Array::New(env, kFrameInfo, buffer, 0);
}

// How connRecv takes a frame.
enum RecvMode {
  kWholeRecord = 0,  // any frame, by reading its first record whole (SOCK_SEQPACKET, capacity >= kRecord)
  kPeekAny = 1,      // any frame, after peeking at its header
  kPeekBytes = 2,    // a bytes frame only, after peeking at its header
};

uint64_t Le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

// The header at p (of `available` bytes): its length (0: not all there).
size_t ParseHeader(const uint8_t* p, size_t available, uint64_t* length) {
  if (available < kHeader) return 0;
  *length = Le(p + 1, 4);
  if (*length != kLongFrame) return kHeader;
  if (available < kLongHeader) return 0;
  *length = Le(p + 5, 8);
  return kLongHeader;
}

// Reads what has come of the rest of a frame whose body is data[0, length),
// `got` bytes of it taken (on SOCK_SEQPACKET one record per read); returns
// the new count, or -errno.
int64_t ReadRest(int fd, uint8_t* data, uint64_t length, uint64_t got) {
  while (got < length) {
    ssize_t n = read(fd, data + got, static_cast<size_t>(length - got));
    if (n > 0) {
      got += static_cast<uint64_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNRESET) return -errno;
    // Nothing more for now, or the end: the caller finds out which.
    break;
  }
  return static_cast<int64_t>(got);
}

Napi::Value Frame(Napi::Env env, uint64_t length, uint64_t got, size_t start) {
  frame_info[2] = static_cast<double>(got);
  frame_info[3] = static_cast<double>(start);
  return Napi::Number::New(env, got == length ? kRecvFrame : kRecvPartial);
}

// connRecv(fd, buffer, offset, capacity, timeoutMs, mode) -> RecvResult.
// Waits (as connRead) for data, then takes the next frame as `mode` says,
// its body into buffer[offset...] (frame_info[3] says where it starts), unless
// it is refused: too long for `capacity`, or not bytes for kPeekBytes. Of a
// frame not wholly there, takes what has come. Only for sockets.
Napi::Value Recv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* data;
  size_t capacity;
  double timeout;
  if (!FdArg(info, 0, "connRecv", &fd) || !RangeArg(info, 1, "connRecv", &data, &capacity) ||
      !TimeoutArg(info, 4, "connRecv", &timeout))
    return env.Undefined();
  if (frame_info == nullptr) {
    ThrowTypeError(env, "connRecv: call connFrameInfo() first");
    return env.Undefined();
  }
  int mode = info[5].As<Napi::Number>().Int32Value();
  bool whole = mode == kWholeRecord;
  uint8_t head[kLongHeader];
  iovec into = whole ? iovec{data, capacity} : iovec{head, sizeof head};
  msghdr msg{};
  msg.msg_iov = &into;
  msg.msg_iovlen = 1;
  ssize_t seen;
  ReadWait wait(timeout);
  for (;;) {
    seen = recvmsg(fd, &msg, (whole ? 0 : MSG_PEEK) | MSG_DONTWAIT);
    if (seen > 0) break;
    if (seen == 0 || errno == ECONNRESET) return Napi::Number::New(env, kRecvEnd);
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      ThrowErrno(env, errno, "recvmsg", "fd " + std::to_string(fd));
      return env.Undefined();
    }
    int r = wait.Again(fd);
    if (r < 0) {
      ThrowErrno(env, -r, "poll");
      return env.Undefined();
    }
    if (r == 0) return Napi::Number::New(env, kRecvNone);
  }
  const uint8_t* p = whole ? data : head;
  uint64_t length = 0;
  size_t header = ParseHeader(p, static_cast<size_t>(seen), &length);
  if (whole) {
    // A record is taken whole or its excess is lost: only a sender that is
    // not nodemp's makes one longer than kRecord, or one without a header.
    if ((msg.msg_flags & MSG_TRUNC) != 0 || header == 0) {
      ThrowErrno(env, EPROTO, "recvmsg", "fd " + std::to_string(fd) + ": a record that is not a nodemp frame");
      return env.Undefined();
    }
    frame_info[0] = data[0];
    frame_info[1] = static_cast<double>(length);
    return Frame(env, length, static_cast<uint64_t>(seen) - header, header);
  }
  if (header == 0) return Napi::Number::New(env, kRecvShortHead);
  frame_info[0] = head[0];
  frame_info[1] = static_cast<double>(length);
  if (mode == kPeekBytes && head[0] != kBytesTag) return Napi::Number::New(env, kRecvNotBytes);
  if (length > capacity) return Napi::Number::New(env, kRecvTooLong);
  iovec iov[2] = {{head, header}, {data, static_cast<size_t>(length)}};
  ssize_t n;
  do n = readv(fd, iov, length > 0 ? 2 : 1);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    ThrowErrno(env, errno, "readv", "fd " + std::to_string(fd));
    return env.Undefined();
  }
  // The header was there when peeked: only another process receiving on the
  // same end at the same moment can have taken part of it.
  if (static_cast<size_t>(n) < header) {
    ThrowErrno(env, EPROTO, "readv",
               "fd " + std::to_string(fd) + ": another process took part of a message header at the same time");
    return env.Undefined();
  }
  int64_t got = ReadRest(fd, data, length, static_cast<uint64_t>(n) - header);
  if (got < 0) {
    ThrowErrno(env, static_cast<int>(-got), "read", "fd " + std::to_string(fd));
    return env.Undefined();
  }
  return Frame(env, length, static_cast<uint64_t>(got), 0);
}

// connPoll(fd, timeoutMs) -> whether fd is readable (data, or the end of the
// stream) within timeoutMs (0: now; < 0: forever). Reads nothing.
Napi::Value Poll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  double timeout;
  if (!FdArg(info, 0, "connPoll", &fd) || !TimeoutArg(info, 1, "connPoll", &timeout)) return env.Undefined();
  int r = WaitFor(fd, POLLIN, timeout);
  if (r < 0) {
    ThrowErrno(env, -r, "poll");
    return env.Undefined();
  }
  return Napi::Boolean::New(env, r > 0);
}

// connWatch(fd, on, writable = false): start or stop readiness events for fd
// (see the header); with `writable`, for room to write instead of data to read
// (a connect in progress, lib/listener.ts).
Napi::Value WatchFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!FdArg(info, 0, "connWatch", &fd)) return env.Undefined();
  bool on = info[1].ToBoolean();
  int events = info.Length() > 2 && info[2].ToBoolean() ? UV_WRITABLE : UV_READABLE;
  auto it = watches.find(fd);
  if (!on) {
    if (it == watches.end()) return env.Undefined();
    Watch* w = it->second;
    w->want = false;
    if (w->active && !w->in_callback) {
      uv_poll_stop(w->poll);
      w->active = false;
    }
    return env.Undefined();
  }
  Watch* w;
  if (it == watches.end()) {
    w = new Watch;
    w->fd = fd;
    w->id = next_id++;
    w->poll = new uv_poll_t;
    int err = uv_poll_init(LoopOf(env), w->poll, fd);
    if (err != 0) {
      delete w->poll;
      delete w;
      ThrowErrno(env, -err, "uv_poll_init", "fd " + std::to_string(fd));
      return env.Undefined();
    }
    w->poll->data = w;
    watches[fd] = w;
  } else {
    w = it->second;
  }
  w->want = true;
  if (!w->active || w->events != events) {
    int err = uv_poll_start(w->poll, events, OnReadable);
    if (err != 0) {
      ThrowErrno(env, -err, "uv_poll_start", "fd " + std::to_string(fd));
      return env.Undefined();
    }
    w->active = true;
    w->events = events;
  }
  return env.Undefined();
}

// connClose(fd): stops watching fd and closes it.
Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!FdArg(info, 0, "connClose", &fd)) return env.Undefined();
  auto it = watches.find(fd);
  if (it != watches.end()) DropWatch(it);
  exit_fds.erase(fd);
  // Linux and macOS release the descriptor even when close() reports EINTR.
  if (close(fd) != 0 && errno != EINTR) ThrowErrno(env, errno, "close", "fd " + std::to_string(fd));
  return env.Undefined();
}

// connPollFds(fds: Int32Array, timeoutMs) -> how many are ready. Waits until
// one of the descriptors is readable (or hung up) or the timeout (< 0:
// forever) passes; writes 1 (ready) or 0 over each entry. Negative entries
// are skipped.
Napi::Value PollFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    ThrowTypeError(env, "connPollFds: expected an Int32Array");
    return env.Undefined();
  }
  Napi::Int32Array fds = info[0].As<Napi::Int32Array>();
  if (!info[1].IsNumber()) {
    ThrowTypeError(env, "connPollFds: timeoutMs must be a number");
    return env.Undefined();
  }
  double timeout = info[1].As<Napi::Number>().DoubleValue();
  size_t n = fds.ElementLength();
  pollfd stack[16];
  pollfd* p = n <= 16 ? stack : new pollfd[n];
  for (size_t i = 0; i < n; i++) p[i] = pollfd{fds[i], POLLIN, 0};
  double deadline = timeout < 0 ? -1 : NowMs() + timeout;
  int r;
  for (;;) {
    r = poll(p, static_cast<nfds_t>(n), PollTimeout(deadline < 0 ? -1 : deadline - NowMs()));
    if (r > 0) break;
    if (r == 0 && (deadline < 0 || NowMs() < deadline)) continue;
    if (r == 0 || errno != EINTR) break;
  }
  int err = errno;
  if (r >= 0)
    for (size_t i = 0; i < n; i++) fds[i] = p[i].fd >= 0 && p[i].revents != 0 ? 1 : 0;
  if (p != stack) delete[] p;
  if (r < 0) {
    ThrowErrno(env, err, "poll");
    return env.Undefined();
  }
  return Napi::Number::New(env, r);
}

// connPidfd(pid) -> a descriptor that becomes readable when pid exits (a pidfd
// on Linux, a kqueue with EVFILT_PROC on macOS); -1 where the system has none
// (callers fall back to polling); -2 if no such process exists any more.
// Close it with connClose.
Napi::Value Pidfd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t pid;
  if (!IntArg(info, 0, "connPidfd", "pid", &pid)) return env.Undefined();
  if (pid <= 0 || pid > INT_MAX) {
    ThrowRangeError(env, "connPidfd: pid must be a positive integer");
    return env.Undefined();
  }
  int fd;
#if defined(__linux__)
  fd = static_cast<int>(syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0));
  if (fd < 0) {
    if (errno == ESRCH) return Napi::Number::New(env, -2);
    if (errno == ENOSYS || errno == EPERM || errno == EINVAL) return Napi::Number::New(env, -1);
    ThrowErrno(env, errno, "pidfd_open", "pid " + std::to_string(pid));
    return env.Undefined();
  }
#elif defined(__APPLE__)
  fd = kqueue();
  if (fd < 0) return Napi::Number::New(env, -1);
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  struct kevent ev;
  EV_SET(&ev, static_cast<pid_t>(pid), EVFILT_PROC, EV_ADD | EV_CLEAR, NOTE_EXIT, 0, nullptr);
  if (kevent(fd, &ev, 1, nullptr, 0, nullptr) < 0) {
    int err = errno;
    close(fd);
    return Napi::Number::New(env, err == ESRCH ? -2 : -1);
  }
#else
  return Napi::Number::New(env, -1);
#endif
  exit_fds.insert(fd);
  return Napi::Number::New(env, fd);
}

Napi::Value AfterFork(const Napi::CallbackInfo& info) {
  ConnAfterFork();
  return info.Env().Undefined();
}

}  // namespace

void InitConn(Napi::Env env, Napi::Object exports) {
  owner_pid = getpid();
  exports.Set("connSetOnReadable", Napi::Function::New(env, SetOnReadable, "connSetOnReadable"));
  exports.Set("connPipe", Napi::Function::New(env, MakePipe, "connPipe"));
  exports.Set("connAdopt", Napi::Function::New(env, Adopt, "connAdopt"));
  exports.Set("connSend", Napi::Function::New(env, Send, "connSend"));
  exports.Set("connRead", Napi::Function::New(env, Read, "connRead"));
  exports.Set("connFrameInfo", Napi::Function::New(env, FrameInfo, "connFrameInfo"));
  exports.Set("connRecv", Napi::Function::New(env, Recv, "connRecv"));
  exports.Set("connPoll", Napi::Function::New(env, Poll, "connPoll"));
  exports.Set("connWatch", Napi::Function::New(env, WatchFd, "connWatch"));
  exports.Set("connClose", Napi::Function::New(env, CloseFd, "connClose"));
  exports.Set("connPollFds", Napi::Function::New(env, PollFds, "connPollFds"));
  exports.Set("connPidfd", Napi::Function::New(env, Pidfd, "connPidfd"));
  exports.Set("connAfterFork", Napi::Function::New(env, AfterFork, "connAfterFork"));
}

}  // namespace nodemp
