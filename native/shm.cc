// Shared mappings as ArrayBuffers. mapShared's memory has no name, so nothing
// can be left behind in /dev/shm when a process is killed, and fork() hands
// the same pages to the child. It is a memfd (an unlinked POSIX segment on
// macOS) whose descriptor stays open as long as the mapping: a child started
// by spawn or forkserver, which inherits no memory, is handed the descriptor
// instead (sharedFd) and maps it (mapFd).
//
// Named POSIX segments (SharedMemory) are the exception: their names are
// handed to the tracker (tracker.cc), which removes them once the creator and
// all its forked descendants are gone.
#include <napi.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/random.h>
#include <sys/syscall.h>
#endif
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <atomic>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>
#include <unordered_map>

#include "errors.h"

namespace nodemp {

int TrackerRegister(const std::string& name);
void TrackerUnregister(const std::string& name);

// Random bytes for a segment name. Should the kernel have none to give, a
// mix of pid, clock and a counter: O_EXCL and WriteSegment's retry make any
// name that is unique enough do.
static void RandomBytes(uint8_t* out, size_t n) {
#if defined(__APPLE__)
  arc4random_buf(out, n);
#else
  if (getrandom(out, n, GRND_NONBLOCK) == static_cast<ssize_t>(n)) return;
  static std::atomic<uint64_t> counter{0};
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t x = static_cast<uint64_t>(getpid()) << 40 ^ static_cast<uint64_t>(ts.tv_nsec) ^ (counter++ << 20);
  for (size_t i = 0; i < n; i++) {
    x = (x ^ (x >> 31)) * 0x9e3779b97f4a7c15ull;
    out[i] = static_cast<uint8_t>(x >> 56);
  }
#endif
}

// `prefix` and `bytes` random bytes in hex: a segment name that O_EXCL checks.
static std::string RandomName(const char* prefix, size_t bytes) {
  static const char hex[] = "0123456789abcdef";
  uint8_t random[16];
  RandomBytes(random, bytes);
  std::string name = prefix;
  for (size_t i = 0; i < bytes; i++) {
    name += hex[random[i] >> 4];
    name += hex[random[i] & 15];
  }
  return name;
}

// Creates segment `name` (leading '/' included in `path`) of `size` bytes and
// maps it. With `track` the tracker hears of the name before it exists, so
// that no SIGKILL can leave the segment unguarded (a name it is told of that
// never comes to exist costs it nothing); whatever fails, the name is removed
// again. With `reserve` its pages are taken at once (Linux), so that a full
// /dev/shm is ENOSPC here rather than a SIGBUS at the first write. Returns the
// mapping, or MAP_FAILED with the errno in *err and the call in *failed.
static void* CreateMapped(const std::string& name, size_t size, bool track, bool reserve, int* err, const char** failed) {
  std::string path = "/" + name;
  *err = track ? TrackerRegister(name) : 0;
  if (*err != 0) {
    *failed = "write";
    return MAP_FAILED;
  }
  int fd = shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    *err = errno;
    *failed = "shm_open";
    // Not ours: the tracker must not remove another's segment of that name.
    if (track) TrackerUnregister(name);
    return MAP_FAILED;
  }
  void* addr = MAP_FAILED;
#if defined(__linux__)
  if (reserve) {
    *err = posix_fallocate(fd, 0, static_cast<off_t>(size));
    if (*err != 0) *failed = "posix_fallocate";
  }
#endif
  if (*err == 0 && ftruncate(fd, static_cast<off_t>(size)) != 0) {
    *err = errno;
    *failed = "ftruncate";
  }
  if (*err == 0) {
    addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (addr == MAP_FAILED) {
      *err = errno;
      *failed = "mmap";
    }
  }
  close(fd);
  if (addr == MAP_FAILED) {
    shm_unlink(path.c_str());
    if (track) TrackerUnregister(name);
  }
  return addr;
}

