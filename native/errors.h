// Errors that cross the native boundary. The JS side owns the error classes
// (lib/errors.ts) and hands native code a factory at load time, so a failing
// syscall surfaces as an OSError with `code` (errno name), `errno` and `syscall`.
#pragma once
#include <napi.h>
#include <string>

namespace nodemp {

void SetErrorFactory(const Napi::CallbackInfo& info);
// The OSError for `err` (a positive errno value) raised by `syscall`.
Napi::Value ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& detail = "");
// Throws an OSError for `err` (a positive errno value) raised by `syscall`.
void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& detail = "");
// The OSError with `code` for a failure that is no errno value (a resolver's
// EAI_* code, which `err` then holds, as Python's socket.gaierror does).
Napi::Value CodeError(Napi::Env env, const char* code, int err, const char* syscall, const std::string& message);
void ThrowCode(Napi::Env env, const char* code, int err, const char* syscall, const std::string& message);
void ThrowTypeError(Napi::Env env, const std::string& message);
void ThrowRangeError(Napi::Env env, const std::string& message);

}  // namespace nodemp
