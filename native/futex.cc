// Cross-process wait/wake on a 32-bit word in shared memory. Atomics.wait and
// Atomics.notify only reach threads of one process, so sleeping and waking go
// through the kernel here; everything else stays in JS on the same word.
#include <napi.h>
#include <cerrno>
#include <cstdint>
#include <ctime>

#include "errors.h"
#include "internal.h"

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#elif defined(__APPLE__)
// Untested here (no macOS machine): os_sync_wait_on_address is public from
// macOS 14.4; older systems fall back to the private but stable __ulock calls
// that libc++ and Chromium also use.
#include <os/os_sync_wait_on_address.h>
extern "C" int __ulock_wait(uint32_t operation, void* addr, uint64_t value, uint32_t timeout_us);
extern "C" int __ulock_wake(uint32_t operation, void* addr, uint64_t wake_value);
#define NODEMP_UL_COMPARE_AND_WAIT_SHARED 3
#define NODEMP_ULF_WAKE_ALL 0x00000100
#endif

namespace nodemp {

static uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

int WaitOnWord(uint32_t* addr, uint32_t expected, int64_t timeout_ns) {
  SampleIfDue();
  uint64_t deadline = timeout_ns >= 0 ? MonotonicNs() + static_cast<uint64_t>(timeout_ns) : 0;
  for (;;) {
    int64_t left = -1;
    if (timeout_ns >= 0) {
      uint64_t now = MonotonicNs();
      if (now >= deadline) return kTimedOut;
      left = static_cast<int64_t>(deadline - now);
    }
#if defined(__linux__)
    timespec ts{static_cast<time_t>(left / 1000000000), static_cast<long>(left % 1000000000)};
    // No FUTEX_PRIVATE_FLAG: the word lives in MAP_SHARED memory and the
    // waker may be another process.
    long r = syscall(SYS_futex, addr, FUTEX_WAIT, expected, left >= 0 ? &ts : nullptr, nullptr, 0);
    if (r == 0) return kWoken;
    if (errno == EAGAIN) return kNotEqual;
    if (errno == ETIMEDOUT) return kTimedOut;
    if (errno == EINTR) continue;
    return -errno;
#elif defined(__APPLE__)
    int r;
    if (__builtin_available(macOS 14.4, *)) {
      r = left >= 0 ? os_sync_wait_on_address_with_timeout(addr, expected, 4, OS_SYNC_WAIT_ON_ADDRESS_SHARED,
                                                            OS_CLOCK_MACH_ABSOLUTE_TIME, static_cast<uint64_t>(left))
                    : os_sync_wait_on_address(addr, expected, 4, OS_SYNC_WAIT_ON_ADDRESS_SHARED);
    } else {
      uint32_t us = left >= 0 ? static_cast<uint32_t>(left / 1000 > UINT32_MAX ? UINT32_MAX : (left / 1000 ? left / 1000 : 1)) : 0;
      r = __ulock_wait(NODEMP_UL_COMPARE_AND_WAIT_SHARED, addr, expected, us);
    }
    if (r >= 0) return kWoken;
    if (errno == ETIMEDOUT) return kTimedOut;
    if (errno == EINTR || errno == EFAULT) {
      if (__atomic_load_n(addr, __ATOMIC_SEQ_CST) != expected) return kNotEqual;
      continue;
    }
    return -errno;
#else
#error "nodemp supports Linux and macOS"
#endif
  }
}

int WakeWord(uint32_t* addr, uint32_t count) {
#if defined(__linux__)
  long r = syscall(SYS_futex, addr, FUTEX_WAKE, count > INT32_MAX ? INT32_MAX : count, nullptr, nullptr, 0);
  return r < 0 ? -errno : static_cast<int>(r);
#elif defined(__APPLE__)
  // macOS reports no count of woken waiters; callers only use it as a hint.
  int r;
  if (__builtin_available(macOS 14.4, *)) {
    r = count == 1 ? os_sync_wake_by_address_any(addr, 4, OS_SYNC_WAKE_BY_ADDRESS_SHARED)
                   : os_sync_wake_by_address_all(addr, 4, OS_SYNC_WAKE_BY_ADDRESS_SHARED);
  } else {
    r = __ulock_wake(NODEMP_UL_COMPARE_AND_WAIT_SHARED | (count == 1 ? 0 : NODEMP_ULF_WAKE_ALL), addr, 0);
  }
  if (r < 0 && errno != ENOENT) return -errno;
  return 0;
#endif
}

uint32_t* WordAt(const Napi::CallbackInfo& info, const char* fn) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer() || !info[1].IsNumber()) {
    ThrowTypeError(env, std::string(fn) + "(buffer, byteOffset, ...): expected an ArrayBuffer and a byte offset");
    return nullptr;
  }
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  double off = info[1].As<Napi::Number>().DoubleValue();
  if (!(off >= 0) || off != static_cast<double>(static_cast<uint64_t>(off)) || static_cast<uint64_t>(off) % 4 != 0 ||
      static_cast<uint64_t>(off) + 4 > ab.ByteLength()) {
    ThrowRangeError(env, std::string(fn) + ": byteOffset must be a multiple of 4 inside the buffer (length " +
                             std::to_string(ab.ByteLength()) + "), got " + info[1].ToString().Utf8Value());
    return nullptr;
  }
  return reinterpret_cast<uint32_t*>(static_cast<uint8_t*>(ab.Data()) + static_cast<size_t>(off));
}

