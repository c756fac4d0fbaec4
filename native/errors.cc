#include "errors.h"

#include <uv.h>
#include <cstring>

namespace nodemp {

static Napi::FunctionReference error_factory;

// The factory belongs to the environment that set it: let go of it while that
// environment still exists, or the next one's SetErrorFactory would delete a
// reference of a freed environment (heap corruption, seen when a second
// worker thread loaded the addon).
void ErrorsEnvCleanup(napi_env env) {
  if (!error_factory.IsEmpty() && static_cast<napi_env>(error_factory.Env()) == env) error_factory.Reset();
}

// libuv names only the errors it maps; ECHILD or EOWNERDEAD need our own list.
static const char* ErrnoName(int err) {
  static const struct {
    int value;
    const char* name;
  } names[] = {
    {EPERM, "EPERM"},
    {ENOENT, "ENOENT"},
    {ESRCH, "ESRCH"},
    {EINTR, "EINTR"},
    {EIO, "EIO"},
    {ENXIO, "ENXIO"},
    {E2BIG, "E2BIG"},
    {ENOEXEC, "ENOEXEC"},
    {EBADF, "EBADF"},
    {ECHILD, "ECHILD"},
    {EAGAIN, "EAGAIN"},
    {ENOMEM, "ENOMEM"},
    {EACCES, "EACCES"},
    {EFAULT, "EFAULT"},
    {EBUSY, "EBUSY"},
    {EEXIST, "EEXIST"},
    {EXDEV, "EXDEV"},
    {ENODEV, "ENODEV"},
    {ENOTDIR, "ENOTDIR"},
    {EISDIR, "EISDIR"},
    {EINVAL, "EINVAL"},
    {ENFILE, "ENFILE"},
    {EMFILE, "EMFILE"},
    {ENOTTY, "ENOTTY"},
    {ETXTBSY, "ETXTBSY"},
    {EFBIG, "EFBIG"},
    {ENOSPC, "ENOSPC"},
    {ESPIPE, "ESPIPE"},
    {EROFS, "EROFS"},
    {EMLINK, "EMLINK"},
    {EPIPE, "EPIPE"},
    {EDOM, "EDOM"},
    {ERANGE, "ERANGE"},
    {EDEADLK, "EDEADLK"},
    {ENAMETOOLONG, "ENAMETOOLONG"},
    {ENOLCK, "ENOLCK"},
    {ENOSYS, "ENOSYS"},
    {ENOTEMPTY, "ENOTEMPTY"},
    {ELOOP, "ELOOP"},
    {EOVERFLOW, "EOVERFLOW"},
    {ENOTSUP, "ENOTSUP"},
    {ETIMEDOUT, "ETIMEDOUT"},
    {ECONNREFUSED, "ECONNREFUSED"},
    {ECONNRESET, "ECONNRESET"},
    {EADDRINUSE, "EADDRINUSE"},
    {EOWNERDEAD, "EOWNERDEAD"},
    {ENOTRECOVERABLE, "ENOTRECOVERABLE"},
  };
  for (const auto& n : names)
    if (n.value == err) return n.name;
  return uv_err_name(-err);
}

void SetErrorFactory(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) {
    ThrowTypeError(info.Env(), "setErrorFactory expects a function");
    return;
  }
  error_factory = Napi::Persistent(info[0].As<Napi::Function>());
  // A forked child inherits this reference with the heap; it stays valid there.
  error_factory.SuppressDestruct();
}

Napi::Value ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& detail) {
  const char* code = ErrnoName(err);
  std::string message = std::string(syscall) + " failed: " + std::strerror(err) + " (" + code + ")";
  if (!detail.empty()) message += ": " + detail;
  return CodeError(env, code, err, syscall, message);
}

Napi::Value CodeError(Napi::Env env, const char* code, int err, const char* syscall, const std::string& message) {
  if (error_factory.IsEmpty()) {
    Napi::Error e = Napi::Error::New(env, message);
    e.Set("code", Napi::String::New(env, code));
    return e.Value();
  }
  return error_factory.Call({Napi::String::New(env, code), Napi::Number::New(env, err), Napi::String::New(env, syscall),
                             Napi::String::New(env, message)});
}

void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& detail) {
  Napi::Value made = ErrnoError(env, err, syscall, detail);
  if (env.IsExceptionPending()) return;
  Napi::Error(env, made).ThrowAsJavaScriptException();
}

void ThrowCode(Napi::Env env, const char* code, int err, const char* syscall, const std::string& message) {
  Napi::Value made = CodeError(env, code, err, syscall, message);
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