int WriteSegment(const uint8_t* data, size_t length, std::string* name) {
  for (int attempt = 0; attempt < 8; attempt++) {
    // As lib/shared-memory.ts names a generated segment.
    std::string candidate = RandomName("nodemp_", 6);
    size_t size = length > 0 ? length : 1;
    int err;
    const char* failed;
    // Reserved: a SIGBUS in the copy would kill the process from the feeder thread.
    void* addr = CreateMapped(candidate, size, true, true, &err, &failed);
    if (addr == MAP_FAILED) {
      if (err == EEXIST) continue;
      return err;
    }
    std::memcpy(addr, data, length);
    munmap(addr, size);
    *name = candidate;
    return 0;
  }
  return EEXIST;
}

// ---- mappings with a descriptor (mapShared, mapFd) ---------------------------

// The descriptor behind each such mapping, by address, open until the
// mapping's ArrayBuffer is finalized. A forked child inherits the descriptors
// with the memory, so the table stays true in it. Worker threads may map
// concurrently; Process.start() refuses to fork while workers run, so no
// thread holds the mutex across a fork.
// A mapShared() made without one records why, as -errno in `fd`, for
// sharedFd()'s error.
struct Backing {
  int fd;
  size_t size;
};
static std::mutex backings_mu;
static auto* backings = new std::unordered_map<void*, Backing>;

// The entry goes before the memory: once unmapped, the address may be mapped
// again, by another thread, and registered under the same key.
static void UnmapBacked(Napi::Env, void* data, size_t* length) {
  {
    std::lock_guard<std::mutex> lock(backings_mu);
    auto it = backings->find(data);
    if (it != backings->end()) {
      if (it->second.fd >= 0) close(it->second.fd);
      backings->erase(it);
    }
  }
  munmap(data, *length);
  delete length;
}

static Napi::ArrayBuffer Backed(Napi::Env env, void* addr, size_t size, int fd) {
  {
    std::lock_guard<std::mutex> lock(backings_mu);
    (*backings)[addr] = Backing{fd, size};
  }
  return Napi::ArrayBuffer::New(env, addr, size, UnmapBacked, new size_t(size));
}

// A new descriptor for `size` bytes of zeroed memory that nothing names, or
// -1 with errno set and the failing call in *failed. Linux: a memfd, by
// system call, so that the prebuilt binary does not need glibc 2.27's
// wrapper. macOS: a POSIX segment under a random name, removed at once;
// shm_open sets close-on-exec itself.
static int AnonymousFd(size_t size, const char** failed) {
#if defined(__linux__)
  *failed = "memfd_create";
  int fd = static_cast<int>(syscall(SYS_memfd_create, "nodemp", 1u /* MFD_CLOEXEC */));
  if (fd < 0) return -1;
#else
  *failed = "shm_open";
  int fd = -1;
  for (int attempt = 0; attempt < 8 && fd < 0; attempt++) {
    // Within macOS's 31 bytes.
    std::string name = RandomName("/nodemp_m", 8);
    fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd >= 0) shm_unlink(name.c_str());
    else if (errno != EEXIST) return -1;
  }
  if (fd < 0) return -1;
#endif
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int err = errno;
    close(fd);
    errno = err;
    *failed = "ftruncate";
    return -1;
  }
  return fd;
}

static bool SizeArg(const Napi::CallbackInfo& info, size_t i, const char* fn, size_t* size) {
  Napi::Env env = info.Env();
  if (!info[i].IsNumber()) {
    ThrowTypeError(env, std::string(fn) + ": size must be a number");
    return false;
  }
  double requested = info[i].As<Napi::Number>().DoubleValue();
  if (!(requested >= 1) || requested > static_cast<double>(SIZE_MAX / 2) || requested != static_cast<double>(static_cast<uint64_t>(requested))) {
    ThrowRangeError(env, std::string(fn) + ": size must be a positive integer, got " + info[i].ToString().Utf8Value());
    return false;
  }
  *size = static_cast<size_t>(requested);
  return true;
}

