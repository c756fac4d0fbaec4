// Entry point: each mechanism lives in its own file and registers its functions here.
#include <napi.h>
#include <atomic>

#include "errors.h"
#include "internal.h"

namespace nodemp {
void InitFork(Napi::Env env, Napi::Object exports);
void InitReap(Napi::Env env, Napi::Object exports);
void InitShm(Napi::Env env, Napi::Object exports);
void InitFutex(Napi::Env env, Napi::Object exports);
void InitExec(Napi::Env env, Napi::Object exports);
void InitLayout(Napi::Env env, Napi::Object exports);
void InitWaiter(Napi::Env env, Napi::Object exports);
void InitTracker(Napi::Env env, Napi::Object exports);
void InitConn(Napi::Env env, Napi::Object exports);
void InitRing(Napi::Env env, Napi::Object exports);
void InitStart(Napi::Env env, Napi::Object exports);
void InitListener(Napi::Env env, Napi::Object exports);
void InitSched(Napi::Env env, Napi::Object exports);
void InitTrace(Napi::Env env, Napi::Object exports);
}  // namespace nodemp

// Threads of this process that have the addon loaded now. Its bookkeeping
// (children, watches, queue feeds) is per process, with one JS callback for
// each kind of event: lib/native.ts refuses a second thread rather than let
// it take those callbacks from the first.
static std::atomic<int> loaded_threads{0};
// Environments that ever loaded it. State one leaves behind is not all reset
// for the next (a second Worker after a first has ended corrupted the heap in
// testing): lib/native.ts refuses that case too.
static std::atomic<int> loaded_ever{0};

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  loaded_threads++;
  loaded_ever++;
  napi_add_env_cleanup_hook(
      env,
      [](void* arg) {
        napi_env e = static_cast<napi_env>(arg);
        nodemp::WaiterEnvCleanup(e);
        nodemp::RingEnvCleanup(e);
        nodemp::ConnEnvCleanup(e);
        nodemp::ReapEnvCleanup(e);
        nodemp::StartEnvCleanup(e);
        nodemp::CallFromLoopEnvCleanup(e);
        nodemp::ErrorsEnvCleanup(e);
        loaded_threads--;
      },
      env);
  exports.Set("loadedThreads", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    return Napi::Number::New(info.Env(), loaded_threads.load());
  }));
  exports.Set("loadedEver", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    return Napi::Number::New(info.Env(), loaded_ever.load());
  }));
  exports.Set("setErrorFactory", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
    nodemp::SetErrorFactory(info);
  }));
  nodemp::InitFork(env, exports);
  nodemp::InitReap(env, exports);
  nodemp::InitShm(env, exports);
  nodemp::InitFutex(env, exports);
  nodemp::InitExec(env, exports);
  nodemp::InitLayout(env, exports);
  nodemp::InitWaiter(env, exports);
  nodemp::InitTracker(env, exports);
  nodemp::InitConn(env, exports);
  nodemp::InitRing(env, exports);
  nodemp::InitStart(env, exports);
  nodemp::InitListener(env, exports);
  nodemp::InitSched(env, exports);
  nodemp::InitTrace(env, exports);
  return exports;
}

NODE_API_MODULE(nodemp, Init)
