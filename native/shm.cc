// Shared mappings as ArrayBuffers. Anonymous MAP_SHARED memory has no name, so
// nothing can be left behind in /dev/shm when a process is killed, and fork()
// hands the same pages to the child.
#include <napi.h>
#include <sys/mman.h>
#include <cerrno>
#include <cstdint>

#include "errors.h"

namespace nodemp {

static void Unmap(Napi::Env, void* data, size_t* length) {
  munmap(data, *length);
  delete length;
}

static Napi::Value MapShared(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) {
    ThrowTypeError(env, "mapShared(size): size must be a number");
    return env.Undefined();
  }
  double requested = info[0].As<Napi::Number>().DoubleValue();
  if (!(requested >= 1) || requested > static_cast<double>(SIZE_MAX / 2) || requested != static_cast<double>(static_cast<uint64_t>(requested))) {
    ThrowRangeError(env, "mapShared(size): size must be a positive integer, got " + info[0].ToString().Utf8Value());
    return env.Undefined();
  }
  size_t size = static_cast<size_t>(requested);
  void* addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (addr == MAP_FAILED) {
    ThrowErrno(env, errno, "mmap", std::to_string(size) + " bytes");
    return env.Undefined();
  }
  return Napi::ArrayBuffer::New(env, addr, size, Unmap, new size_t(size));
}

void InitShm(Napi::Env env, Napi::Object exports) {
  exports.Set("mapShared", Napi::Function::New(env, MapShared, "mapShared"));
}

}  // namespace nodemp
