#include "errors.h"

#include <uv.h>
#include <cstring>

namespace nodemp {

static Napi::FunctionReference error_factory;

void SetErrorFactory(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) {
    ThrowTypeError(info.Env(), "setErrorFactory expects a function");
    return;
  }
  error_factory = Napi::Persistent(info[0].As<Napi::Function>());
  // A forked child inherits this reference with the heap; it stays valid there.
  error_factory.SuppressDestruct();
}

void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& detail) {
  // libuv error codes are negated errno values on every Unix, so uv_err_name
  // gives the symbolic name without a table of our own.
  const char* code = uv_err_name(-err);
  std::string message = std::string(syscall) + " failed: " + std::strerror(err) + " (" + code + ")";
  if (!detail.empty()) message += ": " + detail;
  if (error_factory.IsEmpty()) {
    Napi::Error e = Napi::Error::New(env, message);
    e.Set("code", Napi::String::New(env, code));
    e.ThrowAsJavaScriptException();
    return;
  }
  Napi::Value made = error_factory.Call({Napi::String::New(env, code), Napi::Number::New(env, err),
                                        Napi::String::New(env, syscall), Napi::String::New(env, message)});
  if (env.IsExceptionPending()) return;
  Napi::Error(env, made).ThrowAsJavaScriptException();
}

void ThrowTypeError(Napi::Env env, const std::string& message) {
  Napi::TypeError::New(env, message).ThrowAsJavaScriptException();
}

void ThrowRangeError(Napi::Env env, const std::string& message) {
  Napi::RangeError::New(env, message).ThrowAsJavaScriptException();
}

}  // namespace nodemp
