// Stream sockets for Listener and Client (lib/listener.ts): socket, bind,
// listen, accept, connect and the addresses of an end, for Unix sockets (a
// path, or a Linux abstract name: a leading NUL byte) and TCP over IPv4 and
// IPv6. Everything else (address forms, the authentication handshake, the
// waiting of the asynchronous forms) is in TypeScript; an accepted or
// connected socket becomes a Connection through connAdopt (conn.cc).
//
// Every descriptor made here is non-blocking and close-on-exec. The
// synchronous forms wait in poll(); the asynchronous ones call with no wait
// and let lib/listener.ts watch the descriptor on the event loop.
#include <napi.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <ctime>
#include <string>

#include "errors.h"

namespace nodemp {

namespace {

// The families lib/listener.ts names (its FAMILY_* numbers).
enum Family { kUnix = 0, kInet = 1, kInet6 = 2 };

double NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// Waits until fd reports `events` or timeout_ms passes (< 0: forever).
// 1 ready, 0 timed out, -errno.
int WaitFor(int fd, short events, double timeout_ms) {
  double deadline = timeout_ms < 0 ? -1 : NowMs() + timeout_ms;
  for (;;) {
    double left = deadline < 0 ? -1 : std::max(0.0, deadline - NowMs());
    int ms = left < 0 ? -1 : left > INT_MAX ? INT_MAX : static_cast<int>(std::ceil(left));
    pollfd p{fd, events, 0};
    int r = poll(&p, 1, ms);
    if (r > 0) return 1;
    if (r == 0) {
      if (deadline < 0 || NowMs() >= deadline) return 0;
      continue;
    }
    if (errno != EINTR) return -errno;
  }
}

[[maybe_unused]] bool NonBlocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return false;
  return fcntl(fd, F_SETFD, FD_CLOEXEC) == 0;
}

int NewSocket(int domain) {
#if defined(SOCK_NONBLOCK) && defined(SOCK_CLOEXEC)
  return socket(domain, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
#else
  int fd = socket(domain, SOCK_STREAM, 0);
  if (fd >= 0 && !NonBlocking(fd)) {
    int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
#endif
}

// Messages are small and answered at once: Nagle's delay would only add
// latency to each round trip (every frame goes in one writev already).
void NoDelay(int fd, int domain) {
  if (domain == AF_UNIX) return;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#if defined(SO_NOSIGPIPE)
  setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
}

// The sockaddr for (family, address, port): `address` is the path's bytes
// for kUnix (a leading NUL: an abstract name, whose length is exact), a host
// name or numeric address for the others (resolved with getaddrinfo, as
// Python's socket module does). Throws and returns false on failure.
bool Resolve(Napi::Env env, const Napi::CallbackInfo& info, const char* fn, sockaddr_storage* out, socklen_t* length,
             int* domain) {
  if (!info[0].IsNumber() || !info[2].IsNumber()) {
    ThrowTypeError(env, std::string(fn) + ": expected (family, address, port)");
    return false;
  }
  int family = info[0].As<Napi::Number>().Int32Value();
  std::memset(out, 0, sizeof *out);
  if (family == kUnix) {
    if (!info[1].IsBuffer()) {
      ThrowTypeError(env, std::string(fn) + ": a Unix socket address must be a Buffer");
      return false;
    }
    Napi::Buffer<char> path = info[1].As<Napi::Buffer<char>>();
    auto* un = reinterpret_cast<sockaddr_un*>(out);
    // A path needs its terminating NUL; an abstract name has none.
    bool abstract = path.Length() > 0 && path.Data()[0] == '\0';
    if (path.Length() + (abstract ? 0 : 1) > sizeof un->sun_path) {
      ThrowErrno(env, ENAMETOOLONG, fn,
                 "a Unix socket address holds at most " + std::to_string(sizeof un->sun_path - 1) + " bytes");
      return false;
    }
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, path.Data(), path.Length());
    *length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.Length() + (abstract ? 0 : 1));
    *domain = AF_UNIX;
    return true;
  }
  if ((family != kInet && family != kInet6) || !info[1].IsString()) {
    ThrowTypeError(env, std::string(fn) + ": expected an IPv4 or IPv6 family and a host string");
    return false;
  }
  std::string host = info[1].As<Napi::String>().Utf8Value();
  int port = info[2].As<Napi::Number>().Int32Value();
  addrinfo hints{};
  hints.ai_family = family == kInet ? AF_INET : AF_INET6;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int r = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (r == EAI_SYSTEM) {
    ThrowErrno(env, errno, "getaddrinfo", host);
    return false;
  }
  if (r != 0) {
    // As Python's socket.gaierror, errno is the resolver's code; `code` is
    // the name Node's dns module gives a name that does not resolve.
    bool unknown = r == EAI_NONAME;
#if defined(EAI_NODATA)
    unknown = unknown || r == EAI_NODATA;
#endif
    const char* code = unknown ? "ENOTFOUND" : r == EAI_AGAIN ? "EAI_AGAIN" : r == EAI_FAMILY ? "EAI_FAMILY" : "EAI_FAIL";
    ThrowCode(env, code, r, "getaddrinfo", "getaddrinfo failed for " + host + ": " + gai_strerror(r) + " (" + code + ")");
    return false;
  }
  std::memcpy(out, found->ai_addr, found->ai_addrlen);
  *length = found->ai_addrlen;
  *domain = found->ai_family;
  freeaddrinfo(found);
  return true;
}

// netListen(family, address, port, backlog) -> a listening descriptor.
Napi::Value Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sockaddr_storage addr;
  socklen_t length;
  int domain;
  if (!Resolve(env, info, "netListen", &addr, &length, &domain)) return env.Undefined();
  int backlog = info[3].As<Napi::Number>().Int32Value();
  int fd = NewSocket(domain);
  if (fd < 0) {
    ThrowErrno(env, errno, "socket");
    return env.Undefined();
  }
  if (domain != AF_UNIX) {
    // A restarted server can bind its port again while old connections linger
    // in TIME_WAIT (Python's Listener does the same).
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  }
  const char* step = "bind";
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), length) != 0 || (step = "listen", listen(fd, backlog) != 0)) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, step);
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

