// execve() for the `nodemp` launcher: replacing the launcher process (rather
// than spawning a child) keeps the pid, so signals, job control and the exit
// code reach the real program with nothing in between to forward or to orphan.
#include <napi.h>
#include <fcntl.h>
#include <unistd.h>
#include <cerrno>
#include <string>
#include <vector>

#include "errors.h"

namespace nodemp {

static bool ToStrings(Napi::Env env, Napi::Value v, const char* what, std::vector<std::string>* out) {
  if (!v.IsArray()) {
    ThrowTypeError(env, std::string("execve: ") + what + " must be an array of strings");
    return false;
  }
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value s = a.Get(i);
    if (!s.IsString()) {
      ThrowTypeError(env, std::string("execve: ") + what + "[" + std::to_string(i) + "] must be a string");
      return false;
    }
    out->push_back(s.As<Napi::String>().Utf8Value());
  }
  return true;
}

static Napi::Value Execve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) {
    ThrowTypeError(env, "execve(path, argv, env): path must be a string");
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::vector<std::string> argv, envv;
  if (!ToStrings(env, info[1], "argv", &argv) || !ToStrings(env, info[2], "env", &envv)) return env.Undefined();
  std::vector<char*> cargv, cenv;
  for (auto& s : argv) cargv.push_back(&s[0]);
  cargv.push_back(nullptr);
  for (auto& s : envv) cenv.push_back(&s[0]);
  cenv.push_back(nullptr);
  // Node marks stdio close-on-exec and non-blocking; the program we become
  // must get them as a shell would hand them over.
  for (int fd = 0; fd <= 2; fd++) {
    int fdflags = fcntl(fd, F_GETFD);
    if (fdflags >= 0) fcntl(fd, F_SETFD, fdflags & ~FD_CLOEXEC);
    int flflags = fcntl(fd, F_GETFL);
    if (flflags >= 0) fcntl(fd, F_SETFL, flflags & ~O_NONBLOCK);
  }
  execve(path.c_str(), cargv.data(), cenv.data());
  ThrowErrno(env, errno, "execve", path);
  return env.Undefined();
}

void InitExec(Napi::Env env, Napi::Object exports) {
  exports.Set("execve", Napi::Function::New(env, Execve, "execve"));
}

}  // namespace nodemp