static bool FdArg(const Napi::CallbackInfo& info, size_t i, const char* fn, int* fd) {
  if (!info[i].IsNumber()) {
    ThrowTypeError(info.Env(), std::string(fn) + ": fd must be a number");
    return false;
  }
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= 0 && v <= INT_MAX) || v != std::floor(v)) {
    ThrowRangeError(info.Env(), std::string(fn) + ": fd must be a non-negative integer, got " + info[i].ToString().Utf8Value());
    return false;
  }
  *fd = static_cast<int>(v);
  return true;
}

// Descriptors from this one up are left to the rest of the program: a fork-
// only program that keeps thousands of shared arrays must not find its
// sockets and files refused for want of descriptors that it never asked for.
static int FdCeiling() {
  static int ceiling = [] {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > INT_MAX) return INT_MAX;
    return static_cast<int>(rl.rlim_cur / 4 * 3);
  }();
  return ceiling;
}

// mapShared(size) -> ArrayBuffer over `size` zeroed bytes shared with every
// process that is forked from this one or maps its descriptor. Where no
// descriptor can be had (no memfd: ENOSYS, on Linux before 3.17 or in a
// sandbox that forbids it; or three quarters of the descriptor table in use)
// the memory is plain anonymous shared memory, which forks share as before
// but sharedFd() cannot hand out.
static Napi::Value MapShared(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t size;
  if (!SizeArg(info, 0, "mapShared(size)", &size)) return env.Undefined();
  const char* failed;
  int fd = AnonymousFd(size, &failed);
  int without = 0;
  if (fd < 0 && (errno == ENOSYS || errno == EMFILE || errno == ENFILE)) {
    without = errno;
  } else if (fd < 0) {
    ThrowErrno(env, errno, failed, std::to_string(size) + " bytes");
    return env.Undefined();
  } else if (fd >= FdCeiling()) {
    close(fd);
    fd = -1;
    without = EMFILE;
  }
  void* addr = fd >= 0 ? mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                       : mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (addr == MAP_FAILED) {
    int err = errno;
    if (fd >= 0) close(fd);
    ThrowErrno(env, err, "mmap", std::to_string(size) + " bytes");
    return env.Undefined();
  }
  return Backed(env, addr, size, fd >= 0 ? fd : -without);
}

// sharedFd(buffer) -> the descriptor behind a mapShared or mapFd buffer,
// still owned by the buffer: valid while the buffer is alive.
static Napi::Value SharedFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer()) {
    ThrowTypeError(env, "sharedFd(buffer): buffer must be an ArrayBuffer");
    return env.Undefined();
  }
  Napi::ArrayBuffer buffer = info[0].As<Napi::ArrayBuffer>();
  int fd = 0;
  bool found = false;
  if (!buffer.IsDetached()) {
    std::lock_guard<std::mutex> lock(backings_mu);
    auto it = backings->find(buffer.Data());
    found = it != backings->end();
    if (found) fd = it->second.fd;
  }
  if (fd >= 0 && found) return Napi::Number::New(env, fd);
  std::string why;
  if (buffer.IsDetached()) why = "the buffer is detached";
  else if (!found) why = "the buffer was not made by mapShared() or mapFd()";
  else if (fd == -ENOSYS) why = "its memory has no descriptor: this system has no memfd_create() (ENOSYS), so it is anonymous memory, which only forked children share";
  else why = "its memory has no descriptor: when it was made, this process was using three quarters of its descriptors (RLIMIT_NOFILE), which nodemp leaves to the program, so it is anonymous memory, which only forked children share";
  ThrowTypeError(env, "sharedFd(buffer): " + why);
  return env.Undefined();
}

