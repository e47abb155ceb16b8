// NBD client binding over libnbd: one JS object == one libnbd handle.
// See native/README.md for the threading model.
#pragma once

#include <napi.h>

namespace virtnbd {

// Adds `NBD` (the class) and `nbdConstants` to the module's exports.
void InitNbd(Napi::Env env, Napi::Object exports);

}  // namespace virtnbd