bool TimeoutArg(const Napi::CallbackInfo& info, size_t index, const char* fn, int64_t* timeout_ns) {
  *timeout_ns = -1;
  if (info.Length() <= index || info[index].IsUndefined() || info[index].IsNull()) return true;
  double ms = info[index].ToNumber().DoubleValue();
  if (!(ms >= 0)) {
    ThrowRangeError(info.Env(), std::string(fn) + ": timeout must be a non-negative number of milliseconds, got " +
                                    info[index].ToString().Utf8Value());
    return false;
  }
  if (ms < 9.2e12) *timeout_ns = static_cast<int64_t>(ms * 1e6);
  return true;
}

// futexWait(buffer, byteOffset, expected, timeoutMs?) -> 0 woken, 1 value differed, 2 timed out
static Napi::Value FutexWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t* word = WordAt(info, "futexWait");
  if (!word) return env.Undefined();
  if (!info[2].IsNumber()) {
    ThrowTypeError(env, "futexWait: expected value must be a number");
    return env.Undefined();
  }
  uint32_t expected = static_cast<uint32_t>(info[2].As<Napi::Number>().Int64Value());
  int64_t timeout_ns;
  if (!TimeoutArg(info, 3, "futexWait", &timeout_ns)) return env.Undefined();
  ForgetWake();
  int r = WaitOnWord(word, expected, timeout_ns);
  NoteCpu();
  if (r < 0) {
    ThrowErrno(env, -r, "futex_wait");
    return env.Undefined();
  }
  return Napi::Number::New(env, r);
}

// futexWake(buffer, byteOffset, count) -> number of waiters woken (0 on macOS)
static Napi::Value FutexWake(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t* word = WordAt(info, "futexWake");
  if (!word) return env.Undefined();
  double count = info.Length() > 2 ? info[2].ToNumber().DoubleValue() : 1;
  if (!(count >= 0)) {
    ThrowRangeError(env, "futexWake: count must be a non-negative number");
    return env.Undefined();
  }
  int r = WakeWord(word, count >= 4294967295.0 ? UINT32_MAX : static_cast<uint32_t>(count));
  if (r < 0) {
    ThrowErrno(env, -r, "futex_wake");
    return env.Undefined();
  }
  if (r > 0) NoteWokeSleeper();
  return Napi::Number::New(env, r);
}

void InitFutex(Napi::Env env, Napi::Object exports) {
  exports.Set("futexWait", Napi::Function::New(env, FutexWait, "futexWait"));
  exports.Set("futexWake", Napi::Function::New(env, FutexWake, "futexWake"));
}

}  // namespace nodemp
