// Advisory whole-file locks (flock) for the backup target directory.
#pragma once
#include <napi.h>

namespace virtnbd {
void InitFsLock(Napi::Env env, Napi::Object exports);
}