// netConnect(family, address, port, timeoutMs) -> [fd, inProgress]. With
// timeoutMs 0 nothing waits: a connection still being made comes back with
// inProgress true (watch fd for writability, then netConnected), and a Unix
// listener whose backlog is full gives fd -1 (nothing is left open: ask
// again later). timeoutMs < 0 waits as long as a blocking connect() would.
Napi::Value Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sockaddr_storage addr;
  socklen_t length;
  int domain;
  if (!Resolve(env, info, "netConnect", &addr, &length, &domain)) return env.Undefined();
  double timeout = info[3].As<Napi::Number>().DoubleValue();
  auto result = [&](int fd, bool in_progress) {
    Napi::Array out = Napi::Array::New(env, 2);
    out.Set(0u, Napi::Number::New(env, fd));
    out.Set(1u, Napi::Boolean::New(env, in_progress));
    return out;
  };
  int fd = NewSocket(domain);
  if (fd < 0) {
    ThrowErrno(env, errno, "socket");
    return env.Undefined();
  }
  NoDelay(fd, domain);
  for (;;) {
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), length) == 0) return result(fd, false);
    int err = errno;
    if (err == EINTR) continue;
    if (err == EINPROGRESS) {
      if (timeout == 0) return result(fd, true);
      int r = WaitFor(fd, POLLOUT, timeout);
      socklen_t size = sizeof err;
      if (r < 0) err = -r;
      else if (r == 0) err = ETIMEDOUT;
      else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &size) != 0) err = errno;
      if (err == 0) return result(fd, false);
    } else if (err == EAGAIN && domain == AF_UNIX) {
      // A Unix listener's backlog is full: a blocking connect() would wait for
      // room, a non-blocking one has to ask again (the socket cannot be polled
      // for it).
      if (timeout == 0) {
        close(fd);
        return result(-1, false);
      }
      timespec pause{0, 1000000};
      nanosleep(&pause, nullptr);
      continue;
    }
    close(fd);
    ThrowErrno(env, err, "connect");
    return env.Undefined();
  }
}

// netConnected(fd): after a connect in progress reported writability,
// throws the error it ended with, if any (the caller closes fd then).
Napi::Value Connected(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  int err = 0;
  socklen_t size = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &size) != 0) err = errno;
  if (err != 0) ThrowErrno(env, err, "connect");
  return env.Undefined();
}

// Sets out[at...] to [family, address, port] for lib/listener.ts: a Unix
// address is a Buffer of the path's bytes (empty for an unnamed socket; a
// leading NUL for an abstract name), an IP address a numeric string.
void SetAddress(Napi::Env env, Napi::Array out, uint32_t at, const sockaddr_storage& addr, socklen_t length) {
  if (addr.ss_family == AF_UNIX) {
    auto* un = reinterpret_cast<const sockaddr_un*>(&addr);
    size_t size = length > offsetof(sockaddr_un, sun_path) ? length - offsetof(sockaddr_un, sun_path) : 0;
    // A path comes back with its terminating NUL (or padding) on some systems.
    if (size > 0 && un->sun_path[0] != '\0') size = strnlen(un->sun_path, size);
    out.Set(at, Napi::Number::New(env, kUnix));
    out.Set(at + 1, Napi::Buffer<char>::Copy(env, un->sun_path, size));
    out.Set(at + 2, Napi::Number::New(env, 0));
    return;
  }
  char host[INET6_ADDRSTRLEN] = "";
  int port;
  if (addr.ss_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
    out.Set(at, Napi::Number::New(env, kInet));
  } else {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
    out.Set(at, Napi::Number::New(env, kInet6));
  }
  out.Set(at + 1, Napi::String::New(env, host));
  out.Set(at + 2, Napi::Number::New(env, port));
}

