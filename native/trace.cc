// Where the time of one process start goes (issue #16): the fork path stamps
// CLOCK_MONOTONIC (the same clock in every process) into a buffer the
// benchmark maps shared, so the child's stamps reach the parent. Off (no
// buffer) it costs a null check per stamp. The phases are listed once, here,
// and exported to JS as `native.trace` (lib/start/trace.ts).
#include <napi.h>
#include <cstdint>
#include <ctime>

#include "errors.h"
#include "internal.h"

namespace nodemp {

static uint64_t* stamps = nullptr;

void TraceStamp(TracePhase phase) {
  if (stamps == nullptr) return;
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  stamps[phase] = static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// traceStart(buffer | null): stamps go into `buffer` (kTracePhases 64-bit
// words from its start), or nowhere.
static Napi::Value TraceStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info[0].IsNull() || info[0].IsUndefined()) {
    stamps = nullptr;
    return env.Undefined();
  }
  if (!info[0].IsArrayBuffer() || info[0].As<Napi::ArrayBuffer>().ByteLength() < kTracePhases * sizeof(uint64_t)) {
    ThrowTypeError(env, "traceStart: expected an ArrayBuffer of at least " + std::to_string(kTracePhases * 8) + " bytes, or null");
    return env.Undefined();
  }
  stamps = static_cast<uint64_t*>(info[0].As<Napi::ArrayBuffer>().Data());
  return env.Undefined();
}

static Napi::Value Stamp(const Napi::CallbackInfo& info) {
  uint32_t phase = info[0].As<Napi::Number>().Uint32Value();
  if (phase < kTracePhases) TraceStamp(static_cast<TracePhase>(phase));
  return info.Env().Undefined();
}

void InitTrace(Napi::Env env, Napi::Object exports) {
  exports.Set("traceStart", Napi::Function::New(env, TraceStart, "traceStart"));
  exports.Set("traceStamp", Napi::Function::New(env, Stamp, "traceStamp"));
  Napi::Object phases = Napi::Object::New(env);
#define NODEMP_PHASE(name) phases.Set(#name, Napi::Number::New(env, name));
  NODEMP_PHASE(kTraceStart)
  NODEMP_PHASE(kTraceMaps)
  NODEMP_PHASE(kTracePark)
  NODEMP_PHASE(kTraceFork)
  NODEMP_PHASE(kTraceParentBack)
  NODEMP_PHASE(kTraceChildFirst)
  NODEMP_PHASE(kTraceChildFixed)
  NODEMP_PHASE(kTraceChildJs)
  NODEMP_PHASE(kTraceDropped)
  NODEMP_PHASE(kTraceDetach)
  NODEMP_PHASE(kTraceRepaired)
  NODEMP_PHASE(kTraceLaunch)
  NODEMP_PHASE(kTraceTargetDone)
  NODEMP_PHASE(kTraceExit)
  NODEMP_PHASE(kTracePhases)
#undef NODEMP_PHASE
  exports.Set("trace", phases);
}

}  // namespace nodemp