// mapFd(fd, size) -> ArrayBuffer over the first `size` bytes of the memory
// behind `fd` (a descriptor another process's sharedFd() gave), shared with
// it. On success the buffer owns `fd`: sharedFd() hands it out again, and it
// is closed with the mapping. On failure `fd` is left open, the caller's.
static Napi::Value MapFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  size_t size;
  if (!FdArg(info, 0, "mapFd(fd, size)", &fd) || !SizeArg(info, 1, "mapFd(fd, size)", &size)) return env.Undefined();
  {
    // Two owners would close it twice, the second time whatever then has the number.
    std::lock_guard<std::mutex> lock(backings_mu);
    for (const auto& entry : *backings) {
      if (entry.second.fd == fd) {
        ThrowTypeError(env, "mapFd(fd, size): fd " + std::to_string(fd) + " already belongs to a mapping of this process; map a dup of it");
        return env.Undefined();
      }
    }
  }
  std::string detail = "fd " + std::to_string(fd);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ThrowErrno(env, errno, "fstat", detail);
    return env.Undefined();
  }
  if (st.st_size < 0 || static_cast<uint64_t>(st.st_size) < size) {
    ThrowErrno(env, EINVAL, "mmap", detail + " holds " + std::to_string(st.st_size) + " bytes, fewer than the " + std::to_string(size) + " to map");
    return env.Undefined();
  }
  void* addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (addr == MAP_FAILED) {
    ThrowErrno(env, errno, "mmap", detail);
    return env.Undefined();
  }
  // Received through an exec, it lost close-on-exec; a program this process
  // runs must not hold the memory.
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  return Backed(env, addr, size, fd);
}

// dupFd(fd) -> a new descriptor (close-on-exec) for what `fd` refers to.
static Napi::Value DupFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!FdArg(info, 0, "dupFd(fd)", &fd)) return env.Undefined();
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) {
    ThrowErrno(env, errno, "fcntl", "fd " + std::to_string(fd));
    return env.Undefined();
  }
  return Napi::Number::New(env, copy);
}

// A named segment's mapping. close() unmaps it before its ArrayBuffer is
// collected, and the finalizer (which Node runs after the buffer is detached
// or collected) must then leave the address alone: a later mapping may have
// taken it. Mappings are found by address only while they are mapped, and an
// address is mapped at most once at a time.
struct Mapping {
  void* addr;
  size_t size;
  bool mapped;
};

// Worker threads may open and close segments concurrently. Process.start()
// refuses to fork while workers run, so no thread holds this across a fork.
static std::mutex mappings_mu;
static auto* mappings = new std::unordered_map<void*, Mapping*>;

static void UnmapNamed(Napi::Env, void*, Mapping* m) {
  {
    std::lock_guard<std::mutex> lock(mappings_mu);
    if (m->mapped) {
      mappings->erase(m->addr);
      munmap(m->addr, m->size);
    }
  }
  delete m;
}

// The name part of the internal API; lib/shared-memory.ts explains the rules
// to users. Newlines and NUL would break the tracker's line protocol.
static bool NameArg(const Napi::CallbackInfo& info, const char* fn, std::string* name) {
  if (info[0].IsString()) {
    *name = info[0].As<Napi::String>().Utf8Value();
    if (!name->empty() && name->find_first_of(std::string("/\n\0", 3)) == std::string::npos) return true;
  }
  ThrowTypeError(info.Env(), std::string(fn) + "(name): name must be a non-empty string without '/', newline or NUL");
  return false;
}