// netName(fd) -> [family, address, port] of the socket's own end.
Napi::Value Name(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  sockaddr_storage addr{};
  socklen_t length = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    ThrowErrno(env, errno, "getsockname");
    return env.Undefined();
  }
  Napi::Array out = Napi::Array::New(env, 3);
  SetAddress(env, out, 0, addr, length);
  return out;
}

// netAccept(fd, timeoutMs) -> [accepted descriptor, family, address, port]
// (the client's address, as netName gives one), or -1 if none came within
// timeoutMs (0: do not wait; < 0: forever).
Napi::Value Accept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  double timeout = info[1].As<Napi::Number>().DoubleValue();
  double deadline = timeout < 0 ? -1 : NowMs() + timeout;
  sockaddr_storage addr;
  for (;;) {
    socklen_t length = sizeof addr;
#if defined(__linux__)
    int conn = accept4(fd, reinterpret_cast<sockaddr*>(&addr), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
    int conn = accept(fd, reinterpret_cast<sockaddr*>(&addr), &length);
    if (conn >= 0 && !NonBlocking(conn)) {
      int err = errno;
      close(conn);
      ThrowErrno(env, err, "fcntl");
      return env.Undefined();
    }
#endif
    if (conn >= 0) {
      NoDelay(conn, addr.ss_family);
      Napi::Array out = Napi::Array::New(env, 4);
      out.Set(0u, Napi::Number::New(env, conn));
      SetAddress(env, out, 1, addr, length);
      return out;
    }
    int err = errno;
    // A client that gave up while queued is not this listener's failure.
    if (err == EINTR || err == ECONNABORTED) continue;
    if (err != EAGAIN && err != EWOULDBLOCK) {
      ThrowErrno(env, err, "accept");
      return env.Undefined();
    }
    if (timeout == 0) return Napi::Number::New(env, -1);
    int r = WaitFor(fd, POLLIN, deadline < 0 ? -1 : std::max(0.0, deadline - NowMs()));
    if (r < 0) {
      ThrowErrno(env, -r, "poll");
      return env.Undefined();
    }
    if (r == 0) return Napi::Number::New(env, -1);
  }
}

// netWrite(fd, buffer, offset = 0, wait = true) -> bytes written from
// offset: all of them, waiting in poll() while the socket buffer is full; or,
// with wait false, what the socket takes now (a server's reply to a client
// that does not read must not stall its other clients: lib/manager/server.ts
// keeps the rest). For the handshake's few short messages, which go in
// Python's framing, not a Connection's, and a manager server's replies.
Napi::Value Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  Napi::Buffer<uint8_t> data = info[1].As<Napi::Buffer<uint8_t>>();
  size_t start = info.Length() > 2 ? static_cast<size_t>(info[2].As<Napi::Number>().Int64Value()) : 0;
  bool wait = info.Length() <= 3 || info[3].ToBoolean();
#if defined(MSG_NOSIGNAL)
  const int flags = MSG_NOSIGNAL | (wait ? 0 : MSG_DONTWAIT);
#else
  const int flags = wait ? 0 : MSG_DONTWAIT;
#endif
  size_t done = start;
  while (done < data.Length()) {
    ssize_t n = send(fd, data.Data() + done, data.Length() - done, flags);
    if (n >= 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      if (!wait) break;
      int r = WaitFor(fd, POLLOUT, -1);
      if (r >= 0) continue;
      err = -r;
    }
    ThrowErrno(env, err, "send", "fd " + std::to_string(fd));
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(done - start));
}

}  // namespace

void InitListener(Napi::Env env, Napi::Object exports) {
  exports.Set("netListen", Napi::Function::New(env, Listen, "netListen"));
  exports.Set("netConnect", Napi::Function::New(env, Connect, "netConnect"));
  exports.Set("netConnected", Napi::Function::New(env, Connected, "netConnected"));
  exports.Set("netAccept", Napi::Function::New(env, Accept, "netAccept"));
  exports.Set("netName", Napi::Function::New(env, Name, "netName"));
  exports.Set("netWrite", Napi::Function::New(env, Write, "netWrite"));
}

}  // namespace nodemp
