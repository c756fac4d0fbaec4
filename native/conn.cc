// Connections: the two ends of a Pipe (see lib/connection.ts).
#include <napi.h>

namespace nodemp {

void InitConn(Napi::Env env, Napi::Object exports) {}

}  // namespace nodemp
