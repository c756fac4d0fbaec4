// Calls between the native mechanisms (not exported to JS).
#pragma once
#include <napi.h>
#include <uv.h>

namespace nodemp {

uv_loop_t* LoopOf(Napi::Env env);
// In a freshly forked child: forget the parent's children (their pidfds and
// poll handles belong to the parent's bookkeeping).
void ReapAfterFork();
// Calls `fn` from a libuv callback the way Node calls its own callbacks, so
// microtasks and process.nextTick callbacks run when it returns.
void CallFromLoop(Napi::Env env, const Napi::FunctionReference& fn, std::initializer_list<napi_value> args);

}  // namespace nodemp
