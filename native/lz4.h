// LZ4 frame decoding with liblz4 (see lz4.cc for why not lz4-napi).
#pragma once
#include <napi.h>

namespace virtnbd {
void InitLz4(Napi::Env env, Napi::Object exports);
}
