{
  "targets": [
    {
      "target_name": "nodemp",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/fork.cc",
        "native/platform.cc",
        "native/reap.cc",
        "native/shm.cc",
        "native/futex.cc",
        "native/exec.cc",
        "native/layout.cc",
        "native/waiter.cc",
        "native/tracker.cc",
        "native/conn.cc",
        "native/listener.cc",
        "native/ring.cc",
        "native/start.cc",
        "native/sched.cc",
        "native/trace.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-fno-exceptions", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [
        ["OS=='linux'", {
          "ldflags": ["-Wl,-z,nodelete", "-Wl,-z,now"]
        }]
      ],
      "xcode_settings": {
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "GCC_ENABLE_CPP_EXCEPTIONS": "NO",
        "MACOSX_DEPLOYMENT_TARGET": "11.0"
      }
    }
  ]
}