// shmOpen(name, create, size, track) -> ArrayBuffer over the whole segment.
// create: a new segment of `size` bytes (EEXIST if the name is taken), handed
// to the tracker when `track`; otherwise attach, with the segment's own size.
static Napi::Value ShmOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  if (!NameArg(info, "shmOpen", &name)) return env.Undefined();
  bool create = info[1].ToBoolean();
  bool track = info[3].ToBoolean();
  size_t size = 0;
  void* addr = MAP_FAILED;
  int err = 0;
  const char* failed = nullptr;
  std::string detail = "'" + name + "'";
  if (create) {
    double requested = info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : 0;
    if (!(requested >= 1) || requested > static_cast<double>(SIZE_MAX / 2) ||
        requested != static_cast<double>(static_cast<uint64_t>(requested))) {
      ThrowRangeError(env, "shmOpen: size must be a positive integer, got " + info[2].ToString().Utf8Value());
      return env.Undefined();
    }
    size = static_cast<size_t>(requested);
    addr = CreateMapped(name, size, track, false, &err, &failed);
    if (addr == MAP_FAILED && std::strcmp(failed, "write") == 0) detail = "handing '" + name + "' to the shared-memory tracker";
  } else {
    int fd = shm_open(("/" + name).c_str(), O_RDWR, 0600);
    struct stat st;
    if (fd < 0) {
      failed = "shm_open";
    } else if (fstat(fd, &st) != 0) {
      failed = "fstat";
    } else if (st.st_size <= 0) {
      // mmap() refuses length 0; say why.
      failed = "mmap";
      err = EINVAL;
      detail += " is empty";
    } else {
      size = static_cast<size_t>(st.st_size);
      addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (addr == MAP_FAILED) failed = "mmap";
    }
    if (failed != nullptr && err == 0) err = errno;
    if (fd >= 0) close(fd);
  }
  if (addr == MAP_FAILED) {
    ThrowErrno(env, err, failed, detail);
    return env.Undefined();
  }
  Mapping* m = new Mapping{addr, size, true};
  {
    std::lock_guard<std::mutex> lock(mappings_mu);
    (*mappings)[addr] = m;
  }
  return Napi::ArrayBuffer::New(env, addr, size, UnmapNamed, m);
}

// shmClose(buffer): detaches the buffer (every view of it now has length 0)
// and unmaps this process's view of the segment. A buffer already closed, or
// not from shmOpen, is left alone.
static Napi::Value ShmClose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer()) {
    ThrowTypeError(env, "shmClose(buffer): buffer must be an ArrayBuffer");
    return env.Undefined();
  }
  Napi::ArrayBuffer buffer = info[0].As<Napi::ArrayBuffer>();
  Mapping* m = nullptr;
  if (!buffer.IsDetached()) {
    std::lock_guard<std::mutex> lock(mappings_mu);
    auto it = mappings->find(buffer.Data());
    if (it != mappings->end()) m = it->second;
  }
  if (m == nullptr) return env.Undefined();
  buffer.Detach();
  if (env.IsExceptionPending()) return env.Undefined();
  std::lock_guard<std::mutex> lock(mappings_mu);
  if (m->mapped) {
    mappings->erase(m->addr);
    munmap(m->addr, m->size);
    m->mapped = false;
  }
  return env.Undefined();
}

// shmUnlink(name): removes the name (ENOENT if there is none) and tells the
// tracker. Mappings stay valid until closed.
static Napi::Value ShmUnlink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  if (!NameArg(info, "shmUnlink", &name)) return env.Undefined();
  if (shm_unlink(("/" + name).c_str()) != 0) {
    ThrowErrno(env, errno, "shm_unlink", "'" + name + "'");
    return env.Undefined();
  }
  TrackerUnregister(name);
  return env.Undefined();
}

void InitShm(Napi::Env env, Napi::Object exports) {
  exports.Set("mapShared", Napi::Function::New(env, MapShared, "mapShared"));
  exports.Set("sharedFd", Napi::Function::New(env, SharedFd, "sharedFd"));
  exports.Set("mapFd", Napi::Function::New(env, MapFd, "mapFd"));
  exports.Set("dupFd", Napi::Function::New(env, DupFd, "dupFd"));
  exports.Set("shmOpen", Napi::Function::New(env, ShmOpen, "shmOpen"));
  exports.Set("shmClose", Napi::Function::New(env, ShmClose, "shmClose"));
  exports.Set("shmUnlink", Napi::Function::New(env, ShmUnlink, "shmUnlink"));
}

}  // namespace nodemp
